package session

import "testing"

func TestDropJobReports(t *testing.T) {
	const dir = "/run/sandboxd-agent/default"
	for _, tc := range []struct{ in, want string }{
		{dir + "/cmd: line 1:    18 Killed                  sleep 60\n", ""},
		{"partial output\n" + dir + "/w: line 3: 20 Terminated  python3 x.py\n", "partial output\n"},
		{"no newline at the end", "no newline at the end"},
		{"/other/cmd: line 1: 18 Killed sleep 60\n", "/other/cmd: line 1: 18 Killed sleep 60\n"},
		{"a\n" + dir + "/cmd: line 2: 9 Killed x\nb\n", "a\nb\n"},
		// A command eval'd from its frame: bash names itself.
		{"bash: line 1:  3049 Killed                  sleep 1058\n", ""},
		{"bash: line 1: nosuch: command not found\n", "bash: line 1: nosuch: command not found\n"},
		// What the user needs to see stays.
		{dir + "/cmd: line 1: nosuch: command not found\n", dir + "/cmd: line 1: nosuch: command not found\n"},
		{dir + "/cmd: line 1:    21 Segmentation fault      ./crash\n", dir + "/cmd: line 1:    21 Segmentation fault      ./crash\n"},
		{dir + "/cmd: line 1: syntax error near unexpected token `)'\n", dir + "/cmd: line 1: syntax error near unexpected token `)'\n"},
	} {
		if got := string(dropJobReports([]byte(tc.in), dir)); got != tc.want {
			t.Errorf("dropJobReports(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
