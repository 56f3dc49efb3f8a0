package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestPreviewBoundsWhatAServiceCanMakeTheDaemonHold repeats issue 11, item
// 2: a service in a sandbox answers with a 9 MiB header and is hit by 60
// concurrent requests without any token. The daemon's peak memory must
// not grow with them (it grew by 1 GB before), every answer must be a
// clear error, and a sandbox's requests in flight are bounded: more get
// 503 PREVIEW_BUSY with Retry-After at once, while another sandbox's
// preview still answers.
func TestPreviewBoundsWhatAServiceCanMakeTheDaemonHold(t *testing.T) {
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{
		"--preview-max-inflight-per-sandbox", "8", "--preview-header-timeout", "15s",
	}})
	ctx := ctxT(t, 5*time.Minute)
	hog, other := d.Client.Sandbox("hog"), d.Client.Sandbox("bystander")
	testdaemon.StartTestServer(t, hog, "0.0.0.0:8080")
	testdaemon.StartTestServer(t, other, "0.0.0.0:8080")
	hogPort, err := hog.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	otherPort, err := other.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	c := previewClient(d)

	t.Run("huge headers", func(t *testing.T) {
		before := vmHWM(t, d.PID())
		answers := fanOut(ctx, c, hogPort.URL+"hugeheader", 60)
		for _, a := range answers {
			switch {
			case a.err != nil:
				t.Errorf("request failed: %v", a.err)
			case a.status == 502 && errorCode(a.body) == api.CodeServiceNotResponding && strings.Contains(a.body, "response headers are limited"):
			case a.status == 503 && errorCode(a.body) == api.CodePreviewBusy && a.retryAfter != "":
			default:
				t.Errorf("answer %d %q (Retry-After %q), want 502 SERVICE_NOT_RESPONDING or 503 PREVIEW_BUSY", a.status, a.body, a.retryAfter)
			}
		}
		after := vmHWM(t, d.PID())
		t.Logf("daemon peak RSS %d MiB before, %d MiB after 60 requests for 9 MiB headers", before>>20, after>>20)
		if after-before > 64<<20 {
			t.Errorf("daemon peak RSS grew by %d MiB", (after-before)>>20)
		}
	})

	t.Run("requests in flight", func(t *testing.T) {
		// Twelve requests the service never answers: eight take every
		// slot of the sandbox until the header timeout, and the other
		// four are refused at once, with Retry-After: every refusal
		// comes before the first timeout (answers come on the channel in
		// the order they arrive), whatever a loaded host adds.
		hung := fanOutAsync(ctx, c, hogPort.URL+"hang", 12)
		var timedOut, refused int
		for range 12 {
			a := <-hung
			switch {
			case a.status == 503 && errorCode(a.body) == api.CodePreviewBusy && a.retryAfter != "":
				refused++
				if refused == 1 {
					// While the sandbox is full, another one is not affected.
					if b := <-fanOutAsync(ctx, c, otherPort.URL+"ok", 1); b.status != 200 || b.body != "ok" {
						t.Errorf("another sandbox's preview: %d %q %v", b.status, b.body, b.err)
					}
				}
				if timedOut > 0 {
					t.Errorf("refusal %d came after %d hung requests timed out: it waited for them", refused, timedOut)
				}
			case a.status == 502 && errorCode(a.body) == api.CodeServiceNotResponding && strings.Contains(a.body, "no response headers within 15s"):
				timedOut++
			default:
				t.Errorf("hung request: %d %q (Retry-After %q) %v", a.status, a.body, a.retryAfter, a.err)
			}
		}
		if timedOut != 8 || refused != 4 {
			t.Errorf("%d requests timed out and %d were refused, want 8 and 4", timedOut, refused)
		}
		// The slots are free again.
		if a := <-fanOutAsync(ctx, c, hogPort.URL+"ok", 1); a.status != 200 {
			t.Errorf("after the hung requests: %d %q %v", a.status, a.body, a.err)
		}
	})
}

type answer struct {
	status     int
	body       string
	retryAfter string
	err        error
}

// fanOut sends n concurrent GETs of u and returns their answers.
func fanOut(ctx context.Context, c *http.Client, u string, n int) []answer {
	ch := fanOutAsync(ctx, c, u, n)
	out := make([]answer, n)
	for i := range out {
		out[i] = <-ch
	}
	return out
}

// fanOutAsync sends n concurrent GETs of u; their answers come on the
// channel as they arrive.
func fanOutAsync(ctx context.Context, c *http.Client, u string, n int) <-chan answer {
	ch := make(chan answer, n)
	for range n {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
			resp, err := c.Do(req)
			if err != nil {
				ch <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			ch <- answer{status: resp.StatusCode, body: string(body), retryAfter: resp.Header.Get("Retry-After")}
		}()
	}
	return ch
}

// vmHWM is a process's peak resident set, from /proc/PID/status.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("reading the peak RSS of %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM for %d", pid)
	return 0
}
