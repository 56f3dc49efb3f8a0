package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/process"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// DefaultStateDir is where the agent keeps what must survive its restart
// (the sandbox sleeping and waking, a crash): session definitions, the
// sandbox-level environment, process records and logs. It is on the
// sandbox's own disk, root's and 0700: it holds environment values.
const DefaultStateDir = "/var/lib/sandboxd-agent"

// stateFile is the name of the state file in the state directory.
// startPrefix and startSuffix frame the names of start records (see
// saveStart); legacyFastFile is the unsynced companion older agents
// wrote at each start, still read once.
const (
	stateFile      = "state.json"
	startPrefix    = "state.start."
	startSuffix    = ".json"
	legacyFastFile = "state.fast.json"
)

// persisted is the state file's content. Processes do not survive a
// restart, only their records and logs.
type persisted struct {
	Version int `json:"version"`
	// Seq orders the writes: state files and start records alike.
	Seq        uint64               `json:"seq,omitempty"`
	SandboxEnv session.Layer        `json:"sandboxEnv,omitempty"`
	Sessions   []session.Definition `json:"sessions"`
	Processes  []process.Info       `json:"processes"`
}

// startRecord is a start record's content: one process as it started.
type startRecord struct {
	Seq     uint64       `json:"seq"`
	Process process.Info `json:"process"`
}

// stateStore writes the state file: synchronously for changes the caller
// must find again (sessions, environment), and in the background, at most
// every saveDelay, for process records. A process start writes its own
// record alone, before it answers (saveStart).
type stateStore struct {
	dir, path string
	snapshot  func() persisted

	mu  sync.Mutex // guards seq and starts; never held over an fsync
	seq uint64
	// starts are the start records written (or found at load) since the
	// state file last took them in, by sequence number.
	starts map[uint64]string

	saveMu sync.Mutex // serialises writes of the state file
	// enc holds the last write's encoding: every write holds the whole
	// state (every record), and a buffer of that size allocated at each
	// is zeroed and faulted in anew once the collector gave its pages
	// back (tens of microseconds a page in a PVM guest).
	enc   bytes.Buffer
	dirty chan struct{}
}

const saveDelay = 100 * time.Millisecond

func newStateStore(dir string, snapshot func() persisted) (*stateStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("securing state directory: %w", err)
	}
	return &stateStore{dir: dir, path: filepath.Join(dir, stateFile), snapshot: snapshot,
		starts: map[uint64]string{}, dirty: make(chan struct{}, 1)}, nil
}

// load reads the state file (or an older agent's later unsynced
// companion) and adds the start records written after it; a missing file
// is an empty state, and a start record or companion that cannot be read
// (torn by a host crash) is ignored. One listing of the directory finds
// them all (a fresh sandbox's agent pays no failed opens).
func (st *stateStore) load() (persisted, error) {
	entries, err := os.ReadDir(st.dir)
	if err != nil {
		return persisted{}, fmt.Errorf("listing %s: %w", st.dir, err)
	}
	var p persisted
	var later []startRecord
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, e := range entries {
		name := e.Name()
		switch seq, isStart := startSeq(name); {
		case name == stateFile:
			var perr error
			if p, perr = readState(st.path); perr != nil {
				err = perr
			}
		case isStart:
			st.starts[seq] = name
			st.seq = max(st.seq, seq)
			var rec startRecord
			data, rerr := os.ReadFile(filepath.Join(st.dir, name))
			if rerr == nil && json.Unmarshal(data, &rec) == nil && rec.Seq == seq && rec.Process.ID != "" {
				later = append(later, rec)
			}
		}
	}
	if slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.Name() == legacyFastFile }) {
		if fast, ferr := readState(filepath.Join(st.dir, legacyFastFile)); ferr == nil && fast.Seq > p.Seq {
			p, err = fast, nil
		}
		st.starts[0] = legacyFastFile // removed by the next save
	}
	st.seq = max(st.seq, p.Seq)
	slices.SortFunc(later, func(a, b startRecord) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, rec := range later {
		if rec.Seq <= p.Seq {
			continue // the state file holds it
		}
		if i := slices.IndexFunc(p.Processes, func(info process.Info) bool { return info.ID == rec.Process.ID }); i >= 0 {
			p.Processes = slices.Delete(p.Processes, i, i+1)
		}
		p.Processes = append(p.Processes, rec.Process)
	}
	if len(st.starts) > 0 {
		st.changed() // the next save removes them
	}
	return p, err
}

// startSeq is the sequence number a start record's file name carries.
func startSeq(name string) (uint64, bool) {
	digits, hasPrefix := strings.CutPrefix(name, startPrefix)
	digits, hasSuffix := strings.CutSuffix(digits, startSuffix)
	if !hasPrefix || !hasSuffix || digits == "" {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil && seq > 0
}

func readState(path string) (persisted, error) {
	var p persisted
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return persisted{}, fmt.Errorf("decoding %s: %w", path, err)
	}
	return p, nil
}

// save writes the current state now: a temporary file, synced, renamed
// over the old one; then the start records it took in are removed.
func (st *stateStore) save() error {
	st.saveMu.Lock()
	defer st.saveMu.Unlock()
	st.mu.Lock()
	p := st.snapshot()
	p.Version = 1
	st.seq++
	p.Seq = st.seq
	st.mu.Unlock()
	st.enc.Reset()
	if err := json.NewEncoder(&st.enc).Encode(p); err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	tmp := st.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	_, err = f.Write(st.enc.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, st.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing state: %w", err)
	}
	st.dropStarts(p.Seq)
	return nil
}

// dropStarts removes the start records a state file of sequence number
// seq holds.
func (st *stateStore) dropStarts(seq uint64) {
	st.mu.Lock()
	var names []string
	for s, name := range st.starts {
		if s < seq {
			names = append(names, name)
			delete(st.starts, s)
		}
	}
	st.mu.Unlock()
	for _, name := range names {
		os.Remove(filepath.Join(st.dir, name))
	}
}

// saveStart writes the record of a process that is starting to a file
// of its own, without syncing it, and asks for a synced save of the state
// file soon (within saveDelay), which then removes it. A process start
// answers after this, not after an fsync, and not after a write of every
// record.
//
// Why a record of its own, in a new file: a write of the whole state
// renamed over its last version made ext4 (auto_da_alloc) flush that
// file's data at every start, 0.15-5 ms on the answer's path; a new
// file replaces nothing, and holds one record where the state holds up
// to MaxRecords. Being new, it needs a new block: a full disk still
// fails it, and the start with it.
//
// Why the record still survives what it must: the agent is the sandbox's
// PID 1, so an agent crash ends the sandbox and its processes, and the
// restarted agent reads the record from the page cache of the same host
// kernel, where the completed write is, synced or not. Only a host crash
// within those milliseconds can lose the write, and then the process
// died with the host; the record may then be torn, and load ignores it.
func (st *stateStore) saveStart(info process.Info) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.seq++
	rec := startRecord{Seq: st.seq, Process: info}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding a process record: %w", err)
	}
	name := startPrefix + strconv.FormatUint(rec.Seq, 10) + startSuffix
	path := filepath.Join(st.dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("writing a process record: %w", err)
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing a process record: %w", err)
	}
	st.starts[rec.Seq] = name
	st.changed()
	return nil
}

// changed asks for a save soon; it never blocks.
func (st *stateStore) changed() {
	select {
	case st.dirty <- struct{}{}:
	default:
	}
}

// run saves after changes until ctx is done, then once more.
func (st *stateStore) run(ctx context.Context, onErr func(error)) {
	for {
		select {
		case <-ctx.Done():
			if err := st.save(); err != nil {
				onErr(err)
			}
			return
		case <-st.dirty:
		}
		select {
		case <-ctx.Done():
		case <-time.After(saveDelay):
		}
		if err := st.save(); err != nil {
			onErr(err)
		}
	}
}

// newProcesses makes the process manager and the state store, and restores
// what an earlier agent left: the sandbox environment, the sessions, and
// the process records (whose processes died with that agent).
func (a *Agent) newProcesses() error {
	cfg := a.cfg
	pc := cfg.Processes
	pc.Self, pc.CgroupRoot, pc.Shell = cfg.Self, cfg.CgroupRoot, cfg.Shell
	pc.LogDir = filepath.Join(cfg.StateDir, "logs")
	pc.Reaper, pc.Log, pc.RunDir = a.reaper, cfg.Log, cfg.RunDir
	st, err := newStateStore(cfg.StateDir, a.snapshot)
	if err != nil {
		return err
	}
	a.state = st
	pc.OnChange = st.changed
	pm, err := process.NewManager(pc)
	if err != nil {
		return err
	}
	a.processes = pm
	old, err := st.load()
	if err != nil {
		// A broken file must not keep the sandbox from working; what it
		// held is lost, and the operator is told.
		cfg.Log.Error("agent state unreadable; starting afresh", "err", err)
		return nil
	}
	if err := a.sessions.Restore(old.SandboxEnv, old.Sessions); err != nil {
		cfg.Log.Warn("some sessions could not be restored", "err", err)
	}
	pm.Restore(old.Processes, process.ReasonAgentRestarted)
	if len(old.Sessions) > 0 || len(old.Processes) > 0 || len(old.SandboxEnv) > 0 {
		cfg.Log.Info("agent state restored", "sessions", len(old.Sessions), "processes", len(old.Processes))
		// Save what changed in the records (killed, "agent restarted")
		// soon, off the start-up path: a synced write costs milliseconds
		// every sandbox start and wake would pay.
		st.changed()
	}
	return nil
}

// snapshot is the state to persist.
func (a *Agent) snapshot() persisted {
	p := persisted{SandboxEnv: a.sessions.SandboxEnv(), Processes: a.processes.Records()}
	for _, s := range a.sessions.List() {
		p.Sessions = append(p.Sessions, s.Definition())
	}
	return p
}
