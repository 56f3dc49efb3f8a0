package store

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func sample(id, key string, slot int) Sandbox {
	now := time.Date(2026, 11, 21, 12, 0, 0, 123, time.UTC)
	return Sandbox{ID: id, Key: key, Status: "running", Image: "host", Runtime: "crun",
		Config: []byte(`{"env":{"A":"1"}}`), NetSlot: slot, CreatedAt: now, LastUsedAt: now, StatusChangedAt: now}
}

func TestRoundTripAndReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	want := sample("demo", "k1", 3)
	want.HostUIDBase = 1_065_536
	if err := s.Insert(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, want); !errors.Is(err, ErrExists) {
		t.Fatalf("second insert: got %v, want ErrExists", err)
	}
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Get(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
}

func TestStatusTouchDeleteSlots(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	for i, id := range []string{"b", "a", "c"} {
		if err := s.Insert(ctx, sample(id, "k"+id, i-1)); err != nil {
			t.Fatal(err)
		}
	}
	later := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	if err := s.SetStatus(ctx, "a", "failed", "boom", later); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStatus(ctx, "zz", "failed", "", later); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetStatus(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.TouchLastUsed(ctx, map[string]time.Time{"a": later, "gone": later}); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Get(ctx, "a")
	if a.Status != "failed" || a.StatusReason != "boom" || !a.LastUsedAt.Equal(later) || !a.StatusChangedAt.Equal(later) {
		t.Errorf("a = %+v", a)
	}
	list, _ := s.List(ctx)
	if len(list) != 3 || list[0].ID != "a" || list[2].ID != "c" {
		t.Errorf("List order: %v", list)
	}
	slots, _ := s.UsedSlots(ctx)
	if diff := cmp.Diff(map[int]bool{0: true, 1: true}, slots); diff != "" {
		t.Errorf("UsedSlots (-want +got):\n%s", diff)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := string(rune('a'+i%26)) + string(rune('a'+i/26))
			errs <- s.Insert(ctx, sample(id, "key"+id, -1))
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
