package interp

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agent/transpile"
	"github.com/sandboxd/sandboxd/internal/agent/transpile/helper"
)

// The test binary doubles as the agent binary (interpreters are started
// through /proc/self/exe as the spawn wrapper) and as the TypeScript
// helper (Config.Transpiler).
func TestMain(m *testing.M) {
	agenttest.MainAround(m, func() func() {
		if len(os.Args) > 1 && os.Args[1] == transpile.Arg {
			helper.Main(os.Args[1:]) // never returns
		}
		// Before any test starts the shared reaper, which would take this
		// child's status from exec.Cmd's Wait.
		pythonErr = exec.Command("/usr/bin/python3", "-c", "import IPython").Run()
		dir, err := shareTestBinary()
		if err != nil {
			panic(err)
		}
		return func() { os.RemoveAll(dir) }
	})
}

// testBinary is a copy of this test binary where the user nobody can
// execute it (go test's build directory is private): the tests'
// TypeScript helper.
var testBinary string

func shareTestBinary() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "interp-helper")
	if err != nil {
		return "", err
	}
	testBinary = filepath.Join(dir, "sandbox-transpile")
	if err := os.Chmod(dir, 0o755); err != nil {
		return dir, err
	}
	data, err := os.ReadFile(self)
	if err != nil {
		return dir, err
	}
	return dir, os.WriteFile(testBinary, data, 0o755)
}

// pythonErr says why the system python3 with IPython is unusable, if it is.
var pythonErr error

const testPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func needPython(t testing.TB) {
	t.Helper()
	// The sandbox's python3 is the system one; a developer's pyenv shim
	// earlier in their own PATH does not count.
	if pythonErr != nil {
		t.Skip("needs /usr/bin/python3 with IPython (apt-get install python3-ipython):", pythonErr)
	}
}

func needNode(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node (apt-get install nodejs)")
	}
}

func newTestManager(t testing.TB, tweak ...func(*Config)) *Manager {
	t.Helper()
	cfg := Config{
		Dir:        filepath.Join(t.TempDir(), "code"),
		Workspace:  t.TempDir(),
		CgroupRoot: filepath.Join(t.TempDir(), "none"),
		BaseEnv:    []string{testPath, "HOME=/root", "LANG=C.UTF-8"},
		Reaper:     agenttest.Reaper(t),
		Transpiler: testBinary,
		Python:     "/usr/bin/python3",
		KillGrace:  2 * time.Second,
		NoSpares:   true,
	}
	// SANDBOXD_TEST_NODE runs the JavaScript tests with another Node.js,
	// e.g. Debian 12's 18 on a machine whose node is newer.
	if node := os.Getenv("SANDBOXD_TEST_NODE"); node != "" {
		cfg.Node = node
	}
	for _, f := range tweak {
		f(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// recorder is a Sink that keeps everything, in order.
type recorder struct {
	mu      sync.Mutex
	began   int
	events  []string // "stdout:...", "stderr:...", "result", "error"
	stdout  strings.Builder
	stderr  strings.Builder
	results []Result
	errs    []ExecError
}

func (r *recorder) Begin(*Context) { r.began++ }
func (r *recorder) Output(st Stream, p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	prefix := "stdout:"
	if st == Stderr {
		r.stderr.Write(p)
		prefix = "stderr:"
	} else {
		r.stdout.Write(p)
	}
	// Chunks are cut wherever the pipe was read; adjacent ones of a
	// stream are one event here.
	if n := len(r.events); n > 0 && strings.HasPrefix(r.events[n-1], prefix) {
		r.events[n-1] += string(p)
	} else {
		r.events = append(r.events, prefix+string(p))
	}
	return nil
}
func (r *recorder) Result(res Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, res)
	r.events = append(r.events, "result")
	return nil
}
func (r *recorder) Error(e ExecError) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, e)
	r.events = append(r.events, "error")
	return nil
}

func (r *recorder) main() *Result {
	for i := range r.results {
		if r.results[i].Main {
			return &r.results[i]
		}
	}
	return nil
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func create(t testing.TB, m *Manager, o Options) *Context {
	t.Helper()
	c, err := m.Create(ctxT(t, 90*time.Second), o)
	if err != nil {
		t.Fatalf("Create(%+v): %v", o, err)
	}
	return c
}

// runIn runs code and fails the test on an API error.
func runIn(t testing.TB, c *Context, code string, timeout time.Duration) (*recorder, Outcome) {
	t.Helper()
	rec, out, err := tryRun(t, c, code, timeout)
	if err != nil {
		t.Fatalf("run %q: %v", code, err)
	}
	return rec, out
}

func tryRun(t testing.TB, c *Context, code string, timeout time.Duration) (*recorder, Outcome, error) {
	t.Helper()
	tk, err := c.Enqueue()
	if err != nil {
		return nil, Outcome{}, err
	}
	rec := &recorder{}
	out, err := tk.Run(ctxT(t, 90*time.Second), code, timeout, rec)
	return rec, out, err
}

func text(r *recorder) string {
	if m := r.main(); m != nil {
		return m.Data["text/plain"]
	}
	return ""
}

func TestPythonReferenceExamples(t *testing.T) {
	needPython(t)
	m := newTestManager(t)
	c := create(t, m, Options{Language: Python})

	runIn(t, c, "import math; radius = 5", 0)
	rec, out := runIn(t, c, "math.pi * radius ** 2", 0)
	if got := text(rec); got != "78.53981633974483" {
		t.Errorf("math.pi * radius ** 2 = %q, want 78.53981633974483", got)
	}
	if out.ExecutionCount != 2 {
		t.Errorf("execution count = %d, want 2", out.ExecutionCount)
	}

	rec, _ = runIn(t, c, "\ndata = [1, 2, 3, 4, 5]\nprint(f\"Sum: {sum(data)}\")\nsum(data)\n", 0)
	if rec.stdout.String() != "Sum: 15\n" || text(rec) != "15" {
		t.Errorf("print + last expression: stdout %q, result %q", rec.stdout.String(), text(rec))
	}

	rec, _ = runIn(t, c, "x = 1 / 0", 0)
	if len(rec.errs) != 1 || rec.errs[0].Name != "ZeroDivisionError" || rec.errs[0].Value != "division by zero" || len(rec.errs[0].Traceback) == 0 {
		t.Errorf("1/0 errors = %+v", rec.errs)
	}

	rec, _ = runIn(t, c, "\nimport matplotlib.pyplot as plt\nimport numpy as np\n\nx = np.linspace(0, 10, 100)\nplt.plot(x, np.sin(x))\nplt.show()\n", 0)
	if len(rec.results) != 1 {
		t.Fatalf("sine chart: %d results (%v), want 1; stderr %s", len(rec.results), rec.events, rec.stderr.String())
	}
	raw, err := base64.StdEncoding.DecodeString(rec.results[0].Data["image/png"])
	if err != nil || !bytes.HasPrefix(raw, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("sine chart is not a PNG: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil || img.Bounds().Dx() < 100 {
		t.Errorf("decoding the chart: %v", err)
	}
	// The figure was closed after the cell: it is not shown again.
	if rec, _ := runIn(t, c, "1", 0); len(rec.results) != 1 {
		t.Errorf("the figure came back: %d results", len(rec.results))
	}

	rec, _ = runIn(t, c, "\nimport pandas as pd\ndf = pd.DataFrame({'Name': ['Alice', 'Bob'], 'Age': [25, 30]})\ndf\n", 0)
	main := rec.main()
	if main == nil || !strings.Contains(main.Data["text/html"], "<table") || !strings.Contains(main.Data["text/html"], "Alice") || !strings.Contains(main.Data["text/plain"], "Bob") {
		t.Errorf("DataFrame result = %+v", rec.results)
	}
}

func TestPythonOrderAndDisplay(t *testing.T) {
	needPython(t)
	m := newTestManager(t)
	c := create(t, m, Options{Language: Python})
	rec, _ := runIn(t, c, `
from IPython.display import display, HTML, Markdown
print("one")
display(HTML("<b>two</b>"))
import sys; print("three", file=sys.stderr)
display(Markdown("*four*"), {"five": 5})
print("six")
42
`, 0)
	want := []string{"stdout:one\n", "result", "stderr:three\n", "result", "result", "stdout:six\n", "result"}
	if fmt.Sprint(rec.events) != fmt.Sprint(want) {
		t.Errorf("events = %q, want %q", rec.events, want)
	}
	if len(rec.results) == 4 {
		if rec.results[0].Data["text/html"] != "<b>two</b>" || rec.results[1].Data["text/markdown"] != "*four*" {
			t.Errorf("display results = %+v", rec.results)
		}
		if rec.results[3].Data["text/plain"] != "42" || !rec.results[3].Main || rec.results[0].Main {
			t.Errorf("main result = %+v", rec.results[3])
		}
	}
	// Output of subprocesses is caught too.
	rec, _ = runIn(t, c, "import os; os.system('echo from-a-child')", 0)
	if !strings.Contains(rec.stdout.String(), "from-a-child") {
		t.Errorf("subprocess output = %q", rec.stdout.String())
	}
}

func TestStateIsPerContext(t *testing.T) {
	needPython(t)
	m := newTestManager(t)
	a := create(t, m, Options{Language: Python})
	b := create(t, m, Options{Language: Python, Env: map[string]string{"WHO": "b"}, Cwd: "/tmp"})
	runIn(t, a, "secret = 'a'", 0)
	if rec, _ := runIn(t, b, "secret", 0); len(rec.errs) != 1 || rec.errs[0].Name != "NameError" {
		t.Errorf("b sees a's variable: %+v %+v", rec.results, rec.errs)
	}
	if rec, _ := runIn(t, b, "import os; os.environ.get('WHO'), os.getcwd()", 0); text(rec) != "('b', '/tmp')" {
		t.Errorf("b's env and cwd = %q", text(rec))
	}
	if rec, _ := runIn(t, a, "import os; os.environ.get('WHO')", 0); text(rec) != "" {
		t.Errorf("a sees b's env: %q", text(rec))
	}
}

func TestPythonTimeoutKeepsState(t *testing.T) {
	needPython(t)
	m := newTestManager(t)
	c := create(t, m, Options{Language: Python})
	runIn(t, c, "kept = 41", 0)
	start := time.Now()
	rec, out := runIn(t, c, "import time\nprint('before', flush=True)\nwhile True: time.sleep(0.01)", 500*time.Millisecond)
	if !out.TimedOut || len(rec.errs) != 1 || rec.errs[0].Name != "TimeoutError" {
		t.Fatalf("timed-out run: outcome %+v errors %+v", out, rec.errs)
	}
	// Not interrupted, the loop never ends; the bound is far from what a
	// loaded host adds.
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the interrupt took %s", took)
	}
	if rec.stdout.String() != "before\n" {
		t.Errorf("output before the timeout = %q", rec.stdout.String())
	}
	if rec, _ := runIn(t, c, "kept + 1", 0); text(rec) != "42" {
		t.Errorf("state after the timeout: %q %+v", text(rec), rec.errs)
	}
	// A cell that swallows the interrupt and spins on is killed; the
	// context is then terminated.
	rec, out, err := tryRun(t, c, "while True:\n    try:\n        time.sleep(0.01)\n    except KeyboardInterrupt:\n        print('caught', flush=True)", 300*time.Millisecond)
	if !errors.Is(err, ErrTerminated) || rec.stdout.String() != "caught\n" {
		t.Fatalf("stubborn cell: err = %v, want ErrTerminated; %+v %+v", err, out, rec)
	}
}

func TestCrashKillsOnlyThatContext(t *testing.T) {
	needPython(t)
	m := newTestManager(t)
	a := create(t, m, Options{Language: Python})
	b := create(t, m, Options{Language: Python})
	runIn(t, b, "x = 7", 0)
	rec, _, err := tryRun(t, a, "print('bye', flush=True); import os; os._exit(3)", 0)
	if !errors.Is(err, ErrTerminated) || !strings.Contains(err.Error(), "status 3") {
		t.Fatalf("crash: err = %v", err)
	}
	if rec.stdout.String() != "bye\n" {
		t.Errorf("output before the crash = %q", rec.stdout.String())
	}
	if _, err := a.Enqueue(); !errors.Is(err, ErrTerminated) {
		t.Errorf("run after crash: %v, want ErrTerminated", err)
	}
	if info := a.Info(); !info.Terminated {
		t.Errorf("info after crash = %+v", info)
	}
	if rec, _ := runIn(t, b, "x", 0); text(rec) != "7" {
		t.Errorf("the other context: %q", text(rec))
	}
	// A segfault too.
	_, _, err = tryRun(t, b, "import ctypes; ctypes.string_at(0)", 0)
	if !errors.Is(err, ErrTerminated) || !strings.Contains(err.Error(), "SIGSEGV") {
		t.Errorf("segfault: err = %v", err)
	}
}

func TestDefaultContextIsCreatedOnceAndReplacedWhenDead(t *testing.T) {
	needPython(t)
	m := newTestManager(t)
	ctx := ctxT(t, 90*time.Second)
	var wg sync.WaitGroup
	got := make([]*Context, 4)
	for i := range got {
		wg.Go(func() {
			c, err := m.Default(ctx, Python)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		})
	}
	wg.Wait()
	for _, c := range got[1:] {
		if c != got[0] {
			t.Fatal("concurrent Default calls made several contexts")
		}
	}
	if got[0].ID() != "default-python" || len(m.List()) != 1 {
		t.Errorf("default context %s, list %+v", got[0].ID(), m.List())
	}
	tryRun(t, got[0], "import os; os._exit(1)", 0)
	c, err := m.Default(ctx, Python)
	if err != nil || c == got[0] || c.Terminated() {
		t.Fatalf("after the crash: %v, same %v", err, c == got[0])
	}
	if rec, _ := runIn(t, c, "1+1", 0); text(rec) != "2" {
		t.Errorf("fresh default context: %q", text(rec))
	}
}

func TestParallelCreateAndDelete(t *testing.T) {
	needPython(t)
	needNode(t)
	m := newTestManager(t)
	const n = 6
	ctx := ctxT(t, 3*time.Minute)
	cs := make([]*Context, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			lang := []Language{Python, JavaScript, TypeScript}[i%3]
			c, err := m.Create(ctx, Options{Language: lang})
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			cs[i] = c
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ids := map[string]bool{}
	for i, c := range cs {
		ids[c.ID()] = true
		rec, _ := runIn(t, c, fmt.Sprintf("v = %d\n", i), 0)
		_ = rec
	}
	for i, c := range cs {
		code := "v"
		if rec, _ := runIn(t, c, code, 0); text(rec) != fmt.Sprint(i) {
			t.Errorf("context %d sees v = %q %+v", i, text(rec), rec.errs)
		}
	}
	if len(ids) != n || len(m.List()) != n {
		t.Errorf("ids %v, list %d", ids, len(m.List()))
	}
	// Deleting frees the process and its children.
	c := cs[0]
	rec, _ := runIn(t, c, "import subprocess, os\np = subprocess.Popen(['sleep', '300'])\nprint(os.getpid(), p.pid)", 0)
	var pid, child int
	fmt.Sscan(rec.stdout.String(), &pid, &child)
	if err := m.Delete(c.ID()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{pid, child} {
		if p <= 0 {
			t.Fatalf("pids %q", rec.stdout.String())
		}
		deadline := time.Now().Add(5 * time.Second)
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("process %d survived the delete", p)
		}
	}
	if _, err := m.Get(c.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after delete: %v", err)
	}
	if err := m.Delete(c.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z'
}

func TestLimits(t *testing.T) {
	needPython(t)
	m := newTestManager(t, func(c *Config) { c.MaxContexts = 1; c.MaxOutputBytes = 1000 })
	c := create(t, m, Options{Language: Python})
	if _, err := m.Create(ctxT(t, time.Minute), Options{Language: Python}); !errors.Is(err, ErrLimit) {
		t.Errorf("second context: %v, want ErrLimit", err)
	}
	rec, out := runIn(t, c, "print('x' * 5000); 'y' * 5000", 0)
	if !out.Truncated || rec.stdout.Len() != 1000 || len(rec.results) != 0 {
		t.Errorf("truncation: %+v, %d bytes, %d results", out, rec.stdout.Len(), len(rec.results))
	}
	if _, err := m.Create(ctxT(t, time.Minute), Options{Language: Python, Cwd: "/no/such/dir"}); err == nil {
		t.Error("a missing cwd was accepted")
	}
}

func TestNotAvailable(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.Python = "no-such-python3"; c.Node = "/no/such/node" })
	for _, lang := range []Language{Python, JavaScript, TypeScript} {
		_, err := m.Create(ctxT(t, time.Minute), Options{Language: lang})
		var na *NotAvailableError
		if !errors.As(err, &na) || na.Hint == "" {
			t.Errorf("%s: %v, want NotAvailableError", lang, err)
		}
	}
}

func TestJavaScript(t *testing.T) {
	needNode(t)
	m := newTestManager(t)
	c := create(t, m, Options{Language: JavaScript})
	runIn(t, c, "let a = 1; const b = 2; var c = 3; function f(x) { return x * 10 }", 0)
	if rec, _ := runIn(t, c, "a + b + c + f(1)", 0); text(rec) != "16" {
		t.Errorf("persistence: %q %+v", text(rec), rec.errs)
	}
	rec, _ := runIn(t, c, "const r = await new Promise((res) => setTimeout(() => res(41), 20));\nconsole.log('waited');\nr + 1", 0)
	if text(rec) != "42" || rec.stdout.String() != "waited\n" {
		t.Errorf("top-level await: %q, stdout %q, errors %+v", text(rec), rec.stdout.String(), rec.errs)
	}
	if rec, _ := runIn(t, c, "r", 0); text(rec) != "41" {
		t.Errorf("const declared next to await did not persist: %q %+v", text(rec), rec.errs)
	}
	rec, _ = runIn(t, c, "({name: 'x', list: [1, 2]})", 0)
	if m := rec.main(); m == nil || m.Data["application/json"] != `{"name":"x","list":[1,2]}` {
		t.Errorf("object result = %+v", rec.results)
	}
	rec, _ = runIn(t, c, "null.x", 0)
	if len(rec.errs) != 1 || rec.errs[0].Name != "TypeError" {
		t.Errorf("TypeError = %+v", rec.errs)
	}
	rec, _ = runIn(t, c, "import os from 'os'\nos.platform()", 0)
	if text(rec) != "'linux'" {
		t.Errorf("import statement: %q %+v", text(rec), rec.errs)
	}
	rec, out := runIn(t, c, "while (true) {}", 300*time.Millisecond)
	if !out.TimedOut || len(rec.errs) != 1 || rec.errs[0].Name != "TimeoutError" {
		t.Errorf("timeout: %+v %+v", out, rec.errs)
	}
	if rec, _ := runIn(t, c, "a", 0); text(rec) != "1" {
		t.Errorf("state after the timeout: %q %+v", text(rec), rec.errs)
	}
	rec, out = runIn(t, c, "await new Promise(() => {})", 300*time.Millisecond)
	if !out.TimedOut || len(rec.errs) != 1 {
		t.Errorf("timeout in await: %+v %+v", out, rec.errs)
	}
	if rec, _ := runIn(t, c, "b", 0); text(rec) != "2" {
		t.Errorf("state after the await timeout: %q %+v", text(rec), rec.errs)
	}
	_, _, err := tryRun(t, c, "process.kill(process.pid, 'SIGKILL')", 0)
	if !errors.Is(err, ErrTerminated) {
		t.Errorf("kill: %v", err)
	}
}

func TestTypeScript(t *testing.T) {
	needNode(t)
	m := newTestManager(t)
	c := create(t, m, Options{Language: TypeScript})
	rec, _ := runIn(t, c, "interface P { name: string; age: number }\nconst people: P[] = [{name: 'a', age: 3}]\nconst total: number = people.reduce((s, p) => s + p.age, 0)\ntotal", 0)
	if text(rec) != "3" {
		t.Errorf("typed code: %q %+v", text(rec), rec.errs)
	}
	// Type errors do not block.
	if rec, _ := runIn(t, c, "const n: number = 'not a number'; n", 0); text(rec) != "'not a number'" {
		t.Errorf("type error: %q %+v", text(rec), rec.errs)
	}
	rec, out := runIn(t, c, "const = ;", 0)
	if len(rec.errs) != 1 || rec.errs[0].Name != "SyntaxError" || out.ExecutionCount != 2 {
		t.Errorf("syntax error: %+v, %+v", rec.errs, out)
	}
	if rec, _ := runIn(t, c, "const later: number = await Promise.resolve(total * 2); later", 0); text(rec) != "6" {
		t.Errorf("await: %q %+v", text(rec), rec.errs)
	}
}

// TestTypeScriptHelper: the helper starts on the first cell that needs it
// (not for plain JavaScript), as nobody, is started again after it died,
// and is gone after Close.
func TestTypeScriptHelper(t *testing.T) {
	needNode(t)
	m := newTestManager(t)
	js := create(t, m, Options{Language: JavaScript})
	if rec, _ := runIn(t, js, "1 + 1", 0); text(rec) != "2" || helperPID(m) != 0 {
		t.Fatalf("plain JavaScript: %q, helper %d", text(rec), helperPID(m))
	}
	ts := create(t, m, Options{Language: TypeScript})
	if rec, _ := runIn(t, ts, "const a: number = 1; a", 0); text(rec) != "1" {
		t.Fatalf("first cell: %q %+v", text(rec), rec.errs)
	}
	first := helperPID(m)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", first))
	if err != nil || !strings.Contains(string(status), "\nUid:\t65534\t") {
		t.Errorf("helper %d does not run as nobody: %v\n%s", first, err, status)
	}
	syscall.Kill(first, syscall.SIGKILL)
	m.ts.mu.Lock()
	<-m.ts.h.exited
	m.ts.mu.Unlock()
	if rec, _ := runIn(t, ts, "const b: number = 2; b", 0); text(rec) != "2" {
		t.Fatalf("after the helper died: %q %+v", text(rec), rec.errs)
	}
	second := helperPID(m)
	if second == 0 || second == first {
		t.Errorf("helper %d, then %d", first, second)
	}
	m.Close()
	if alive(second) {
		t.Errorf("helper %d survived Close", second)
	}
}

func helperPID(m *Manager) int {
	m.ts.mu.Lock()
	defer m.ts.mu.Unlock()
	if m.ts.h == nil {
		return 0
	}
	return m.ts.h.proc.Pid
}

func TestSpares(t *testing.T) {
	needPython(t)
	m := newTestManager(t, func(c *Config) { c.NoSpares = false })
	a := create(t, m, Options{Language: Python})
	deadline := time.Now().Add(60 * time.Second)
	for {
		m.mu.Lock()
		sp := m.spares[Python]
		m.mu.Unlock()
		if sp != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no spare started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	b := create(t, m, Options{Language: Python, Cwd: "/tmp"})
	rec, _ := runIn(t, b, "import os; os.getcwd()", 0)
	t.Logf("context from a spare to first result: %s", time.Since(start))
	if text(rec) != "'/tmp'" || a.proc.pid == b.proc.pid {
		t.Errorf("spare context: %q", text(rec))
	}
	m.Close()
	for _, p := range []int{a.proc.pid, b.proc.pid} {
		if alive(p) {
			t.Errorf("pid %d survived Close", p)
		}
	}
	_ = syscall.Getpid
}
