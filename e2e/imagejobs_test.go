package e2e

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// TestImageJobsAreBounded: imports (each may spool gigabytes and hold its
// connection for minutes) are bounded per tenant and in all, on a daemon
// and, in cluster mode, on the gateway: a tenant holding
// api.MaxImageJobsPerTenant uploads open gets 429 TOO_MANY_IMAGE_JOBS for
// its next, and with api.MaxImageJobs held by several tenants another
// tenant gets 503 IMAGE_JOBS_BUSY; once they end, imports are taken again.
func TestImageJobsAreBounded(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 3*time.Minute)
	ca, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "jobs-a"})
	cb, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "jobs-b"})

	busy := func(err error) bool {
		var e *client.Error
		return errors.As(err, &e) && (e.Code == api.CodeTooManyImageJobs || e.Code == api.CodeImageJobsBusy)
	}
	// hold keeps an import in flight whose upload never ends until
	// endAll: refused while the probes below hold a place, it tries
	// again.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hold := func(c *client.Client) {
		wg.Go(func() {
			for {
				pr, pw := io.Pipe()
				go func() {
					<-stop
					pw.CloseWithError(errors.New("the test ends the upload"))
				}()
				if _, err := c.ImportImage(ctx, pr, "held"); !busy(err) {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
	ended := false
	endAll := func() {
		if !ended {
			ended = true
			close(stop)
			wg.Wait()
		}
	}
	defer endAll()
	// tryImport imports an empty archive until the answer is want: the
	// held uploads reach their handlers in their own time.
	tryImport := func(what string, c *client.Client, want api.Code) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			_, err = c.ImportImage(ctx, bytes.NewReader(nil), "")
			var e *client.Error
			if errors.As(err, &e) && e.Code == want {
				return
			}
		}
		t.Errorf("%s: last answer %v, want %s", what, err, want)
	}

	for range api.MaxImageJobsPerTenant {
		hold(ca)
	}
	tryImport("a tenant past its bound", ca, api.CodeTooManyImageJobs)
	// Another tenant still imports: an empty archive is refused as such.
	tryImport("another tenant", cb, api.CodeInvalidImage)
	for range api.MaxImageJobs - api.MaxImageJobsPerTenant {
		hold(d.Client)
	}
	tryImport("another tenant past the bound in all", cb, api.CodeImageJobsBusy)
	endAll()
	tryImport("a tenant once its uploads ended", ca, api.CodeInvalidImage)
}
