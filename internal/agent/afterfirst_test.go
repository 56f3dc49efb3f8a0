package agent

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// The start-up work deferred past the first answer (afterFirstAnswer) is
// not done before it, is done after it, and whatever needs it first does
// it itself: a background process as the agent's first call.
func TestStartUpWorkAfterTheFirstAnswer(t *testing.T) {
	ta := startAgent(t)
	logs := filepath.Join(ta.agent.cfg.StateDir, "logs")
	login := filepath.Join(ta.agent.cfg.RunDir, "login")
	for _, dir := range []string{logs, login} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s was made before the first answer", dir)
		}
	}
	if got := ta.run(t, "echo hi"); got != "hi\n" {
		t.Fatalf("exec: %q", got)
	}
	eventually(t, 5*time.Second, "the directories made after the first answer", func() bool {
		_, err1 := os.Stat(logs)
		_, err2 := os.Stat(filepath.Join(login, "report"))
		return err1 == nil && err2 == nil
	})
	if fi, err := os.Stat(logs); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("logs directory: %v %v", fi, err)
	}

	first := startAgent(t)
	status, body := first.post(t, "/processes", api.StartProcessRequest{Command: "echo first"})
	if status != http.StatusCreated {
		t.Fatalf("starting a process as the first call: %d %s", status, body)
	}
	if _, err := os.Stat(filepath.Join(first.agent.cfg.StateDir, "logs")); err != nil {
		t.Errorf("the first process's start made no logs directory: %v", err)
	}
}
