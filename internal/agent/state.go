package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/process"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// DefaultStateDir is where the agent keeps what must survive its restart
// (the sandbox sleeping and waking, a crash): session definitions, the
// sandbox-level environment, process records and logs. It is on the
// sandbox's own disk, root's and 0700: it holds environment values.
const DefaultStateDir = "/var/lib/sandboxd-agent"

// stateFile is the name of the state file in the state directory;
// fastFile that of its unsynced companion (see saveFast).
const (
	stateFile = "state.json"
	fastFile  = "state.fast.json"
)

// persisted is the state file's content. Processes do not survive a
// restart, only their records and logs.
type persisted struct {
	Version int `json:"version"`
	// Seq orders the writes of both files: the later one wins at load.
	Seq        uint64               `json:"seq,omitempty"`
	SandboxEnv session.Layer        `json:"sandboxEnv,omitempty"`
	Sessions   []session.Definition `json:"sessions"`
	Processes  []process.Info       `json:"processes"`
}

// stateStore writes the state file: synchronously for changes the caller
// must find again (sessions, environment), and in the background, at most
// every saveDelay, for process records.
type stateStore struct {
	path, fastPath string
	snapshot       func() persisted

	mu  sync.Mutex // serialises writes
	seq uint64
	// enc holds the last write's encoding: every process start writes
	// the whole state (every record), and a buffer of that size allocated
	// at each start is zeroed and faulted in anew once the collector gave
	// its pages back (tens of microseconds a page in a PVM guest).
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
	return &stateStore{path: filepath.Join(dir, stateFile), fastPath: filepath.Join(dir, fastFile),
		snapshot: snapshot, dirty: make(chan struct{}, 1)}, nil
}

// load reads the later of the state file and its unsynced companion; a
// missing file is an empty state, and a companion that cannot be read
// (torn by a host crash) is ignored.
func (st *stateStore) load() (persisted, error) {
	p, err := readState(st.path)
	if fast, ferr := readState(st.fastPath); ferr == nil && fast.Seq > p.Seq {
		p, err = fast, nil
	}
	st.mu.Lock()
	st.seq = max(st.seq, p.Seq)
	st.mu.Unlock()
	return p, err
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
// over the old one.
func (st *stateStore) save() error {
	return st.write(st.path, durable)
}

// saveFast writes the current state to the companion file without
// syncing it, and asks for a synced save of the state file soon (within
// saveDelay). A process start answers after this, not after an fsync.
//
// Why a process record still survives what it must: the agent is the
// sandbox's PID 1, so an agent crash ends the sandbox and its processes,
// and the restarted agent reads the companion from the page cache of the
// same host kernel, where the completed write is, synced or not; a full
// disk still fails the write (NO_SPACE). Only a host crash within those
// milliseconds can lose the write, and then the process died with the
// host; the companion may then be torn, and load ignores it in favour of
// the state file, which only synced writes replace. A synced file never
// waits on this one.
func (st *stateStore) saveFast() error {
	err := st.write(st.fastPath, 0)
	st.changed()
	return err
}

// syncMode says whether a write is synced before it replaces the file.
type syncMode int

const durable syncMode = 1

func (st *stateStore) write(path string, mode syncMode) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	p := st.snapshot()
	p.Version = 1
	st.seq++
	p.Seq = st.seq
	st.enc.Reset()
	if err := json.NewEncoder(&st.enc).Encode(p); err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	data := st.enc.Bytes()
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	_, err = f.Write(data)
	if err == nil && mode == durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing state: %w", err)
	}
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
