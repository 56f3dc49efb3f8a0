package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// updateSandbox changes the settings that may change after creation.
func (s *Server) updateSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var u api.SandboxUpdate
	if e := s.decodeJSON(w, r, &u, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	var upd sandbox.Update
	if u.SleepAfter != nil {
		d := time.Duration(*u.SleepAfter) * time.Millisecond
		upd.SleepAfter = &d
	}
	upd.KeepAlive = u.KeepAlive
	inf, err := s.opts.Manager.Update(r.Context(), id, upd)
	s.answerSandbox(w, r, inf, err)
}

// lifecycleAction serves POST /v1/sandboxes/{id}/stop, /start, /restart
// and /renew. They do not create unknown sandboxes.
func (s *Server) lifecycleAction(action func(context.Context, string) (sandbox.Info, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := sandboxID(w, r)
		if !ok {
			return
		}
		inf, err := action(r.Context(), id)
		s.answerSandbox(w, r, inf, err)
	}
}

func (s *Server) answerSandbox(w http.ResponseWriter, r *http.Request, inf sandbox.Info, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toWire(inf))
}

// eventsKeepalive is how often an idle event stream gets a comment.
const eventsKeepalive = 15 * time.Second

// events streams lifecycle events (SSE) until the client goes away,
// optionally for one sandbox (?sandbox=ID). A client too slow to keep up
// gets an error event and the end of the stream.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	only := r.URL.Query().Get("sandbox")
	if only != "" {
		if err := api.ValidateSandboxID(only); err != nil {
			writeAPIError(w, err.(*api.Error))
			return
		}
		only = scopeName(r, only)
	}
	caller := callerOf(r)
	sub := s.opts.Manager.Events().Subscribe()
	defer sub.Cancel()
	sw := sse.NewWriter(w)
	w.WriteHeader(http.StatusOK)
	sw.Keepalive()
	tick := time.NewTicker(eventsKeepalive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if sw.Keepalive() != nil {
				return
			}
		case ev, ok := <-sub.C:
			if !ok {
				sw.Send(api.EventError, api.ExecEvent{Type: api.EventError, Timestamp: time.Now().UTC(),
					Code: api.CodeResourceExhausted, Message: "this client fell too far behind the event stream; reconnect"})
				return
			}
			if (only != "" && ev.SandboxID != only) || !caller.Owns(ev.SandboxID) {
				continue
			}
			if sw.Send(ev.Type, api.LifecycleEvent{Type: ev.Type, SandboxID: tenant.Local(ev.SandboxID), Tenant: wireTenant(ev.SandboxID),
				Status: api.SandboxStatus(ev.Status), Reason: ev.Reason, Timestamp: ev.Time}) != nil {
				return
			}
		}
	}
}

// metricsPage serves the Prometheus text exposition: every series for
// admins, and for a tenant (or an admin acting as one) only the series
// labelled with that tenant or one of its sandboxes (its usage, its
// sandboxes' egress denials), sandboxes by their local IDs. Daemon-wide
// metrics (host cgroups, all sandboxes by status, latencies) say
// something of other tenants, so a tenant sees none of them.
func (s *Server) metricsPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	ns := callerOf(r).Namespace()
	if ns == "" {
		s.opts.Metrics.Write(w)
		return
	}
	s.opts.Metrics.WriteView(w, func(label, value string) (string, bool) {
		switch label {
		case "tenant":
			return value, value == ns
		case "sandbox":
			return tenant.Local(value), tenant.Of(value) == ns
		}
		return "", false
	})
}

func retryAfter(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(int(sandbox.RetryAfter.Seconds())))
}
