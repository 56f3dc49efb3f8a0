package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentapi"
)

// Before the boot shell runs in the user cgroups only the health check is
// answered; every other call waits for the launch and is answered after.
func TestHealthFirstHoldsOtherCallsUntilLaunched(t *testing.T) {
	teapot := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	rec := httptest.NewRecorder()
	healthFirst(make(chan struct{}), teapot).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, agentapi.PathHealth, nil))
	if rec.Code != http.StatusTeapot {
		t.Fatalf("health before the launch: status %d, want it answered", rec.Code)
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/exec"},
		{http.MethodPost, agentapi.PathHealth},
		{http.MethodGet, agentapi.PathHealth + "/x"},
		{http.MethodGet, agentapi.PathReady},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			launched := make(chan struct{})
			h := healthFirst(launched, teapot)
			done := make(chan int, 1)
			go func() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
				done <- rec.Code
			}()
			select {
			case code := <-done:
				t.Fatalf("answered (%d) before the launch", code)
			case <-time.After(50 * time.Millisecond): // never a false failure: a wrong early answer may only go unseen
			}
			close(launched)
			select {
			case code := <-done:
				if code != http.StatusTeapot {
					t.Errorf("after the launch: status %d", code)
				}
			case <-time.After(time.Minute):
				t.Fatal("not answered after the launch")
			}
		})
	}
}
