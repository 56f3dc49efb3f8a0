package agent

import (
	"net/http"
	"strings"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// A fork of a memory snapshot (gVisor) is this agent restored, memory and
// all, in another sandbox: it holds the parent's environment, that of its
// process and what the parent was given through the API (POST /env), which
// is where callers put secrets. The daemon calls POST /internal/fork once,
// before the fork's first call, with the fork's own environment: shells
// take it before their next command (what they exported themselves stays,
// as shell state does), and terminals and interpreters started from then
// on take it. Processes that were running at the snapshot keep what they
// had in memory.

// maxForkEnv bounds the entries of a fork's environment.
const maxForkEnv = 4096

func (s *server) forkRequest(w http.ResponseWriter, r *http.Request) {
	var req api.AgentForkRequest
	if e := decodeBody(w, r, maxSmallBody, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if len(req.Env) > maxForkEnv {
		writeError(w, api.Errorf(api.CodeValidationFailed, "at most %d environment entries", maxForkEnv))
		return
	}
	for _, kv := range req.Env {
		if name, _, ok := strings.Cut(kv, "="); !ok || !session.ValidEnvName(name) {
			writeError(w, api.Errorf(api.CodeValidationFailed, "environment entries are NAME=value"))
			return
		}
	}
	s.sessions.Rebase(req.Env)
	if s.code != nil {
		s.code.SetBaseEnv(req.Env)
	}
	s.termEnvMu.Lock()
	s.termBaseEnv = req.Env
	s.termEnvMu.Unlock()
	s.saveOrLog()
	w.WriteHeader(http.StatusNoContent)
}
