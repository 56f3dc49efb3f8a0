package agent

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/sandboxd/sandboxd/internal/agent/process"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// MainEnv is the private variable in which the daemon hands the agent the
// image's main command: its Entrypoint then its Cmd, as a JSON array.
const MainEnv = PrivateEnvPrefix + "MAIN"

// MainProcessID is the ID of the background process that runs the
// image's main command.
const MainProcessID = "main"

// maxMainBytes bounds the main command.
const maxMainBytes = 64 << 10

// mainCommand returns the image's main command from env, if any.
func mainCommand(env []string) ([]string, bool) {
	for _, kv := range env {
		value, ok := strings.CutPrefix(kv, MainEnv+"=")
		if !ok || len(value) > maxMainBytes {
			continue
		}
		var argv []string
		if err := json.Unmarshal([]byte(value), &argv); err != nil || len(argv) == 0 {
			return nil, false
		}
		for _, a := range argv {
			if strings.IndexByte(a, 0) >= 0 {
				return nil, false
			}
		}
		return argv, true
	}
	return nil, false
}

// shellQuote joins argv into one command line for sh -c, each argument
// single-quoted: the exec form of CMD runs exactly these arguments.
func shellQuote(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}

// startMain runs the image's main command, if the sandbox has one, as the
// background process "main" of the default session, like a container's
// CMD: its status and logs are those of any background process. The record
// of an earlier agent's "main" (its process died with the container) is
// replaced.
func (a *Agent) startMain(ctx context.Context) {
	argv, ok := mainCommand(a.cfg.Env)
	if !ok {
		return
	}
	if p, err := a.processes.Get(MainProcessID); err == nil {
		if p.Info().Status == process.Running {
			return
		}
		a.processes.Remove(MainProcessID)
	}
	def, err := a.sessions.Get(session.Default)
	if err != nil {
		a.cfg.Log.Warn("cannot start the image's main command", "err", err)
		return
	}
	acct := def.Account()
	p, err := a.processes.Start(ctx, process.StartOptions{
		ID: MainProcessID, Command: shellQuote(argv), Env: def.Environ(acct, nil), Cwd: def.Cwd(),
		SessionID: session.Default, Account: acct,
	})
	if err != nil {
		a.cfg.Log.Warn("cannot start the image's main command", "err", err)
		return
	}
	a.cfg.Log.Info("image main command started", "process", MainProcessID, "status", p.Info().Status)
}
