package proxy

import (
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/sandboxd/sandboxd/api"
)

// Address is what a preview host names: a port of a sandbox and the token
// that opens it.
type Address struct {
	Port      int
	SandboxID string
	Token     string
}

// Host returns the preview host name of a on domain (without a port).
func (a Address) Host(domain string) string {
	return strconv.Itoa(a.Port) + "-" + a.SandboxID + "-" + a.Token + "." + domain
}

// ParseHost parses host, a Host header (with or without a port), as a
// preview host on domain: {port}-{sandboxId}-{token}.{domain}. Sandbox IDs
// may contain '-', tokens and ports may not, so the port ends at the first
// '-' and the token starts after the last. Upper case is folded (host
// names are case-insensitive); a port with a leading zero is refused so
// that every preview has one spelling.
func ParseHost(host, domain string) (Address, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	label, ok := strings.CutSuffix(host, "."+domain)
	if !ok || label == "" || strings.Contains(label, ".") {
		return Address{}, false
	}
	first := strings.IndexByte(label, '-')
	last := strings.LastIndexByte(label, '-')
	if first <= 0 || last-first < 2 {
		return Address{}, false
	}
	portText, id, token := label[:first], label[first+1:last], label[last+1:]
	port, ok := parsePort(portText)
	if !ok || api.ValidateSandboxID(id) != nil || !ValidToken(token) {
		return Address{}, false
	}
	return Address{Port: port, SandboxID: id, Token: token}, true
}

// parsePort parses a decimal port 1-65535 without sign or leading zero.
func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, n >= 1 && n <= 65535
}

// ParsePort parses a port from a URL path segment: 1-65535, plain
// decimal.
func ParsePort(s string) (int, bool) { return parsePort(s) }

// ValidToken reports whether s can be a preview token: 1-16 of a-z, 0-9
// and _.
func ValidToken(s string) bool {
	if s == "" || len(s) > api.MaxPreviewTokenBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// tokenLength is the length of a generated token: 16 of 36 symbols, about
// 82 bits.
const tokenLength = 16

// NewToken returns a random token of 16 characters of a-z and 0-9.
func NewToken() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	// Bytes at or above 252 (= 7*36) are dropped so that every symbol is
	// equally likely.
	out := make([]byte, 0, tokenLength)
	var buf [32]byte
	for len(out) < tokenLength {
		rand.Read(buf[:])
		for _, b := range buf {
			if b < 252 && len(out) < tokenLength {
				out = append(out, alphabet[b%36])
			}
		}
	}
	return string(out)
}

// ValidDomain reports whether domain can be the preview domain: one or
// more DNS labels of a-z, 0-9 and '-', lower case, without a trailing dot.
func ValidDomain(domain string) error {
	if domain == "" || len(domain) > 200 {
		return fmt.Errorf("preview domain %q: want a host name of 1-200 characters", domain)
	}
	for _, label := range strings.Split(domain, ".") {
		if api.ValidateSandboxID(label) != nil {
			return fmt.Errorf("preview domain %q: label %q is not a lower-case DNS label", domain, label)
		}
	}
	return nil
}
