package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	tests := []struct {
		words []string
		want  string
	}{
		// One word is a command line, sent verbatim.
		{[]string{"echo $HOME | wc -c"}, "echo $HOME | wc -c"},
		{[]string{"ls"}, "ls"},
		{[]string{"cd /tmp && export NAME=world"}, "cd /tmp && export NAME=world"},
		// Several words are argv, quoted where needed.
		{[]string{"python3", "-c", "print(2+2)"}, "python3 -c 'print(2+2)'"},
		{[]string{"echo", "hello world"}, "echo 'hello world'"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "$HOME"}, "echo '$HOME'"},
		{[]string{"ls", "*.py"}, "ls '*.py'"},
		{[]string{"ls", "~"}, "ls '~'"},
		{[]string{"echo", "#not-a-comment"}, "echo '#not-a-comment'"},
		{[]string{"echo", "a\nb"}, "echo 'a\nb'"},
		{[]string{"echo", `back\slash`}, `echo 'back\slash'`},
		{[]string{"echo", `"double"`}, `echo '"double"'`},
		{[]string{"echo", "héllo"}, "echo 'héllo'"},
		{[]string{"FOO=1", "env"}, "FOO=1 env"},
		{[]string{"cp", "-r", "a/b.txt", "user@host:/x,y", "50%", "a+b", "_x-y"}, "cp -r a/b.txt user@host:/x,y 50% a+b _x-y"},
		{[]string{"sh", "-c", "echo $0", "x"}, "sh -c 'echo $0' x"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.words, " "), func(t *testing.T) {
			if got := commandLine(tt.words); got != tt.want {
				t.Errorf("commandLine(%q) = %q, want %q", tt.words, got, tt.want)
			}
		})
	}
}

// TestQuotingRoundTrip checks with real shells that the remote shell sees
// the words the user's shell gave the CLI.
func TestQuotingRoundTrip(t *testing.T) {
	words := []string{
		"plain", "two words", "it's", "''", `"`, `\`, `\'`, "$HOME", "$(id)", "`id`", "*", "?", "[a]",
		"~", "~root", "#", "a;b", "a|b", "a&b", "a>b", "{a,b}", "!", "\t", "a\nb", " lead", "trail ",
		"héllo", "€", "=", "a=b", "-n", "--", "%s",
	}
	for _, shell := range []string{"sh", "bash", "dash"} {
		path, err := exec.LookPath(shell)
		if err != nil {
			t.Logf("%s not found; skipped", shell)
			continue
		}
		t.Run(shell, func(t *testing.T) {
			// printf prints each argument on its own line, bracketed.
			line := commandLine(append([]string{"printf", `[%s]\n`}, words...))
			out, err := exec.Command(path, "-c", line).Output()
			if err != nil {
				t.Fatalf("%s -c %q: %v", shell, line, err)
			}
			var want strings.Builder
			for _, w := range words {
				want.WriteString("[" + w + "]\n")
			}
			if string(out) != want.String() {
				t.Errorf("%s saw other words.\nline: %s\ngot:\n%s\nwant:\n%s", shell, line, out, want.String())
			}
		})
	}
}

func TestSplitExecArgs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		dash      int
		wantID    string
		wantWords []string
		wantErr   bool
	}{
		{"id -- command", []string{"demo", "ls", "-la"}, 1, "demo", []string{"ls", "-la"}, false},
		{"no dash", []string{"demo", "ls"}, -1, "demo", []string{"ls"}, false},
		{"nothing", nil, -1, "", nil, true},
		{"only id", []string{"demo"}, -1, "", nil, true},
		{"id and dash, no command", []string{"demo"}, 1, "", nil, true},
		{"dash first", []string{"ls"}, 0, "", nil, true},
		{"two words before dash", []string{"demo", "extra", "ls"}, 2, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, words, err := splitExecArgs(tt.args, tt.dash)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if id != tt.wantID || strings.Join(words, "\x00") != strings.Join(tt.wantWords, "\x00") {
				t.Errorf("got %q %q, want %q %q", id, words, tt.wantID, tt.wantWords)
			}
		})
	}
}
