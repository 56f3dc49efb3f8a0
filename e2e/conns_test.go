package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestHeldConnectionsCannotTakeTheDaemonsDescriptors: anyone who reaches
// the API or the preview listener, without a token, could send one
// request per connection and keep each open for ever, until the daemon had
// no descriptor left for its sandboxes, agents and files. A listener now
// keeps at most a quarter of RLIMIT_NOFILE open (512 of 2,048 here) and
// closes a new connection past that at once; once the holder lets go, the
// API answers again.
func TestHeldConnectionsCannotTakeTheDaemonsDescriptors(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	const nofile, limit = 2048, 2048 / 4
	previewAddr := testdaemon.FreeAddr(t)
	d := testdaemon.Start(t, testdaemon.Options{
		Args: []string{"--preview-listen", previewAddr},
		Via:  []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--"},
	})
	u, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ name, addr string }{{"api", u.Host}, {"preview", previewAddr}} {
		t.Run(l.name, func(t *testing.T) {
			before := openFDs(t, d.PID())
			held := holdConnections(t, "", l.addr, limit+200)
			after := openFDs(t, d.PID())
			t.Logf("%d of %d connections answered and held; the daemon's descriptors %d -> %d", len(held), limit+200, before, after)
			if len(held) > limit || after-before > limit+16 {
				t.Errorf("the daemon holds %d connections (%d more descriptors), want at most %d", len(held), after-before, limit)
			}
			for _, c := range held {
				c.Close()
			}
			var lastErr error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if _, lastErr = d.Client.List(ctxT(t, 5*time.Second)); lastErr == nil {
					return
				}
			}
			t.Errorf("the API does not answer once the connections are closed: %v", lastErr)
		})
	}
}

// TestOneSourceCannotHoldAListenersConnections: one machine that re-sends
// a request on each of its connections more often than the idle timeout
// (2 minutes) could keep a listener at its bound, and every new client
// would be closed. One source address keeps at most --max-conns-per-source
// open (64 here) on each listener; another source is still answered, and
// an exempt one (a reverse proxy in front) holds more.
func TestOneSourceCannotHoldAListenersConnections(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	const perSource, tries = 64, 64 + 36
	previewAddr := testdaemon.FreeAddr(t)
	d := testdaemon.Start(t, testdaemon.Options{
		Args: []string{"--preview-listen", previewAddr, "--max-conns-per-source", fmt.Sprint(perSource),
			"--conns-per-source-exempt", "127.0.0.3"},
	})
	u, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ name, addr string }{{"api", u.Host}, {"preview", previewAddr}} {
		t.Run(l.name, func(t *testing.T) {
			held := holdConnections(t, "127.0.0.2", l.addr, tries)
			t.Logf("127.0.0.2: %d of %d connections answered and held", len(held), tries)
			if len(held) != perSource {
				t.Errorf("one source holds %d connections, want %d", len(held), perSource)
			}
			// Another source (the test's client, from 127.0.0.1) is
			// answered while the first holds its most.
			if _, err := d.Client.List(ctxT(t, 10*time.Second)); err != nil {
				t.Errorf("another source is not answered: %v", err)
			}
			if exempt := holdConnections(t, "127.0.0.3", l.addr, tries); len(exempt) != tries {
				t.Errorf("an exempt source holds %d of %d connections, want all", len(exempt), tries)
			}
			// Once the source lets one go, it is answered again.
			held[0].Close()
			var again []net.Conn
			for deadline := time.Now().Add(10 * time.Second); len(again) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				again = holdConnections(t, "127.0.0.2", l.addr, 1)
			}
			if len(again) == 0 {
				t.Error("the source is not answered after one of its connections closed")
			}
		})
	}
}

// holdConnections opens n connections to addr from the address from (""
// any), sends one request on each and returns those that were answered,
// left open; the others are closed.
func holdConnections(t *testing.T, from, addr string, n int) []net.Conn {
	t.Helper()
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	var dialer net.Dialer
	if from != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	for range n {
		c, err := dialer.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			continue
		}
		resp.Body.Close()
		held = append(held, c)
	}
	return held
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
