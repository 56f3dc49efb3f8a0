package interp

import (
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

//go:embed drivers/driver.py
var pythonDriver []byte

//go:embed drivers/driver.js
var nodeDriver []byte

// DefaultPrefix starts the IDs of default contexts: "default-python" and
// so on.
const DefaultPrefix = "default-"

// Hints for a missing runtime.
const (
	pythonHint = "the image needs python3 with IPython (Debian: apt-get install python3-ipython; add python3-matplotlib python3-pandas python3-numpy for charts and tables)"
	nodeHint   = "the image needs Node.js 18 or later (Debian: apt-get install nodejs)"
)

// Options are a context's settings, fixed at creation.
type Options struct {
	Language Language
	// Cwd is the working directory; default Config.Workspace. It must be
	// an existing directory.
	Cwd string
	// Env is added to (and overrides) Config.BaseEnv.
	Env map[string]string
}

// Manager is the registry of code contexts.
//
// Spares: starting IPython takes most of a second, far more than running
// code in it, so once a language has been used the manager keeps one
// interpreter of it started and idle. A context created without env
// variables of its own takes the spare (its working directory is set when
// it is taken) and a new spare starts in the background. Contexts with
// their own env always start fresh, because variables such as PYTHONPATH
// or NODE_OPTIONS act at interpreter start. Nothing is started before the
// first context of a language, so sandboxes that never run code pay
// nothing.
type Manager struct {
	cfg    Config
	active atomic.Int32 // runs queued or executing
	bg     sync.WaitGroup
	bgCtx  context.Context
	stopBg context.CancelFunc

	defaultSem map[Language]chan struct{} // serialises the creation of each default context

	ts transpiler // the TypeScript helper, started on first use

	filesMu sync.Mutex
	filesOK bool

	baseEnvMu sync.Mutex // guards cfg.BaseEnv, which SetBaseEnv replaces

	mu       sync.Mutex
	contexts map[string]*Context
	creating int
	spares   map[Language]*spare        // by runtime: Python or JavaScript
	refills  map[Language]chan struct{} // closed when the spare being started is ready (or failed)
	closed   bool
}

// spare is a started interpreter waiting to become a context.
type spare struct {
	p *process
	s *starter
}

// NewManager checks cfg and returns a manager. Nothing starts until the
// first context is created.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Reaper == nil {
		return nil, errors.New("interp: Config.Reaper is required")
	}
	if !filepath.IsAbs(cfg.Dir) || !filepath.IsAbs(cfg.Workspace) {
		return nil, errors.New("interp: Dir and Workspace must be absolute")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Self == "" {
		cfg.Self = "/proc/self/exe"
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = spawn.DefaultCgroupRoot
	}
	if cfg.Python == "" {
		cfg.Python = "python3"
	}
	if cfg.Node == "" {
		cfg.Node = "node"
	}
	if cfg.MaxContexts <= 0 {
		cfg.MaxContexts = 16
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 16
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = 32 << 20
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 3 * time.Second
	}
	bgCtx, stop := context.WithCancel(context.Background())
	m := &Manager{
		cfg:        cfg,
		bgCtx:      bgCtx,
		stopBg:     stop,
		defaultSem: make(map[Language]chan struct{}),
		contexts:   make(map[string]*Context),
		spares:     make(map[Language]*spare),
		refills:    make(map[Language]chan struct{}),
	}
	for _, l := range []Language{Python, JavaScript, TypeScript} {
		m.defaultSem[l] = make(chan struct{}, 1)
	}
	m.ts.cfg = &m.cfg
	return m, nil
}

// transpile returns the JavaScript a run of code in a context of lang
// (JavaScript or TypeScript) sends to Node, or the error to report
// instead. When the helper cannot answer, JavaScript runs as written
// (Node reports what it cannot run) and TypeScript reports why.
func (m *Manager) transpile(ctx context.Context, lang Language, code string) (string, *ExecError) {
	js, serr, err := m.ts.transpile(ctx, lang, code)
	switch {
	case err == nil:
		return js, serr
	case lang == JavaScript:
		return code, nil
	}
	m.cfg.Log.Warn("transpiling a TypeScript cell", "err", err)
	return "", &ExecError{Name: "TranspileError", Value: err.Error(), Traceback: []string{}}
}

// ValidID reports whether id can name a context: 1-64 characters of
// [A-Za-z0-9._-], starting with a letter or digit.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 || !isAlnum(id[0]) {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// newID returns a random version 4 UUID.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Create starts a context with a new ID.
func (m *Manager) Create(ctx context.Context, o Options) (*Context, error) {
	return m.create(ctx, newID(), o)
}

// Default returns the default context of lang, creating it on first use,
// once even under concurrent calls. A default context whose interpreter
// died is replaced.
func (m *Manager) Default(ctx context.Context, lang Language) (*Context, error) {
	if !lang.Valid() {
		return nil, fmt.Errorf("unknown language %q", lang)
	}
	id := DefaultPrefix + string(lang)
	if c := m.live(id); c != nil {
		return c, nil
	}
	sem := m.defaultSem[lang]
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-sem }()
	if c := m.live(id); c != nil {
		return c, nil
	}
	m.mu.Lock()
	if c, ok := m.contexts[id]; ok { // terminated
		delete(m.contexts, id)
		m.mu.Unlock()
		c.proc.stop(time.Second)
	} else {
		m.mu.Unlock()
	}
	return m.create(ctx, id, Options{Language: lang})
}

// live returns the context id if it exists and its interpreter runs.
func (m *Manager) live(id string) *Context {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.contexts[id]; ok && !c.Terminated() {
		return c
	}
	return nil
}

func (m *Manager) create(ctx context.Context, id string, o Options) (_ *Context, err error) {
	if !o.Language.Valid() {
		return nil, fmt.Errorf("unknown language %q", o.Language)
	}
	cwd := o.Cwd
	if cwd == "" {
		cwd = m.cfg.Workspace
		os.MkdirAll(cwd, 0o755) // user code may have removed it
	}
	if fi, err := os.Stat(cwd); err != nil {
		return nil, &CwdError{Dir: cwd, Err: err}
	} else if !fi.IsDir() {
		return nil, &CwdError{Dir: cwd, Err: errors.New("not a directory")}
	}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return nil, ErrClosed
	case len(m.contexts)+m.creating >= m.cfg.MaxContexts:
		m.mu.Unlock()
		return nil, ErrLimit
	}
	if _, ok := m.contexts[id]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("context %s exists", id) // IDs are random or defaults, serialised
	}
	m.creating++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.creating--
		m.mu.Unlock()
	}()

	rt := o.Language.runtime()
	sp, err := m.obtain(ctx, rt, o.Env)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			sp.p.stop(time.Second)
		}
	}()
	deadline := time.Now().Add(m.cfg.StartTimeout)
	if err := sp.p.send(ctx, request{Type: "init", Cwd: cwd, Env: o.Env}); err != nil {
		return nil, m.startFailure(o.Language, sp, err)
	}
	f, err := sp.p.await(ctx, sp.s, deadline)
	if err != nil {
		return nil, m.startFailure(o.Language, sp, err)
	}
	if f.Type != "inited" {
		return nil, &StartError{Language: o.Language, Detail: fmt.Sprintf("the driver answered %q to init", f.Type)}
	}
	sp.p.setListener(nil)
	now := time.Now().UTC()
	c := &Context{
		m: m, id: id, lang: o.Language, cwd: cwd, createdAt: now, lastUsed: now, proc: sp.p,
		slot: make(chan struct{}, 1),
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.contexts[id] = c
	m.mu.Unlock()
	m.cfg.Log.Info("code context created", "context", id, "language", o.Language, "pid", sp.p.pid)
	m.refill(rt)
	return c, nil
}

// obtain returns a ready interpreter of runtime rt: the spare when env is
// empty and a spare is there, else a new one.
func (m *Manager) obtain(ctx context.Context, rt Language, env map[string]string) (*spare, error) {
	if len(env) == 0 {
		m.mu.Lock()
		sp := m.spares[rt]
		delete(m.spares, rt)
		starting := m.refills[rt]
		m.mu.Unlock()
		if sp == nil && starting != nil {
			// The spare is on its way: waiting for it costs no more than
			// starting another, and the machine starts one interpreter,
			// not two.
			select {
			case <-starting:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
			m.mu.Lock()
			sp = m.spares[rt]
			delete(m.spares, rt)
			m.mu.Unlock()
		}
		if sp != nil {
			select {
			case <-sp.p.dead:
				// Died while waiting (killed by user code, say): start anew.
			default:
				return sp, nil
			}
		}
	}
	return m.start(ctx, rt, env)
}

// refill starts a spare of rt in the background if there is none.
func (m *Manager) refill(rt Language) {
	if m.cfg.NoSpares {
		return
	}
	m.mu.Lock()
	if m.closed || m.spares[rt] != nil || m.refills[rt] != nil {
		m.mu.Unlock()
		return
	}
	ready := make(chan struct{})
	m.refills[rt] = ready
	m.bg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.bg.Done()
		sp, err := m.start(m.bgCtx, rt, nil)
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.refills, rt)
		defer close(ready)
		if err != nil {
			if m.bgCtx.Err() == nil {
				m.cfg.Log.Warn("could not start a spare interpreter", "language", rt, "err", err)
			}
			return
		}
		if m.closed {
			go sp.p.stop(time.Second)
			return
		}
		m.spares[rt] = sp
	}()
}

// start starts an interpreter of runtime rt and waits for its driver to
// say ready.
func (m *Manager) start(ctx context.Context, rt Language, env map[string]string) (*spare, error) {
	dir, err := m.writeDrivers()
	if err != nil {
		return nil, err
	}
	merged := m.env(env)
	var argv []string
	switch rt {
	case Python:
		prog, err := lookPath(m.cfg.Python, merged)
		if err != nil {
			return nil, &NotAvailableError{Language: Python, Reason: m.cfg.Python + " was not found", Hint: pythonHint}
		}
		argv = []string{prog, filepath.Join(dir, "driver.py")}
	default:
		prog, err := lookPath(m.cfg.Node, merged)
		if err != nil {
			return nil, &NotAvailableError{Language: JavaScript, Reason: m.cfg.Node + " was not found", Hint: nodeHint}
		}
		argv = []string{prog, "--expose-internals", filepath.Join(dir, "driver.js")}
	}
	startDir := m.cfg.Workspace
	if _, err := os.Stat(startDir); err != nil {
		startDir = "/"
	}
	p, err := startProcess(&m.cfg, rt, merged, startDir, argv)
	if err != nil {
		return nil, err
	}
	sp := &spare{p: p, s: &starter{frames: make(chan frame, 4)}}
	p.setListener(sp.s)
	f, err := p.await(ctx, sp.s, time.Now().Add(m.cfg.StartTimeout))
	if err == nil && f.Type == "ready" {
		return sp, nil
	}
	if err == nil && f.Type == "fatal" {
		p.stop(time.Second)
		if f.Kind == "missing" {
			return nil, &NotAvailableError{Language: rt, Reason: f.Message, Hint: hintOf(rt)}
		}
		return nil, &StartError{Language: rt, Detail: f.Message}
	}
	if err == nil {
		err = fmt.Errorf("the driver said %q before ready", f.Type)
	}
	return nil, m.startFailure(rt, sp, err)
}

func hintOf(rt Language) string {
	if rt == Python {
		return pythonHint
	}
	return nodeHint
}

// startFailure kills a starting interpreter and explains why it failed.
func (m *Manager) startFailure(lang Language, sp *spare, err error) error {
	sp.p.stop(2 * time.Second)
	if ctxErr := errors.Unwrap(err); errors.Is(err, context.Canceled) || errors.Is(ctxErr, context.Canceled) {
		return err
	}
	if st, ok := sp.p.status.Load().(reaper.Status); ok && st.WS.Exited() && st.WS.ExitStatus() == spawn.ExitExec {
		return &NotAvailableError{Language: lang.runtime(), Reason: "the interpreter could not be executed", Hint: hintOf(lang.runtime())}
	}
	detail := sp.p.startLog(sp.s)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		detail = fmt.Sprintf("it did not answer within %s. %s", m.cfg.StartTimeout, detail)
	case detail == "":
		detail = sp.p.describeExit()
	}
	m.cfg.Log.Warn("code interpreter failed to start", "language", lang, "err", err)
	return &StartError{Language: lang, Detail: strings.TrimSpace(detail)}
}

// writeDrivers writes the embedded drivers into Dir once and returns Dir.
func (m *Manager) writeDrivers() (string, error) {
	m.filesMu.Lock()
	defer m.filesMu.Unlock()
	if m.filesOK {
		return m.cfg.Dir, nil
	}
	if err := os.MkdirAll(m.cfg.Dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", m.cfg.Dir, err)
	}
	for name, data := range map[string][]byte{"driver.py": pythonDriver, "driver.js": nodeDriver} {
		tmp := filepath.Join(m.cfg.Dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return "", fmt.Errorf("writing %s: %w", name, err)
		}
		if err := os.Rename(tmp, filepath.Join(m.cfg.Dir, name)); err != nil {
			return "", fmt.Errorf("writing %s: %w", name, err)
		}
	}
	m.filesOK = true
	return m.cfg.Dir, nil
}

// SetBaseEnv replaces the base environment of interpreters started from
// now on (a restored fork takes its own: memfork in the daemon). Running
// contexts and spares keep theirs.
func (m *Manager) SetBaseEnv(env []string) {
	m.baseEnvMu.Lock()
	m.cfg.BaseEnv = slices.Clone(env)
	m.baseEnvMu.Unlock()
}

// env is the environment of an interpreter: the base environment,
// overridden by extra.
func (m *Manager) env(extra map[string]string) []string {
	m.baseEnvMu.Lock()
	base := m.cfg.BaseEnv
	m.baseEnvMu.Unlock()
	merged := make(map[string]string, len(base)+len(extra))
	for _, kv := range base {
		if k, v, ok := strings.Cut(kv, "="); ok {
			merged[k] = v
		}
	}
	for k, v := range extra {
		merged[k] = v
	}
	out := make([]string, 0, len(merged))
	for k, v := range merged {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// lookPath finds prog in the PATH of env, as the spawn wrapper will.
func lookPath(prog string, env []string) (string, error) {
	if strings.Contains(prog, "/") {
		return prog, executable(prog)
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		if p := filepath.Join(dir, prog); executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH", prog)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// Get returns the context id, terminated or not.
func (m *Manager) Get(id string) (*Context, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	c, ok := m.contexts[id]
	if !ok {
		return nil, ErrNotFound
	}
	return c, nil
}

// Delete removes the context id and kills its interpreter and everything
// it started, waiting (a few seconds at most) until they are gone. A run
// in progress ends with ErrTerminated.
func (m *Manager) Delete(id string) error {
	m.mu.Lock()
	c, ok := m.contexts[id]
	if ok {
		delete(m.contexts, id)
	}
	m.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	c.proc.fail("the context was deleted")
	c.proc.stop(5 * time.Second)
	m.cfg.Log.Info("code context deleted", "context", id)
	return nil
}

// List describes every context, oldest first.
func (m *Manager) List() []Info {
	m.mu.Lock()
	cs := make([]*Context, 0, len(m.contexts))
	for _, c := range m.contexts {
		cs = append(cs, c)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Info())
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Active is the number of runs queued or executing, in every context.
func (m *Manager) Active() int { return int(m.active.Load()) }

// Close kills every interpreter, spares included, and waits for them (a
// few seconds at most). Runs in progress end with ErrTerminated.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.ts.close()
	var procs []*process
	for _, c := range m.contexts {
		procs = append(procs, c.proc)
	}
	for _, sp := range m.spares {
		procs = append(procs, sp.p)
	}
	clear(m.spares)
	m.mu.Unlock()
	m.stopBg()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(3 * time.Second) })
	}
	wg.Wait()
	m.bg.Wait()
}
