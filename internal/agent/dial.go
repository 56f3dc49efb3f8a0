package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// dialTimeout bounds one connection attempt to a port in the sandbox.
const dialTimeout = 10 * time.Second

// dialPort serves GET /internal/dial?port=N, an internal route the daemon never
// forwards: it connects to port N inside the sandbox and then turns the
// request's connection into that TCP stream (101 Switching Protocols,
// then raw bytes both ways). The daemon's preview proxy uses it for
// sandboxes on gVisor.
//
// Why: a gVisor sandbox's network stack is gVisor's netstack, inside the
// Sentry. The host kernel's side of the sandbox's network namespace, where
// the daemon dials for crun and runc sandboxes, has neither the sandbox's
// loopback nor its listening sockets; only a process in the sandbox can
// reach them.
func (s *server) dialPort(w http.ResponseWriter, r *http.Request) {
	port, err := strconv.Atoi(r.URL.Query().Get("port"))
	if err != nil || port < 1 || port > 65535 {
		http.Error(w, "port: want 1 to 65535", http.StatusBadRequest)
		return
	}
	target, err := dialInside(r.Context(), port)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer target.Close()
	// The controller finds the connection below wrappers (the request log's).
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "connection cannot be taken over", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Time{}) // the server's deadlines do not apply to the stream
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"); err != nil {
		return
	}
	splice(conn, buf.Reader, target)
}

// dialInside connects to port on 127.0.0.1 (which also reaches services
// bound to 0.0.0.0), then ::1, then the sandbox's own addresses, as the
// daemon does for other runtimes.
func dialInside(ctx context.Context, port int) (net.Conn, error) {
	hosts := []string{"127.0.0.1", "::1"}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				hosts = append(hosts, ipn.IP.String())
			}
		}
	}
	d := net.Dialer{Timeout: dialTimeout}
	var first error
	for _, h := range hosts {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, fmt.Errorf("nothing answers on port %d in the sandbox: %w", port, errors.Unwrap(first))
}

// splice copies both ways until both directions are done, passing on each
// side's end of input as a half-close.
func splice(conn net.Conn, fromConn io.Reader, target net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(target, fromConn)
		if tc, ok := target.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		io.Copy(conn, target)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	wg.Wait()
}
