package sandbox

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
)

// agentOnSignal stands for the runtime and a restored agent: the agent's
// socket answers from the start (an agent that woke by itself) or only
// once SignalInit sent agentapi.ResumeSignal (an agent from before).
type agentOnSignal struct {
	t      *testing.T
	socket string

	mu      sync.Mutex
	signals int
	srv     *http.Server
}

func (a *agentOnSignal) serve() {
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		a.t.Error(err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+agentapi.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.AgentHealth{ProtocolVersion: api.ProtocolVersion, PID: 1})
	})
	a.srv = &http.Server{Handler: mux}
	go a.srv.Serve(ln)
	a.t.Cleanup(func() { a.srv.Close() })
}

func (a *agentOnSignal) SignalInit(ctx context.Context, id string, sig syscall.Signal) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sig != agentapi.ResumeSignal {
		a.t.Errorf("signal %v, want %v", sig, agentapi.ResumeSignal)
	}
	a.signals++
	if a.srv == nil {
		a.serve()
	}
	return nil
}

// TestWakeRestored: a restored agent that binds its socket by itself is
// not signalled; one that does not is, after selfWakeGrace, and answers.
func TestWakeRestored(t *testing.T) {
	conns := newAgentConns()
	for _, selfWakes := range []bool{true, false} {
		socket := filepath.Join(t.TempDir(), "agent.sock")
		a := &agentOnSignal{t: t, socket: socket}
		if selfWakes {
			a.serve()
		}
		inst, err := newInstance("c", os.Getpid(), NetworkEndpoint{}, conns, socket)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		w := watchSocketDir(filepath.Dir(socket))
		err = wakeRestored(ctx, a, inst, w)
		w.close()
		cancel()
		conns.close()
		if err != nil {
			t.Errorf("self-waking %v: %v", selfWakes, err)
		}
		want := 1
		if selfWakes {
			want = 0
		}
		if a.signals != want {
			t.Errorf("self-waking %v: %d signals, want %d", selfWakes, a.signals, want)
		}
	}
}
