package agent

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
)

// The daemon's typed client against the real agent: every internal route
// the warm pool's naming call among them.
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
	// The default shell started under the placeholder name; its next
	// command sees the new one.
	ta.mustCall(t, 200, "POST", "/exec", api.ExecRequest{Command: "true"}, nil)
	if err := c.Name(ctx, "named-by-the-pool"); err != nil {
		t.Fatal(err)
	}
	var env api.EnvInfo
	ta.mustCall(t, 200, "GET", "/env", nil, &env)
	if len(env.Env) != 1 || env.Env[0] != "HOSTNAME" {
		t.Errorf("sandbox env after Name: %+v", env)
	}
	var res api.ExecResult
	ta.mustCall(t, 200, "POST", "/exec", api.ExecRequest{Command: "echo $HOSTNAME"}, &res)
	if res.Stdout != "named-by-the-pool\n" {
		t.Errorf("a command sees HOSTNAME=%q", res.Stdout)
	}

	var se *agentapi.StatusError
	// A name that is no environment value is refused.
	if err := c.Name(ctx, ""); !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Errorf("Name(\"\"): %v, want a 400 StatusError", err)
	}

	// A shutdown without a reason is refused before anything stops.
	if err := c.Shutdown(ctx, ""); !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Errorf("Shutdown without a reason: %v, want a 400 StatusError", err)
	}
	if err := c.Shutdown(ctx, "slept"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
