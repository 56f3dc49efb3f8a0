package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
)

// The daemon's typed client against the real agent: every internal route
// and the header that names a warm sandbox's agent.
func TestDaemonClient(t *testing.T) {
	ta := startAgent(t)
	c := agentapi.NewClient(ta.client.Transport)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	h, err := c.Health(ctx)
	if err != nil || h.ProtocolVersion != api.ProtocolVersion || h.Version != "test" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	a, err := c.Activity(ctx)
	if err != nil || a.Busy {
		t.Fatalf("Activity = %+v, %v; want idle", a, err)
	}
	// The default shell started under the placeholder name; the call
	// that carries the name already runs under it.
	ta.mustCall(t, 200, "POST", "/exec", api.ExecRequest{Command: "true"}, nil)
	named := func(name, command string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://agent/exec", strings.NewReader(`{"command":"`+command+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(agentapi.NameHeader, name)
		resp, err := ta.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res api.ExecResult
		json.NewDecoder(resp.Body).Decode(&res)
		return resp.StatusCode, res.Stdout
	}
	// A name that is no environment value is refused, and names nothing.
	if status, _ := named(strings.Repeat("x", 254), "true"); status != http.StatusBadRequest {
		t.Errorf("a 254-byte name: status %d, want 400", status)
	}
	if status, out := named("named-by-the-pool", "echo $HOSTNAME"); status != 200 || out != "named-by-the-pool\n" {
		t.Errorf("the naming call: status %d, HOSTNAME=%q", status, out)
	}
	var env api.EnvInfo
	ta.mustCall(t, 200, "GET", "/env", nil, &env)
	if len(env.Env) != 1 || env.Env[0] != "HOSTNAME" {
		t.Errorf("sandbox env after the naming call: %+v", env)
	}
	// An agent is named once: a second name (a call sent before the
	// first was answered) changes nothing.
	if status, out := named("another", "echo $HOSTNAME"); status != 200 || out != "named-by-the-pool\n" {
		t.Errorf("a second naming call: status %d, HOSTNAME=%q", status, out)
	}

	var se *agentapi.StatusError
	// A shutdown without a reason is refused before anything stops.
	if err := c.Shutdown(ctx, ""); !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Errorf("Shutdown without a reason: %v, want a 400 StatusError", err)
	}
	if err := c.Shutdown(ctx, "slept"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
