package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// A warm pool's sandbox is made ready for the login processes of
// Options.PoolLoginUser before it joins the pool (its agent is asked
// once, and joins even if the agent cannot); without the option, never.
func TestWarmPoolPreparesTheLoginUser(t *testing.T) {
	for _, user := range []string{"user", ""} {
		h := newHarness(t, func(o *Options) { o.WarmPool = 1; o.PoolLoginUser = user })
		key := h.waitWarm()
		data, err := os.ReadFile(filepath.Join(h.m.paths(key).bundle, "login"))
		switch {
		case user == "" && !os.IsNotExist(err):
			t.Errorf("no PoolLoginUser: the agent was asked (%q, %v)", data, err)
		case user != "" && string(data) != user:
			t.Errorf("PoolLoginUser %q: the agent was asked for %q (%v)", user, data, err)
		}
	}
}
