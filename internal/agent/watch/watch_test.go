package watch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/files"
	"github.com/sandboxd/sandboxd/internal/agent/files/glob"
)

type env struct {
	hub *Hub
	dir string // the root of the test FS on this machine
	now time.Time
	mu  sync.Mutex
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	dir := t.TempDir()
	fsys, err := files.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, now: time.Unix(1e9, 0)}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }
	}
	e.hub = New(fsys, cfg)
	t.Cleanup(func() { e.hub.Close(); fsys.Close() })
	os.MkdirAll(e.host("/w"), 0o755)
	return e
}

func (e *env) host(p string) string { return filepath.Join(e.dir, p) }

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

// next waits (at most 5s) for the next event.
func next(t *testing.T, w *Watch) (Event, error) {
	t.Helper()
	stop := make(chan struct{})
	timer := time.AfterFunc(5*time.Second, func() { close(stop) })
	defer timer.Stop()
	return w.Next(stop, func() error { return errors.New("no event within 5s") })
}

// expect reads events until it has seen each of want ("type path", in
// order, others in between allowed).
func expect(t *testing.T, w *Watch, want ...string) []Event {
	t.Helper()
	var got []Event
	for _, wnt := range want {
		for {
			ev, err := next(t, w)
			if err != nil {
				t.Fatalf("waiting for %q: %v (got %s)", wnt, err, show(got))
			}
			got = append(got, ev)
			if ev.Type+" "+ev.Path == wnt {
				break
			}
		}
	}
	return got
}

func show(evs []Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Type+" "+e.Path)
	}
	return strings.Join(s, ", ")
}

// quiet checks that no event arrives for a moment.
func quiet(t *testing.T, w *Watch) {
	t.Helper()
	stop := make(chan struct{})
	time.AfterFunc(200*time.Millisecond, func() { close(stop) })
	if ev, err := w.Next(stop, func() error { return nil }); err != nil || ev.Type != "" {
		t.Errorf("unexpected %+v, %v", ev, err)
	}
}

func TestEvents(t *testing.T) {
	e := newEnv(t, Config{})
	w, err := e.hub.Watch("/w", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	os.WriteFile(e.host("/w/a"), []byte("1"), 0o644)
	expect(t, w, "create /w/a", "modify /w/a")
	os.Chmod(e.host("/w/a"), 0o600)
	expect(t, w, "attrib /w/a")
	os.Rename(e.host("/w/a"), e.host("/w/b"))
	got := expect(t, w, "move_from /w/a", "move_to /w/b")
	if c1, c2 := got[len(got)-2].Cookie, got[len(got)-1].Cookie; c1 == 0 || c1 != c2 {
		t.Errorf("cookies %d %d", c1, c2)
	}
	os.Remove(e.host("/w/b"))
	expect(t, w, "delete /w/b")
	os.Mkdir(e.host("/w/d"), 0o755)
	if got := expect(t, w, "create /w/d"); !got[len(got)-1].IsDir {
		t.Error("directory event without IsDir")
	}
	// Not recursive: nothing below /w/d.
	os.WriteFile(e.host("/w/d/x"), nil, 0o644)
	quiet(t, w)
}

func TestRecursiveSeesNewTrees(t *testing.T) {
	e := newEnv(t, Config{})
	w, err := e.hub.Watch("/w", Options{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	os.MkdirAll(e.host("/w/a/b/c"), 0o755)
	os.WriteFile(e.host("/w/a/b/c/f"), nil, 0o644)
	expect(t, w, "create /w/a")
	seen := map[string]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for !(seen["create /w/a/b"] && seen["create /w/a/b/c"] && seen["create /w/a/b/c/f"]) && time.Now().Before(deadline) {
		ev, err := next(t, w)
		if err != nil {
			t.Fatalf("%v; seen %v", err, seen)
		}
		seen[ev.Type+" "+ev.Path] = true
	}
	// And the new directories are watched.
	os.WriteFile(e.host("/w/a/b/c/g"), nil, 0o644)
	expect(t, w, "create /w/a/b/c/g")
	// A directory moved within the tree keeps being watched, under its
	// new name.
	os.Rename(e.host("/w/a/b"), e.host("/w/moved"))
	expect(t, w, "move_from /w/a/b", "move_to /w/moved")
	os.WriteFile(e.host("/w/moved/c/h"), nil, 0o644)
	expect(t, w, "create /w/moved/c/h")
	// A directory moved out is forgotten.
	os.Rename(e.host("/w/moved"), e.host("/gone"))
	expect(t, w, "move_from /w/moved")
	os.WriteFile(e.host("/gone/c/i"), nil, 0o644)
	quiet(t, w)
}

func TestIncludeExclude(t *testing.T) {
	e := newEnv(t, Config{})
	inc, _ := glob.Compile([]string{"*.go"})
	exc, _ := glob.Compile([]string{"node_modules"})
	os.MkdirAll(e.host("/w/node_modules/pkg"), 0o755)
	w, err := e.hub.Watch("/w", Options{Recursive: true, Include: inc, Exclude: exc})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if n := len(e.hub.nodes); n != 1 {
		t.Errorf("%d directories watched; node_modules should not be", n)
	}
	os.WriteFile(e.host("/w/node_modules/pkg/x.go"), nil, 0o644)
	os.WriteFile(e.host("/w/readme.md"), nil, 0o644)
	os.WriteFile(e.host("/w/main.go"), nil, 0o644)
	got := expect(t, w, "create /w/main.go")
	if len(got) != 1 {
		t.Errorf("got %s", show(got))
	}
}

func TestRootDeleted(t *testing.T) {
	e := newEnv(t, Config{})
	os.Mkdir(e.host("/w/sub"), 0o755)
	w, err := e.hub.Watch("/w/sub", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	os.Remove(e.host("/w/sub"))
	expect(t, w, "delete /w/sub")
	if _, err := next(t, w); !errors.Is(err, ErrRootGone) {
		t.Errorf("after the root went: %v", err)
	}
}

func TestWatchAFile(t *testing.T) {
	e := newEnv(t, Config{})
	os.WriteFile(e.host("/w/f"), nil, 0o644)
	w, err := e.hub.Watch("/w/f", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	os.WriteFile(e.host("/w/f"), []byte("x"), 0o644)
	expect(t, w, "modify /w/f")
}

func TestSlowClientOverflows(t *testing.T) {
	e := newEnv(t, Config{Buffer: 4})
	w, err := e.hub.Watch("/w", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 20 {
		os.WriteFile(e.host(fmt.Sprintf("/w/f%d", i)), nil, 0o644)
	}
	for {
		_, err := next(t, w)
		if errors.Is(err, ErrOverflow) {
			break
		}
		if err != nil {
			t.Fatalf("want ErrOverflow, got %v", err)
		}
	}
}

func TestModifiesAreMerged(t *testing.T) {
	e := newEnv(t, Config{})
	os.WriteFile(e.host("/w/f"), nil, 0o644)
	w, err := e.hub.Watch("/w", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f, _ := os.OpenFile(e.host("/w/f"), os.O_WRONLY, 0)
	for range 1000 {
		f.Write([]byte("x"))
	}
	f.Close()
	os.Remove(e.host("/w/f"))
	got := expect(t, w, "delete /w/f")
	if len(got) > 10 {
		t.Errorf("%d events for 1000 writes", len(got))
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t, Config{MaxWatches: 2, MaxDirs: 3})
	w1, err := e.hub.Watch("/w", Options{})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := e.hub.Watch("/w", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Watch("/w", Options{}); !errors.Is(err, ErrLimit) {
		t.Errorf("third watch: %v", err)
	}
	if len(e.hub.nodes) != 1 {
		t.Errorf("two watches of one directory use %d kernel watches", len(e.hub.nodes))
	}
	w1.Close()
	w2.Close()
	if len(e.hub.nodes) != 0 || len(e.hub.watches) != 0 {
		t.Errorf("after Close: %d nodes, %d watches", len(e.hub.nodes), len(e.hub.watches))
	}
	os.MkdirAll(e.host("/w/a/b/c/d"), 0o755)
	if _, err := e.hub.Watch("/w", Options{Recursive: true}); !errors.Is(err, ErrLimit) {
		t.Errorf("five directories with MaxDirs 3: %v", err)
	}
	if len(e.hub.nodes) != 0 {
		t.Errorf("a refused watch left %d kernel watches", len(e.hub.nodes))
	}
	// A tree that outgrows the limit ends the watch.
	os.RemoveAll(e.host("/w/a"))
	w, err := e.hub.Watch("/w", Options{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	os.MkdirAll(e.host("/w/x/y/z/q"), 0o755)
	for {
		_, err := next(t, w)
		if errors.Is(err, ErrLimit) {
			break
		}
		if err != nil {
			t.Fatalf("want ErrLimit, got %v", err)
		}
	}
}

func TestOffLimits(t *testing.T) {
	fsys, err := files.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	h := New(fsys, Config{})
	defer h.Close()
	for _, p := range []string{"/proc/self", "/proc/1/root", "/proc"} {
		if w, err := h.Watch(p, Options{}); err == nil {
			w.Close()
			t.Errorf("watch %s succeeded", p)
		}
	}
}

func TestPolls(t *testing.T) {
	e := newEnv(t, Config{PollTTL: time.Minute})
	c, err := e.hub.Changes("/w", Options{}, "k", "")
	if err != nil || c.Status != Resync {
		t.Fatalf("first poll = %+v, %v", c, err)
	}
	v := c.Version
	if c, _ = e.hub.Changes("/w", Options{}, "k", v); c.Status != Unchanged || c.Version != v {
		t.Errorf("quiet = %+v", c)
	}
	os.WriteFile(e.host("/w/a"), nil, 0o644)
	deadline := time.Now().Add(5 * time.Second)
	for c.Status == Unchanged && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		c, _ = e.hub.Changes("/w", Options{}, "k", v)
	}
	if c.Status != Changed || len(c.Events) == 0 || c.Events[0].Path != "/w/a" || c.Version == v {
		t.Fatalf("after a write = %+v", c)
	}
	v2 := c.Version
	if c, _ := e.hub.Changes("/w", Options{}, "k", v2); c.Status != Unchanged {
		t.Errorf("after reading = %+v", c)
	}
	// The old cursor still replays what came after it.
	if c, _ := e.hub.Changes("/w", Options{}, "k", v); c.Status != Changed {
		t.Errorf("old cursor = %+v", c)
	}
	for _, bad := range []string{"garbage", "x.1.1", strings.SplitN(v, ".", 2)[0] + ".999.0"} {
		if c, _ := e.hub.Changes("/w", Options{}, "k", bad); c.Status != Resync {
			t.Errorf("cursor %q = %+v", bad, c)
		}
	}
	// Another key's cursor is a resync (with a watch of its own).
	if c, _ := e.hub.Changes("/w", Options{Recursive: true}, "k2", v2); c.Status != Resync {
		t.Errorf("foreign key = %+v", c)
	}
	if len(e.hub.polls) != 2 {
		t.Errorf("%d polls", len(e.hub.polls))
	}
	// Unpolled for longer than the TTL: dropped.
	e.advance(2 * time.Minute)
	if c, _ := e.hub.Changes("/w", Options{}, "k", v2); c.Status != Resync {
		t.Errorf("after the TTL = %+v", c)
	}
	if len(e.hub.polls) != 1 {
		t.Errorf("%d polls after expiry, want 1", len(e.hub.polls))
	}
	if _, err := e.hub.Changes("/missing", Options{}, "k3", ""); err == nil {
		t.Error("poll of a missing path succeeded")
	}
}
