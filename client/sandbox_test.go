package client

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sandboxd/sandboxd/api"
)

// ensureCounter is a fake daemon that counts ensure (PUT) and exec calls
// and records the options of every PUT.
type ensureCounter struct {
	mu   sync.Mutex
	puts []api.SandboxOptions

	execs atomic.Int64
	// failPuts makes that many PUTs answer 503 first.
	failPuts atomic.Int64
	// putGate, when not nil, holds every PUT until it is closed;
	// putArrived is then closed when the first PUT arrives.
	putGate    chan struct{}
	putArrived chan struct{}
	arriveOnce sync.Once
}

func (f *ensureCounter) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		opts := decodeBody[api.SandboxOptions](t, r)
		if f.putGate != nil {
			f.arriveOnce.Do(func() { close(f.putArrived) })
			<-f.putGate
		}
		f.mu.Lock()
		f.puts = append(f.puts, opts)
		f.mu.Unlock()
		if f.failPuts.Add(-1) >= 0 {
			writeError(w, 503, api.CodeSandboxUnavailable, "starting up", nil)
			return
		}
		writeJSON(w, 201, sandboxJSON(r.PathValue("id"), true))
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
		f.execs.Add(1)
		writeJSON(w, 200, api.ExecResult{Success: true, Stdout: "ok\n"})
	})
	mux.HandleFunc("DELETE /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, sandboxJSON(r.PathValue("id"), false))
	})
	return mux
}

func (f *ensureCounter) putCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.puts)
}

func TestHandleWithoutOptionsDoesNotEnsure(t *testing.T) {
	f := &ensureCounter{}
	c := newTestClient(t, f.handler(t))
	sb := c.Sandbox("demo")
	for range 3 {
		if _, err := sb.Exec(t.Context(), "true"); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.putCount(); n != 0 {
		t.Errorf("%d PUTs for a handle without options, want 0 (the daemon creates on first use)", n)
	}
}

func TestEnsureOnceUnderConcurrency(t *testing.T) {
	f := &ensureCounter{putGate: make(chan struct{}), putArrived: make(chan struct{})}
	c := newTestClient(t, f.handler(t))
	sb := c.Sandbox("demo", WithImage("base"), WithLabels(map[string]string{"team": "a"}))

	const callers = 16
	var wg, started sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		started.Add(1)
		wg.Go(func() {
			started.Done()
			_, err := sb.Exec(t.Context(), "true")
			errs <- err
		})
	}
	// Hold the one PUT until every caller has started, so that they pile up
	// behind it.
	<-f.putArrived
	started.Wait()
	close(f.putGate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Exec: %v", err)
		}
	}
	if n := f.putCount(); n != 1 {
		t.Errorf("%d PUTs, want exactly 1", n)
	}
	if n := f.execs.Load(); n != callers {
		t.Errorf("%d execs, want %d", n, callers)
	}
	want := api.SandboxOptions{Image: "base", Labels: map[string]string{"team": "a"}}
	if diff := cmp.Diff(want, f.puts[0]); diff != "" {
		t.Errorf("PUT body (-want +got):\n%s", diff)
	}
}

func TestEnsureRetriedAfterFailure(t *testing.T) {
	f := &ensureCounter{}
	f.failPuts.Store(1)
	c := newTestClient(t, f.handler(t))
	sb := c.Sandbox("demo", WithImage("base"))

	_, err := sb.Exec(t.Context(), "true")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first Exec: %v, want the PUT's ErrUnavailable", err)
	}
	if n := f.execs.Load(); n != 0 {
		t.Fatalf("exec was sent although the options were not applied")
	}
	if _, err := sb.Exec(t.Context(), "true"); err != nil {
		t.Fatalf("second Exec: %v", err)
	}
	if _, err := sb.Exec(t.Context(), "true"); err != nil {
		t.Fatalf("third Exec: %v", err)
	}
	if n := f.putCount(); n != 2 {
		t.Errorf("%d PUTs, want 2 (one failed, one retried, none after success)", n)
	}
}

func TestSandboxOptionsBody(t *testing.T) {
	tests := []struct {
		name string
		opts []SandboxOption
		want api.SandboxOptions
	}{
		{"none", nil, api.SandboxOptions{}},
		{
			"each option",
			[]SandboxOption{
				WithImage("base"),
				WithEnv(map[string]string{"A": "1"}),
				WithEnv(map[string]string{"B": "2"}),
				WithLabels(map[string]string{"k": "v"}),
				WithLimits(api.Limits{MemoryBytes: 512 << 20, MilliCPU: 1500, Pids: 100}),
				WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet, AllowCIDRs: []string{"10.0.0.1/32"}}),
			},
			api.SandboxOptions{
				Image:   "base",
				Env:     map[string]string{"A": "1", "B": "2"},
				Labels:  map[string]string{"k": "v"},
				Limits:  &api.Limits{MemoryBytes: 512 << 20, MilliCPU: 1500, Pids: 100},
				Network: &api.NetworkOptions{Mode: api.NetworkInternet, AllowCIDRs: []string{"10.0.0.1/32"}},
			},
		},
		{
			"WithOptions replaces, later options add",
			[]SandboxOption{
				WithImage("lost"),
				WithOptions(api.SandboxOptions{Image: "base", Labels: map[string]string{"a": "b"}}),
				WithLabels(map[string]string{"c": "d"}),
			},
			api.SandboxOptions{Image: "base", Labels: map[string]string{"a": "b", "c": "d"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got api.SandboxOptions
			mux := http.NewServeMux()
			mux.HandleFunc("PUT /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
				got = decodeBody[api.SandboxOptions](t, r)
				writeJSON(w, 201, sandboxJSON(r.PathValue("id"), true))
			})
			c := newTestClient(t, mux)
			sb, err := c.Sandbox("demo", tt.opts...).Ensure(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !sb.Created || sb.ID != "demo" {
				t.Errorf("Ensure = %+v, want demo, created", sb)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PUT body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOptionsAreCopied(t *testing.T) {
	env := map[string]string{"A": "1"}
	cidrs := []string{"10.0.0.1/32"}
	opt := WithEnv(env)
	netOpt := WithNetwork(api.NetworkOptions{AllowCIDRs: cidrs})
	env["A"] = "changed"
	cidrs[0] = "changed"
	var o api.SandboxOptions
	opt.applySandbox(&o)
	netOpt.applySandbox(&o)
	if o.Env["A"] != "1" || o.Network.AllowCIDRs[0] != "10.0.0.1/32" {
		t.Errorf("options changed with the caller's map or slice: %+v", o)
	}
}

func TestInvalidIDIsRefusedWithoutRequest(t *testing.T) {
	var requests atomic.Int64
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		writeJSON(w, 200, api.ExecResult{})
	}))
	for _, id := range []string{"", "Demo", "-a", "a_b", "../etc", "a/b"} {
		sb := c.Sandbox(id, WithImage("base"))
		calls := map[string]error{}
		_, calls["Ensure"] = sb.Ensure(t.Context())
		_, calls["Info"] = sb.Info(t.Context())
		_, calls["Exec"] = sb.Exec(t.Context(), "true")
		_, calls["ExecStream"] = sb.ExecStream(t.Context(), "true")
		calls["Destroy"] = sb.Destroy(t.Context())
		for name, err := range calls {
			var e *Error
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &e) || e.Code != api.CodeInvalidSandboxID {
				t.Errorf("%s on %q: %v, want INVALID_SANDBOX_ID", name, id, err)
			}
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent for invalid IDs, want 0", n)
	}
}

func TestDestroy(t *testing.T) {
	f := &ensureCounter{}
	mux := http.NewServeMux()
	mux.Handle("/", f.handler(t))
	mux.HandleFunc("DELETE /v1/sandboxes/gone", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, 404, api.CodeSandboxNotFound, "no sandbox gone", nil)
	})
	c := newTestClient(t, mux)

	if err := c.Sandbox("gone").Destroy(t.Context()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Destroy of an unknown sandbox: %v, want ErrNotFound", err)
	}

	sb := c.Sandbox("demo", WithImage("base"))
	if _, err := sb.Exec(t.Context(), "true"); err != nil {
		t.Fatal(err)
	}
	if err := sb.Destroy(t.Context()); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if n := f.putCount(); n != 1 {
		t.Fatalf("%d PUTs before re-use, want 1 (Destroy must not create)", n)
	}
	if _, err := sb.Exec(t.Context(), "true"); err != nil {
		t.Fatal(err)
	}
	if n := f.putCount(); n != 2 {
		t.Errorf("%d PUTs, want 2: the handle re-creates with its options after Destroy", n)
	}
}

func TestInfo(t *testing.T) {
	f := &ensureCounter{}
	c := newTestClient(t, f.handler(t))
	sb, err := c.Sandbox("demo").Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID != "demo" || sb.Status != api.StatusRunning {
		t.Errorf("Info = %+v", sb)
	}
	if n := f.putCount(); n != 0 {
		t.Errorf("Info on a handle without options sent %d PUTs", n)
	}
}
