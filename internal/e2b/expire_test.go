package e2b

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
)

// fakeAPI is a hand-written stand-in for the daemon's own API, recording
// the calls the layer makes; the real API is exercised by e2e.TestE2B.
type fakeAPI struct {
	mu    sync.Mutex
	calls []string
	// fail answers every call with this error when set.
	fail *api.Error
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path+" "+string(body))
	fail := f.fail
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case fail != nil:
		w.WriteHeader(fail.Code.HTTPStatus())
		json.NewEncoder(w).Encode(fail)
	case r.URL.Path == "/v1/sandboxes/box/pause" && string(body) == "{}":
		w.WriteHeader(http.StatusNotImplemented)
		json.NewEncoder(w).Encode(api.Errorf(api.CodeMemorySnapshotUnsupported, "no memory snapshots here"))
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Write([]byte("{}"))
	}
}

func (f *fakeAPI) took() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.calls
	f.calls = nil
	return out
}

func TestExpire(t *testing.T) {
	fake := &fakeAPI{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	now := time.Unix(1_800_000_000, 0).UTC()
	s, err := New(Options{Transport: srv.Client().Transport, BaseURL: srv.URL, Token: "tok", StateDir: t.TempDir(),
		Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []entry{
		{ID: "box", EndAt: now.Add(time.Second), AutoPause: true},
		{ID: "gone", EndAt: now.Add(time.Second)},
		{ID: "later", EndAt: now.Add(time.Hour)},
	} {
		if _, _, err := s.table.update(e.ID, true, func(x *entry) { *x = e }); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	s.expire(ctx)
	if got := fake.took(); len(got) != 0 {
		t.Fatalf("before any deadline: %q", got)
	}

	now = now.Add(2 * time.Second)
	s.expire(ctx)
	// The pause asks for memory first, then falls back to files only; the
	// other sandbox is destroyed; the third is left alone.
	want := []string{
		"POST /v1/sandboxes/box/pause {}",
		`POST /v1/sandboxes/box/pause {"filesystemOnly":true}`,
		"DELETE /v1/sandboxes/gone ",
	}
	got := fake.took()
	if len(got) == 3 && got[0] == want[2] { // map order of expired entries
		got = append(got[1:], got[0])
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if e, ok := s.table.get("box"); !ok || !e.Paused {
		t.Errorf("box after its timeout: %+v %v", e, ok)
	}
	if _, ok := s.table.get("gone"); ok {
		t.Error("a killed sandbox is still in the table")
	}
	// A paused sandbox's deadline does not fire again.
	now = now.Add(time.Minute)
	s.expire(ctx)
	if got := fake.took(); len(got) != 0 {
		t.Fatalf("after pausing: %q", got)
	}

	// A failing end is retried, but not before expireRetry.
	if _, _, err := s.table.update("later", false, func(e *entry) { e.EndAt = now }); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	fake.fail = api.Errorf(api.CodeSandboxUnavailable, "runtime failing")
	fake.mu.Unlock()
	s.expire(ctx)
	s.expire(ctx)
	if got := fake.took(); len(got) != 1 {
		t.Fatalf("first attempt and no immediate retry: %q", got)
	}
	now = now.Add(expireRetry)
	fake.mu.Lock()
	fake.fail = nil
	fake.mu.Unlock()
	s.expire(ctx)
	if got := fake.took(); len(got) != 1 {
		t.Fatalf("retry: %q", got)
	}
	if _, ok := s.table.get("later"); ok {
		t.Error("the retried kill did not remove the sandbox")
	}
}
