package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/plain/path", "/plain/path"},
		{`/a\040b`, "/a b"},
		{`/end\040`, "/end "},
		{`/tab\011nl\012bs\134`, "/tab\tnl\nbs\\"},
		{`/not\09x`, `/not\09x`},
		{`/short\04`, `/short\04`},
	} {
		if got := Unescape(c.in); got != c.want {
			t.Errorf("Unescape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
