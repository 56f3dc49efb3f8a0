package agent

import (
	"slices"
	"testing"
)

func TestMainCommand(t *testing.T) {
	tests := []struct {
		env  []string
		want []string
	}{
		{nil, nil},
		{[]string{"PATH=/bin"}, nil},
		{[]string{MainEnv + `=["/bin/sh","-c","echo 'hi' \"there\"; exit 3"]`}, []string{"/bin/sh", "-c", `echo 'hi' "there"; exit 3`}},
		{[]string{MainEnv + `=[]`}, nil},
		{[]string{MainEnv + `=not json`}, nil},
		{[]string{MainEnv + `=["a\u0000b"]`}, nil},
	}
	for _, tc := range tests {
		got, ok := mainCommand(tc.env)
		if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("mainCommand(%q) = %q, %v; want %q", tc.env, got, ok, tc.want)
		}
	}
}

// TestShellQuoteRunsExactArguments runs quoted argument lists through sh
// and checks each argument arrives as it was.
func TestShellQuoteRunsExactArguments(t *testing.T) {
	argv := []string{"printf", "[%s]", "plain", "with space", "it's", `"double"`, "$HOME", "`id`", "a\nb", ""}
	out, code := runViaReaper(t, "/bin/sh", "-c", shellQuote(argv))
	if code != 0 {
		t.Fatalf("sh exited %d", code)
	}
	want := "[plain][with space][it's][\"double\"][$HOME][`id`][a\nb][]"
	if string(out) != want {
		t.Errorf("sh ran %q, want %q", out, want)
	}
}
