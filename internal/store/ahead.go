package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
)

// A row written ahead is one whose write must be durable before its
// caller answers, but whose SQLite insert need not be: a warm pool take
// answers its first call as soon as its row is durable, and SQLite's
// insert (about 1 ms of CPU on 2 CPUs, which the call shares) runs after
// the answer. The row goes first to the journal beside the database
// (<registry>.ahead), as one appended line, one write(2); Apply inserts
// it into SQLite and then marks the line done. Open replays the lines
// that are not done into SQLite before anything reads the registry, so a
// daemon killed between the two loses no row.
//
// Durability is the registry's own: SQLite runs in WAL mode without an
// fsync per commit, so a commit survives the daemon's death but not
// necessarily the host's; a line written to the journal is in the page
// cache likewise.
//
// A line is {"seq":N,"row":{...}} (a row) or {"done":N} (row N was
// inserted, or dropped: it must never be inserted at a replay, since its
// sandbox may have been deleted since). Once it is journalTruncateAt long
// and no row is pending, the file is emptied. A line that does not
// parse (a write torn by the host's crash) is skipped: it was never
// acknowledged.

// Pending is a row written ahead, not yet inserted (InsertAhead).
type Pending interface {
	// Apply inserts the row into SQLite and marks it done in the journal.
	Apply(ctx context.Context) error
	// Drop marks the row done without inserting it: its sandbox is gone.
	Drop()
}

type aheadLine struct {
	Seq  uint64   `json:"seq,omitempty"`
	Row  *Sandbox `json:"row,omitempty"`
	Done uint64   `json:"done,omitempty"`
}

// journal is the file of rows written ahead.
type journal struct {
	mu   sync.Mutex
	f    *os.File // O_APPEND
	size int64
	seq  uint64
	// pending are the rows appended and neither applied nor dropped, by
	// ID: Get finds them, so a sandbox whose first call was answered is
	// never missing from a look at the registry.
	pending map[string]Sandbox
	// broken is set when the file could not be brought back to a state
	// it can be replayed from; rows are then inserted at once.
	broken error
}

func journalPath(dbPath string) string { return dbPath + ".ahead" }

// journalTruncateAt is the size from which the journal is emptied once no
// row is pending: below it a done line is cheaper than a truncation (which
// frees the file's blocks for the next line to allocate again), and a
// replay reads the file at most this long plus what was pending.
var journalTruncateAt int64 = 256 << 10 // a var for the tests

// openJournal replays the journal at path into s (rows not marked done,
// unless their ID has a row already), then empties it for this run.
func openJournal(ctx context.Context, s *Store, path string) (*journal, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading the registry's journal: %w", err)
	}
	for _, row := range pendingRows(data) {
		if err := s.Insert(ctx, row); err != nil && !errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("replaying the registry's journal: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the registry's journal: %w", err)
	}
	return &journal{f: f, pending: map[string]Sandbox{}}, nil
}

// pendingRows are the rows of a journal's lines that no line marks done,
// in the order they were written.
func pendingRows(data []byte) []Sandbox {
	var rows []aheadLine
	done := map[uint64]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var l aheadLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch {
		case l.Done != 0:
			done[l.Done] = true
		case l.Seq != 0 && l.Row != nil:
			rows = append(rows, l)
		}
	}
	var out []Sandbox
	for _, l := range rows {
		if !done[l.Seq] {
			out = append(out, *l.Row)
		}
	}
	return out
}

// InsertAhead makes sb's row durable in the journal and returns it
// pending: Apply inserts it into SQLite. Until then nothing else may
// touch sb.ID's row (the caller holds the sandbox's lock). If the journal
// is unusable, the row is inserted at once and Apply does nothing.
func (s *Store) InsertAhead(ctx context.Context, sb Sandbox) (Pending, error) {
	seq, err := s.journal.appendRow(sb)
	if errors.Is(err, errJournalBroken) {
		if err := s.Insert(ctx, sb); err != nil {
			return nil, err
		}
		return applied{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recording sandbox %s: %w", sb.ID, err)
	}
	return &pendingRow{s: s, seq: seq, row: sb}, nil
}

var errJournalBroken = errors.New("the registry's journal is unusable")

// appendRow writes sb as the journal's next line.
func (j *journal) appendRow(sb Sandbox) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return 0, errJournalBroken
	}
	j.seq++
	if err := j.writeLocked(aheadLine{Seq: j.seq, Row: &sb}); err != nil {
		return 0, err
	}
	j.pending[sb.ID] = sb
	return j.seq, nil
}

// pendingRow is the row of id if it is pending.
func (j *journal) pendingRow(id string) (Sandbox, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	sb, ok := j.pending[id]
	return sb, ok
}

// finish marks row seq (of id) done: with a done line, or by emptying a
// long file if no row is pending any more.
func (j *journal) finish(seq uint64, id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.pending, id)
	if j.broken != nil {
		return
	}
	if len(j.pending) == 0 && j.size >= journalTruncateAt {
		if err := j.f.Truncate(0); err != nil {
			j.broken = err
		}
		j.size = 0
		return
	}
	if err := j.writeLocked(aheadLine{Done: seq}); err != nil && j.broken == nil {
		// The row stays pending in the file; a replay may insert it
		// again after its sandbox was deleted. Never append after it.
		j.broken = err
	}
}

// writeLocked appends one line. A write that fails is cut off again, so
// that the next line starts on a line of its own; if it cannot be, the
// journal is broken.
func (j *journal) writeLocked(l aheadLine) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	n, err := j.f.Write(data)
	if err == nil {
		j.size += int64(n)
		return nil
	}
	if n > 0 {
		if terr := j.f.Truncate(j.size); terr != nil {
			j.broken = terr
		}
	}
	return err
}

func (j *journal) close() error { return j.f.Close() }

// pendingRow is a row in the journal, not yet in SQLite.
type pendingRow struct {
	s    *Store
	seq  uint64
	row  Sandbox
	once sync.Once
}

func (p *pendingRow) Apply(ctx context.Context) error {
	if err := p.s.Insert(ctx, p.row); err != nil {
		return err
	}
	p.once.Do(func() { p.s.journal.finish(p.seq, p.row.ID) })
	return nil
}

func (p *pendingRow) Drop() { p.once.Do(func() { p.s.journal.finish(p.seq, p.row.ID) }) }

// applied is a row InsertAhead inserted at once.
type applied struct{}

func (applied) Apply(context.Context) error { return nil }
func (applied) Drop()                       {}
