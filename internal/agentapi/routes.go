// Package agentapi is the daemon ↔ agent protocol: the agent's one route
// table, with what the daemon may do with each route, and the daemon's
// typed client of the agent's internal routes. The agent serves exactly
// this table; the daemon forwards a public API call only when it matches a
// public route of it. It must never hold handlers or daemon state: both
// binaries import it, and the agent stays small and static.
package agentapi

import (
	"strings"
	"syscall"
)

// InternalPrefix starts the path of every internal route. The daemon never
// forwards a path under it, whatever the table says, so a route added
// there is internal by construction, never public by default.
const InternalPrefix = "/internal/"

// Paths of the internal routes, which only the daemon calls (Client).
const (
	PathHealth   = InternalPrefix + "health"
	PathActivity = InternalPrefix + "activity"
	PathShutdown = InternalPrefix + "shutdown"
	PathDial     = InternalPrefix + "dial"
	PathSuspend  = InternalPrefix + "suspend"
	PathFork     = InternalPrefix + "fork"
	PathReady    = InternalPrefix + "ready"
	PathLogin    = InternalPrefix + "login"
)

// NameHeader carries, on the daemon's first calls to the agent of a warm
// sandbox it just handed out, the name it was handed out under: the agent
// sets HOSTNAME in the sandbox's environment before it serves the call, so
// the name costs no round trip of its own. The agent takes a name once in
// its life. The daemon sets it only on calls it makes itself and strips it
// from every call it forwards, so no API caller can rename a sandbox.
const NameHeader = "X-Sandboxd-Agent-Name"

// ResumeSignal, sent to the agent (init) through the runtime, makes an
// agent that let go of its socket for a checkpoint (PathSuspend) bind it
// again. Root code in the sandbox can send it too; all that can do is make
// a checkpoint of its own sandbox fail.
const ResumeSignal = syscall.SIGUSR2

// Route is one route of the agent, with what the daemon does with it.
type Route struct {
	// Method and Path form the pattern both sides route by ("POST",
	// "/processes/{pid}/kill"): {name} matches one non-empty segment. A GET
	// route also answers HEAD.
	Method, Path string
	// Public routes are forwarded from /v1/sandboxes/{id}<Path>; the
	// others are internal (their path is under InternalPrefix).
	Public bool
	// Bulk routes move file contents: the daemon copies their bodies with
	// large buffers, which a stream would hold for its whole life.
	Bulk bool
	// Stream routes answer with an event stream (after any JSON error
	// answer), which ends with exactly one terminal event (see Terminal);
	// the daemon appends an error event when the agent's stream ends
	// without one.
	Stream bool
	// Idempotent routes only read (or may run twice with the same effect):
	// a call whose connection to the agent broke before any answer is
	// sent again. Other calls are sent again only when they cannot have
	// run: no connection was made, or the agent died with all it ran.
	Idempotent bool
	// Metric is the kind under which sandboxd_exec_total and
	// sandboxd_exec_seconds count the call; empty for none.
	Metric string
}

// Routes is the agent's API. Every feature that lives in the sandbox adds
// its routes here and its handlers to the agent's table (which must match
// this one: the agent refuses to start otherwise).
var Routes = []Route{
	{Method: "GET", Path: PathHealth, Idempotent: true},
	{Method: "GET", Path: PathActivity, Idempotent: true},
	{Method: "POST", Path: PathShutdown},
	{Method: "GET", Path: PathDial},
	{Method: "POST", Path: PathSuspend},
	{Method: "POST", Path: PathFork},
	{Method: "GET", Path: PathReady, Idempotent: true},
	{Method: "POST", Path: PathLogin, Idempotent: true},

	{Method: "POST", Path: "/exec", Public: true, Metric: "buffered"},
	{Method: "POST", Path: "/exec/stream", Public: true, Stream: true, Metric: "stream"},
	{Method: "GET", Path: "/env", Public: true, Idempotent: true},
	{Method: "POST", Path: "/env", Public: true, Idempotent: true},
	{Method: "POST", Path: "/sessions", Public: true},
	{Method: "GET", Path: "/sessions", Public: true, Idempotent: true},
	{Method: "GET", Path: "/sessions/{sid}", Public: true, Idempotent: true},
	{Method: "DELETE", Path: "/sessions/{sid}", Public: true},
	{Method: "POST", Path: "/sessions/{sid}/env", Public: true, Idempotent: true},
	{Method: "POST", Path: "/processes", Public: true},
	{Method: "POST", Path: "/processes/start/stream", Public: true, Stream: true},
	{Method: "GET", Path: "/processes", Public: true, Idempotent: true},
	{Method: "DELETE", Path: "/processes", Public: true},
	{Method: "GET", Path: "/processes/{pid}", Public: true, Idempotent: true},
	{Method: "DELETE", Path: "/processes/{pid}", Public: true},
	{Method: "POST", Path: "/processes/{pid}/kill", Public: true},
	{Method: "GET", Path: "/processes/{pid}/logs", Public: true, Idempotent: true},
	{Method: "GET", Path: "/processes/{pid}/logs/stream", Public: true, Stream: true, Idempotent: true},
	{Method: "POST", Path: "/processes/{pid}/wait/log", Public: true, Idempotent: true},
	{Method: "POST", Path: "/processes/{pid}/wait/port", Public: true, Idempotent: true},
	{Method: "POST", Path: "/processes/{pid}/wait/exit", Public: true, Idempotent: true},
	{Method: "POST", Path: "/processes/{pid}/stdin", Public: true},
	{Method: "POST", Path: "/code/contexts", Public: true},
	{Method: "GET", Path: "/code/contexts", Public: true, Idempotent: true},
	{Method: "GET", Path: "/code/contexts/{contextId}", Public: true, Idempotent: true},
	{Method: "DELETE", Path: "/code/contexts/{contextId}", Public: true},
	{Method: "POST", Path: "/code/run", Public: true},
	{Method: "POST", Path: "/code/run/stream", Public: true, Stream: true},
	{Method: "GET", Path: "/terminal", Public: true},
	{Method: "GET", Path: "/terminals", Public: true, Idempotent: true},
	{Method: "DELETE", Path: "/terminals/{terminal}", Public: true},
	{Method: "POST", Path: "/files/write", Public: true},
	{Method: "POST", Path: "/files/read", Public: true, Idempotent: true},
	{Method: "POST", Path: "/files/read/stream", Public: true, Stream: true, Idempotent: true},
	{Method: "GET", Path: "/files/raw", Public: true, Bulk: true, Idempotent: true},
	{Method: "PUT", Path: "/files/raw", Public: true, Bulk: true},
	{Method: "POST", Path: "/files/mkdir", Public: true},
	{Method: "POST", Path: "/files/delete", Public: true},
	{Method: "POST", Path: "/files/rename", Public: true},
	{Method: "POST", Path: "/files/move", Public: true},
	{Method: "POST", Path: "/files/exists", Public: true, Idempotent: true},
	{Method: "POST", Path: "/files/stat", Public: true, Idempotent: true},
	{Method: "POST", Path: "/files/list", Public: true, Idempotent: true},
	{Method: "GET", Path: "/files/archive", Public: true, Bulk: true, Idempotent: true},
	{Method: "PUT", Path: "/files/archive", Public: true, Bulk: true},
	{Method: "POST", Path: "/files/watch", Public: true, Stream: true, Idempotent: true},
	{Method: "POST", Path: "/files/changes", Public: true, Idempotent: true},
	{Method: "POST", Path: "/git/checkout", Public: true},
}

// Pattern is the route as a net/http.ServeMux pattern ("POST /exec").
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// Match finds the public route for a call of method on path (the part
// after /v1/sandboxes/{id}, with its leading slash). When no public route
// has that path it returns ok false and allow empty; when routes have the
// path but not the method, allow lists their methods (for a 405's Allow).
// Internal routes never match.
func Match(method, path string) (r Route, allow []string, ok bool) {
	if strings.HasPrefix(path, InternalPrefix) {
		return Route{}, nil, false
	}
	for _, rt := range Routes {
		if !rt.Public || !pathMatches(rt.Path, path) {
			continue
		}
		if rt.Method == method || (rt.Method == "GET" && method == "HEAD") {
			return rt, nil, true
		}
		allow = append(allow, rt.Method)
		if rt.Method == "GET" {
			allow = append(allow, "HEAD")
		}
	}
	return Route{}, allow, false
}

// pathMatches reports whether path fits pattern, each {name} of the
// pattern standing for one non-empty segment.
func pathMatches(pattern, path string) bool {
	for {
		pseg, prest, pmore := strings.Cut(pattern, "/")
		seg, rest, more := strings.Cut(path, "/")
		if pmore != more {
			return false
		}
		if strings.HasPrefix(pseg, "{") && strings.HasSuffix(pseg, "}") {
			if seg == "" {
				return false
			}
		} else if pseg != seg {
			return false
		}
		if !more {
			return true
		}
		pattern, path = prest, rest
	}
}
