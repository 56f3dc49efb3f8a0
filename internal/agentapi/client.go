package agentapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// maxAnswerBytes bounds what the client reads of an internal route's
// answer: they are small JSON objects.
const maxAnswerBytes = 64 << 10

// StatusError is an agent's answer with an unexpected HTTP status.
type StatusError struct {
	Path   string
	Status int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("agent %s: status %d", e.Path, e.Status)
}

// Client calls one agent over its transport (the sandbox's socket). It
// holds no connection of its own; the transport pools them.
type Client struct {
	transport http.RoundTripper
}

// NewClient returns a client of the agent behind transport.
func NewClient(transport http.RoundTripper) *Client { return &Client{transport: transport} }

// Health answers whether the agent is up and which protocol it speaks. An
// agent of an older protocol, which has no such route, answers a
// StatusError with status 404.
func (c *Client) Health(ctx context.Context) (api.AgentHealth, error) {
	var h api.AgentHealth
	err := c.do(ctx, http.MethodGet, PathHealth, nil, http.StatusOK, &h)
	return h, err
}

// Activity asks whether anything the agent runs on its own keeps the
// sandbox busy.
func (c *Client) Activity(ctx context.Context) (api.AgentActivity, error) {
	var a api.AgentActivity
	err := c.do(ctx, http.MethodGet, PathActivity, nil, http.StatusOK, &a)
	return a, err
}

// Shutdown asks the agent to stop, saying why ("slept", "stopped"); its
// records of the processes it kills keep the reason. It answers before
// the agent is gone.
func (c *Client) Shutdown(ctx context.Context, reason string) error {
	return c.do(ctx, http.MethodPost, PathShutdown, &api.AgentShutdownRequest{Reason: reason}, http.StatusAccepted, nil)
}

// Suspend asks the agent to close its socket and every connection to it
// before a gVisor checkpoint; it answers first. ResumeSignal, sent
// through the runtime, makes it bind the socket again. name, when not "",
// is a name the agent has not been told yet (NameHeader): a checkpoint
// must not keep the warm pool's placeholder.
func (c *Client) Suspend(ctx context.Context, name string) error {
	var header http.Header
	if name != "" {
		header = http.Header{NameHeader: {name}}
	}
	return c.doWith(ctx, http.MethodPost, PathSuspend, header, nil, http.StatusAccepted, nil)
}

// Ready waits until the agent has finished starting up: its default
// session's shell runs and the image's main command was started. Until
// then the agent answers calls, but its first command waits for the shell
// and competes with the rest of its start-up for the CPU. An agent
// without the route (older than the daemon) counts as ready.
func (c *Client) Ready(ctx context.Context) error {
	err := c.do(ctx, http.MethodGet, PathReady, nil, http.StatusNoContent, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// WarmShell runs the empty command `:` in the default session, so that
// the next command finds a shell, an agent and a connection that have
// each served one already (the daemon's warm pool: a sandbox's first
// command took twice as long as its later ones). It runs it twice: as a
// short command (its text in the shell's frame), the way of a pool
// sandbox's first call when it is short (its new HOSTNAME goes in the
// frame as the text's first line), and with a per-call variable, the way
// of one that is long or brings its own environment (a wrapper file the
// shell sources, then the command file). It leaves nothing a caller
// could see: no output, no variable (the wrapper unsets it again), no
// state.
func (c *Client) WarmShell(ctx context.Context) error {
	for _, req := range []*api.ExecRequest{{Command: ":"}, {Command: ":", Env: map[string]string{"SANDBOXD_WARM": "1"}}} {
		var res api.ExecResult
		if err := c.do(ctx, http.MethodPost, "/exec", req, http.StatusOK, &res); err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("agent /exec: `:` exited %d", res.ExitCode)
		}
	}
	return nil
}

// PrepareLogin makes the agent of a warm sandbox ready for login
// processes of user in its home (the E2B layer's commands): the account
// exists and the login shell they are forked from runs. It returns once
// that shell is ready. An agent older than this call answers 404, which
// costs only the speed.
func (c *Client) PrepareLogin(ctx context.Context, user string) error {
	return c.do(ctx, http.MethodPost, PathLogin, &api.AgentLoginRequest{User: user}, http.StatusNoContent, nil)
}

// Fork gives the agent of a sandbox restored from another's memory
// snapshot its own base environment, dropping the parent's API-set one.
func (c *Client) Fork(ctx context.Context, env []string) error {
	return c.do(ctx, http.MethodPost, PathFork, &api.AgentForkRequest{Env: env}, http.StatusNoContent, nil)
}

// do sends one call with body as JSON (none when nil) and decodes an
// answer of status want into out (skipped when nil).
func (c *Client) do(ctx context.Context, method, path string, body any, want int, out any) error {
	return c.doWith(ctx, method, path, nil, body, want, out)
}

// doWith is do with header added to the request.
func (c *Client) doWith(ctx context.Context, method, path string, header http.Header, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("agent %s: encoding the request: %w", path, err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return fmt.Errorf("agent %s: %w", path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.transport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("agent %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBytes))
		return &StatusError{Path: path, Status: resp.StatusCode}
	}
	if out == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBytes))
	} else {
		err = json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(out)
	}
	if err != nil {
		return fmt.Errorf("agent %s: reading the answer: %w", path, err)
	}
	return nil
}

// Dial connects to port inside the sandbox through the agent (GET
// PathDial, upgraded to a raw stream), over conn, a fresh connection to
// the agent's socket, which it takes over: on success the returned
// connection wraps it, on failure it is closed. Nothing listening on the
// port is an error matching syscall.ECONNREFUSED, as a direct dial's. The upgrade must complete within
// ctx's deadline (30 s at most); the stream then has none.
func Dial(ctx context.Context, conn net.Conn, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		conn.Close()
		return nil, fmt.Errorf("agent dial: port %d out of range", port)
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	req := "GET " + PathDial + "?port=" + strconv.Itoa(port) +
		" HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent dial: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent dial: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		conn.Close()
		if resp.StatusCode == http.StatusBadGateway {
			return nil, fmt.Errorf("%s: %w", strings.TrimSpace(string(msg)), syscall.ECONNREFUSED)
		}
		return nil, &StatusError{Path: PathDial, Status: resp.StatusCode}
	}
	conn.SetDeadline(time.Time{})
	return &bufferedConn{Conn: conn, r: br}, nil
}

// bufferedConn is a connection whose first bytes may already sit in r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite passes a half-close on to the agent.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
