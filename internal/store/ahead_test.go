package store

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// reopen closes s as a killed daemon leaves it (rows pending stay in the
// journal) and opens the registry at path again.
func reopen(t *testing.T, s *Store, path string) *Store {
	t.Helper()
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

// A row written ahead and never applied (the daemon died after its
// answer) is in the registry after the next Open, whole.
func TestARowWrittenAheadSurvivesADaemonThatDiedBeforeApplyingIt(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	want := sample("taken", "k1", 4)
	want.HostUIDBase = 2_162_688
	if _, err := s.InsertAhead(ctx, want); err != nil {
		t.Fatal(err)
	}
	// Get finds it before it is inserted: a sandbox whose first call was
	// answered is never missing from a look at the registry.
	if got, err := s.Get(ctx, "taken"); err != nil || got.Key != "k1" {
		t.Fatalf("Get of a row written ahead: %+v, %v", got, err)
	}
	var n int
	s.db.QueryRow(`SELECT count(*) FROM sandboxes`).Scan(&n)
	if n != 0 {
		t.Fatalf("before Apply SQLite holds %d rows", n)
	}
	s = reopen(t, s, path)
	got, err := s.Get(ctx, "taken")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replayed row (-want +got):\n%s", diff)
	}
	if fi, err := os.Stat(journalPath(path)); err != nil || fi.Size() != 0 {
		t.Errorf("the journal after its replay: %v, %v (want empty)", fi, err)
	}
}

// A row applied and then deleted is never brought back by a replay, even
// when another row was still pending in the journal; a dropped row is
// never inserted; a torn last line is skipped.
func TestAReplayInsertsOnlyWhatNoLineMarksDone(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	gone, err := s.InsertAhead(ctx, sample("gone", "k1", -1))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := s.InsertAhead(ctx, sample("kept", "k2", -1))
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := s.InsertAhead(ctx, sample("dropped", "k3", -1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.InsertAhead(ctx, sample("pending", "k4", -1)); err != nil {
		t.Fatal(err)
	}
	if err := gone.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := kept.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	dropped.Drop()
	f, err := os.OpenFile(journalPath(path), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":9,"row":{"ID":"torn","Ke`)
	f.Close()
	s = reopen(t, s, path)
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sb := range list {
		ids = append(ids, sb.ID)
	}
	if diff := cmp.Diff([]string{"kept", "pending"}, ids); diff != "" {
		t.Errorf("rows after the replay (-want +got):\n%s", diff)
	}
}

// Once the journal is long and no row is pending, it is emptied; a row
// written ahead keeps its ID unique: one that exists already fails at
// Apply.
func TestTheJournalEmptiesWhenNothingIsPending(t *testing.T) {
	defer func(at int64) { journalTruncateAt = at }(journalTruncateAt)
	journalTruncateAt = 1
	ctx := context.Background()
	s, path := openTemp(t)
	for _, id := range []string{"a", "b"} {
		p, err := s.InsertAhead(ctx, sample(id, "k"+id, -1))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(journalPath(path)); err != nil || fi.Size() != 0 {
			t.Fatalf("the journal after applying %s: %v, %v (want empty)", id, fi, err)
		}
	}
	p, err := s.InsertAhead(ctx, sample("a", "k-other", -1))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx); !errors.Is(err, ErrExists) {
		t.Errorf("applying a second row for a: %v, want ErrExists", err)
	}
}

// A row applied and deleted while nothing else was pending (so the short
// journal keeps its line, marked done) stays deleted after a reopen.
func TestADeletedRowStaysDeletedWhenTheJournalKeepsItsLine(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	p, err := s.InsertAhead(ctx, sample("gone", "k1", -1))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(journalPath(path)); err != nil || fi.Size() == 0 {
		t.Fatalf("the journal: %v, %v (want its lines kept)", fi, err)
	}
	s = reopen(t, s, path)
	if _, err := s.Get(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the deleted row after a reopen: %v, want ErrNotFound", err)
	}
}
