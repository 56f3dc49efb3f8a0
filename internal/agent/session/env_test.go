package session

import (
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// The shell gets $SHELL from the agent, not from its own passwd lookup,
// and it stays what bash makes of it: the account's shell, set but not
// exported; a value from the environment stays exported.
func TestShellVariableIsBashsOwn(t *testing.T) {
	m := newTestManager(t)
	s, _ := m.Get(Default)
	want := user.LoginShell("", 0) + " 0\n"
	if got := mustRun(t, s, Command{Text: `echo "$SHELL" $(env | grep -c ^SHELL=)`}); got != want {
		t.Errorf("got %q, want %q (bash's own: not exported)", got, want)
	}
	m = newTestManager(t, func(c *Config) { c.BaseEnv = append(c.BaseEnv, "SHELL=/bin/own") })
	s, _ = m.Get(Default)
	if got := mustRun(t, s, Command{Text: `echo "$SHELL" $(env | grep -c ^SHELL=)`}); got != "/bin/own 1\n" {
		t.Errorf("from the environment: got %q, want it exported", got)
	}
}
