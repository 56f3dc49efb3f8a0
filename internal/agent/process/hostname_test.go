package process

import "testing"

func TestHostnamePrelude(t *testing.T) {
	key := func(env ...string) loginKey { return loginKey{env: env} }
	for _, c := range []struct {
		name         string
		server, proc loginKey
		want         string
	}{
		{"the same", key("HOSTNAME=a"), key("HOSTNAME=a"), ""},
		{"none asked for", key("HOSTNAME=a"), key(), ""},
		{"another", key("HOSTNAME=pool-1"), key("HOSTNAME=demo"), "export HOSTNAME='demo'; "},
		{"the server had none", key(), key("HOSTNAME=demo"), "export HOSTNAME='demo'; "},
		{"the last one counts", key("HOSTNAME=a"), key("HOSTNAME=b", "HOSTNAME=a"), ""},
		{"quoted", key(), key("HOSTNAME=it's"), `export HOSTNAME='it'\''s'; `},
	} {
		if got := hostnamePrelude(c.server, c.proc); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
