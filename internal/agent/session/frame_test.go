package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInFrame(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"true", true},
		{"echo a\ncat <<EOF\nb\nEOF", true},
		{strings.Repeat("x", maxFrameText), true},
		{strings.Repeat("x", maxFrameText+1), false},
		{"echo é", false},        // bash would count characters, not bytes
		{"echo a\x00b", false},   // bash's read drops NUL
		{"f || return 3", false}, // return ends a sourced file, not an eval
		{"echo $LINENO", false},  // where the code comes from
		{"echo ${BASH_SOURCE[0]}", false},
		{"echo $_", false},
		{"echo $__sbx_f", false},
	} {
		if got := inFrame(tc.text); got != tc.want {
			t.Errorf("inFrame(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
}

// TestCommandsFromTheFrameRunAsSourcedOnes runs each text twice: from its
// frame, and from the command file (a long comment makes it too long for
// a frame). Output, status and what stays in the session are the same.
func TestCommandsFromTheFrameRunAsSourcedOnes(t *testing.T) {
	pad := "\n#" + strings.Repeat("x", maxFrameText)
	for _, tc := range []struct{ name, setup, text, check string }{
		{"status", "", "false", ""},
		{"syntax error", "", "echo partial; if", ""},
		{"multi-line", "", "echo a\necho b\n(exit 4)", ""},
		{"here-doc", "", "cat <<EOF\nhere $((1+2))\nEOF", ""},
		{"declare stays global", "", "declare -A m=([k]=v); declare n=1", `echo "${m[k]} $n"`},
		{"positional parameters", "", "set -- a b c", `echo "$# $2"`},
		{"break 2", "", "echo in; break 2; echo not", ""},
		{"continue", "", "for i in 1 2; do continue; done; echo after; continue 2; echo not", ""},
		{"alias", "", "alias hi='echo hi'\nhi", "hi"},
		{"set -e in a subshell", "", "(set -e; false; echo not); echo $?", ""},
		{"stdin is empty", "", "cat; echo done", ""},
		{"quotes", "", `echo "a'b" 'c"d' \$x`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, text := range []string{tc.text, tc.text + pad} {
				m := newTestManager(t)
				s, _ := m.Get(Default)
				c := &capture{}
				res, err := s.Exec(context.Background(), Command{Text: text}, c)
				got[i] = fmt.Sprintf("%s|%d lines on stderr|exit %d", c.stdout.String(), strings.Count(c.stderr.String(), "\n"), res.ExitCode)
				if err != nil {
					got[i] += "|" + err.Error()
				}
				if tc.check != "" {
					got[i] += "|" + mustRun(t, s, Command{Text: tc.check})
				}
			}
			if got[0] != got[1] {
				t.Errorf("from the frame %q, from the file %q", got[0], got[1])
			}
		})
	}
}

// TestEnvChangesGoInTheFrame: a short command whose only reason to be
// wrapped is a change of the sandbox's environment (the first call to a
// sandbox taken from the warm pool, which brings its HOSTNAME) goes the
// frame way with the changes as its first lines, and does what the
// wrapper way (a long text) does: the changes are seen by the command
// and stay, even after a syntax error or a timeout.
func TestEnvChangesGoInTheFrame(t *testing.T) {
	pad := "\n#" + strings.Repeat("x", maxFrameText)
	for _, tc := range []struct{ name, text string }{
		{"plain", `echo "$HOSTNAME[${GONE-unset}]"`},
		{"syntax error", `echo "$HOSTNAME"; if`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, text := range []string{tc.text, tc.text + pad} {
				m := newTestManager(t)
				m.SetSandboxEnv(LayerOf(map[string]string{"HOSTNAME": "placeholder", "GONE": "1"}))
				s, _ := m.Get(Default)
				mustRun(t, s, Command{Text: ":"})
				if i == 0 {
					// The wrapper cannot be written: only the frame way works.
					if err := os.Mkdir(filepath.Join(s.dir, wrapperFile), 0o700); err != nil {
						t.Fatal(err)
					}
				}
				m.SetSandboxEnv(Layer{"HOSTNAME": new("taken-1"), "GONE": nil})
				c := &capture{}
				res, err := s.Exec(context.Background(), Command{Text: text}, c)
				got[i] = fmt.Sprintf("%s|%d lines on stderr|exit %d|err %v|after: %s", c.stdout.String(),
					strings.Count(c.stderr.String(), "\n"), res.ExitCode, err, mustRun(t, s, Command{Text: `echo "$HOSTNAME[${GONE-unset}]"`}))
			}
			if got[0] != got[1] {
				t.Errorf("from the frame %q, from the wrapper %q", got[0], got[1])
			}
			if !strings.Contains(got[0], "after: taken-1[unset]") {
				t.Errorf("the changes did not stay: %q", got[0])
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		m := newTestManager(t, func(c *Config) { c.KillGrace = 3 * time.Second })
		s, _ := m.Get(Default)
		mustRun(t, s, Command{Text: ":"})
		m.SetSandboxEnv(LayerOf(map[string]string{"HOSTNAME": "taken-2"}))
		_, err := s.Exec(context.Background(), Command{Text: "sleep 1053", Timeout: 100 * time.Millisecond}, &capture{})
		var te *TimeoutError
		if !errors.As(err, &te) {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if got := mustRun(t, s, Command{Text: `echo "$HOSTNAME"`}); got != "taken-2\n" {
			t.Errorf("HOSTNAME after a stopped command: %q", got)
		}
	})
}

// TestTimeoutStopsACommandFromItsFrame: a command eval'd at the shell's top
// level (no sourced file to return from) is stopped wherever it is, and
// nothing more of it runs; the session keeps its state and the user's
// DEBUG trap.
func TestTimeoutStopsACommandFromItsFrame(t *testing.T) {
	// A grace long enough for a loaded machine: what is tested is that the
	// shell unwinds, not how fast.
	m := newTestManager(t, func(c *Config) { c.KillGrace = 3 * time.Second })
	s, _ := m.Get(Default)
	dir := t.TempDir()
	inner := filepath.Join(dir, "inner.sh")
	if err := os.WriteFile(inner, []byte("sleep 1051; echo x > inner\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Relative paths, so that the texts fit in a frame.
	mustRun(t, s, Command{Text: "KEEP=kept; cd " + dir + "; set -T; trap ': user' DEBUG"})
	for _, tc := range []struct{ name, text string }{
		{"list", "echo before; sleep 1050; echo x > list"},
		{"loop", "echo before; while :; do sleep 1050; echo x >> loop; done"},
		{"builtin loop", "echo before; while :; do :; done; echo x > busy"},
		{"nested loops", "echo before; for i in 1 2; do while sleep 1050; do :; done; echo x > nested; done"},
		{"function", "f() { sleep 1050; echo x > f1; }; echo before; f; echo x > f2"},
		{"sourced file", "echo before; . ./inner.sh; echo x > sourced"},
		{"eval", "echo before; eval 'sleep 1050; echo x > eval1'; echo x > eval2"},
		{"pipeline", "echo before; sleep 1050 | cat; echo x > pipe"},
		{"command substitution", "echo before; x=$(sleep 1050); echo x > subst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !inFrame(tc.text) {
				t.Fatalf("%q does not go in a frame", tc.text)
			}
			c := &capture{}
			_, err := s.Exec(context.Background(), Command{Text: tc.text, Timeout: 200 * time.Millisecond}, c)
			var te *TimeoutError
			if !errors.As(err, &te) || te.ShellRestarted {
				t.Fatalf("err = %v, want a timeout that kept the shell", err)
			}
			if c.stdout.String() != "before\n" {
				t.Errorf("stdout %q", c.stdout.String())
			}
			time.Sleep(100 * time.Millisecond) // any later line would have run by now
			if left, _ := os.ReadDir(dir); len(left) != 1 {
				t.Errorf("the command went on after its timeout: %v", left)
			}
			if got := mustRun(t, s, Command{Text: "echo $KEEP; trap -p DEBUG; echo $-"}); got != "kept\ntrap -- ': user' DEBUG\nhBTs\n" {
				t.Errorf("session state after the timeout = %q", got)
			}
		})
	}
}
