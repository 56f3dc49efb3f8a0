package session

import "testing"

// TestRebaseDropsSandboxEnv: after Rebase (a restored fork taking its own
// environment), running shells lose the sandbox layer the parent was given
// through the API and take the new base before their next command, in
// the default session and in one that copied the layer; what a shell
// exported itself, and a session's own options, stay.
func TestRebaseDropsSandboxEnv(t *testing.T) {
	m := newTestManager(t)
	m.SetSandboxEnv(LayerOf(map[string]string{"SECRET": "s3cret"}))
	def, _ := m.Get(Default)
	other, err := m.Create("other", Options{Env: map[string]string{"MODE": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	const probe = `echo "[${SECRET-}][${FORKED-}][${LANG-}][${MINE-}][${MODE-}]"`
	for _, s := range []*Session{def, other} {
		mustRun(t, s, Command{Text: "export MINE=mine"})
		if got := mustRun(t, s, Command{Text: probe}); got == "" || got[:8] != "[s3cret]" {
			t.Fatalf("before the rebase: %q", got)
		}
	}
	m.Rebase([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "FORKED=1"})
	for s, want := range map[*Session]string{def: "[][1][][mine][]\n", other: "[][1][][mine][prod]\n"} {
		if got := mustRun(t, s, Command{Text: probe}); got != want {
			t.Errorf("session %s after the rebase: %q, want %q", s.id, got, want)
		}
	}
	if l := m.SandboxEnv(); len(l) != 0 {
		t.Errorf("sandbox layer after the rebase: %v", l)
	}
	fresh, err := m.Create("fresh", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, fresh, Command{Text: probe}); got != "[][1][][][]\n" {
		t.Errorf("a session created after the rebase: %q", got)
	}
}
