package proxy

import (
	"strings"
	"testing"
	"time"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		host   string
		domain string
		want   Address
		ok     bool
	}{
		{"8080-demo-abc123.localhost", "localhost", Address{8080, "demo", "abc123"}, true},
		{"8080-demo-abc123.localhost:7070", "localhost", Address{8080, "demo", "abc123"}, true},
		{"8080-my-sand-box-tok_1.preview.example.com", "preview.example.com", Address{8080, "my-sand-box", "tok_1"}, true},
		{"8080-DEMO-ABC.LOCALHOST.", "localhost", Address{8080, "demo", "abc"}, true},
		{"65535-a-b.localhost", "localhost", Address{65535, "a", "b"}, true},
		{"1-a-b.localhost", "localhost", Address{1, "a", "b"}, true},
		{"localhost", "localhost", Address{}, false},
		{"localhost:7070", "localhost", Address{}, false},
		{"8080-demo-abc.other", "localhost", Address{}, false},
		{"8080-demo-abc.evil-localhost", "localhost", Address{}, false},
		{"x.8080-demo-abc.localhost", "localhost", Address{}, false},
		{"8080-demo.localhost", "localhost", Address{}, false},
		{"8080--abc.localhost", "localhost", Address{}, false},
		{"8080-demo-.localhost", "localhost", Address{}, false},
		{"-demo-abc.localhost", "localhost", Address{}, false},
		{"08080-demo-abc.localhost", "localhost", Address{}, false},
		{"65536-demo-abc.localhost", "localhost", Address{}, false},
		{"0-demo-abc.localhost", "localhost", Address{}, false},
		{"80a-demo-abc.localhost", "localhost", Address{}, false},
		{"8080-demo--abc.localhost", "localhost", Address{}, false},
		{"8080-demo-abc.def.localhost", "localhost", Address{}, false},
		{"8080-demo-abcdefghijklmnopq.localhost", "localhost", Address{}, false}, // 17-char token
		{"8080-de_mo-abc.localhost", "localhost", Address{}, false},
		{"8080-demo-ab%63.localhost", "localhost", Address{}, false},
		{"8080-" + strings.Repeat("a", 64) + "-abc.localhost", "localhost", Address{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseHost(tt.host, tt.domain)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseHost(%q, %q) = %+v, %v; want %+v, %v", tt.host, tt.domain, got, ok, tt.want, tt.ok)
		}
		if ok {
			if back, ok := ParseHost(got.Host(tt.domain), tt.domain); !ok || back != got {
				t.Errorf("Host(%+v) = %q does not parse back", got, got.Host(tt.domain))
			}
		}
	}
}

func TestNewTokenIsValidAndUnguessable(t *testing.T) {
	seen := map[string]bool{}
	counts := map[byte]int{}
	for i := 0; i < 2000; i++ {
		tok := NewToken()
		if len(tok) != 16 || !ValidToken(tok) || strings.Contains(tok, "_") {
			t.Fatalf("token %q: want 16 of a-z0-9", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q drawn twice", tok)
		}
		seen[tok] = true
		for j := 0; j < len(tok); j++ {
			counts[tok[j]]++
		}
	}
	// 32000 symbols over 36: about 889 each. A gross bias (a fixed
	// character, a skewed modulo) would show far outside this band.
	if len(counts) != 36 {
		t.Errorf("only %d distinct symbols used", len(counts))
	}
	for c, n := range counts {
		if n < 700 || n > 1100 {
			t.Errorf("symbol %q drawn %d times out of 32000", c, n)
		}
	}
}

func TestSigner(t *testing.T) {
	s := NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	a := Address{Port: 8080, SandboxID: "demo", Token: "tok"}
	now := time.Unix(1_800_000_000, 0)
	cred := s.Sign(a, now.Add(time.Hour))
	if exp, ok := s.Verify(cred, a, now); !ok || !exp.Equal(now.Add(time.Hour)) {
		t.Fatalf("fresh credential refused: %v %v", exp, ok)
	}
	if _, ok := s.Verify(cred, a, now.Add(time.Hour)); ok {
		t.Error("expired credential accepted")
	}
	for name, other := range map[string]Address{
		"other port":    {8081, "demo", "tok"},
		"other sandbox": {8080, "demo2", "tok"},
		"rotated token": {8080, "demo", "tok2"},
	} {
		if _, ok := s.Verify(cred, other, now); ok {
			t.Errorf("%s: credential accepted", name)
		}
	}
	other := NewSigner([]byte("another key, another key, another"))
	if _, ok := other.Verify(cred, a, now); ok {
		t.Error("credential accepted under another key")
	}
	// Tampering with the expiry breaks the MAC.
	parts := strings.SplitN(cred, ".", 3)
	forged := parts[0] + "." + "9" + parts[1] + "." + parts[2]
	if _, ok := s.Verify(forged, a, now); ok {
		t.Error("credential with a changed expiry accepted")
	}
	for _, bad := range []string{"", "v1", "v1.1.", "v2." + parts[1] + "." + parts[2], "v1.+1." + parts[2], strings.Repeat("a", 200)} {
		if _, ok := s.Verify(bad, a, now); ok {
			t.Errorf("credential %q accepted", bad)
		}
	}
}

func TestInDomain(t *testing.T) {
	for _, tt := range []struct {
		host, domain string
		want         bool
	}{
		{"8080-demo-tok.localhost", "localhost", true},
		{"8080-demo-tok.localhost:7070", "localhost", true},
		{"Foo.LocalHost.", "localhost", true},
		{"a.b.preview.example.com", "preview.example.com", true},
		{"localhost", "localhost", false},
		{"localhost:7070", "localhost", false},
		{"127.0.0.1:7070", "localhost", false},
		{"notlocalhost", "localhost", false},
		{"evil-localhost", "localhost", false},
		{".localhost", "localhost", false},
	} {
		if got := InDomain(tt.host, tt.domain); got != tt.want {
			t.Errorf("InDomain(%q, %q) = %v, want %v", tt.host, tt.domain, got, tt.want)
		}
	}
}
