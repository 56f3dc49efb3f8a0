package proxy

import (
	"crypto/rand"
	"fmt"
	"net"
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
	return api.PreviewHost(a.Port, a.SandboxID, a.Token, domain)
}

// ParseHost parses host as a preview host on domain (see
// api.ParsePreviewHost).
func ParseHost(host, domain string) (Address, bool) {
	port, id, token, ok := api.ParsePreviewHost(host, domain)
	return Address{Port: port, SandboxID: id, Token: token}, ok
}

// InDomain reports whether host (a Host header, with or without a port)
// is a name below domain, such as x.y.{domain}; domain itself is not.
func InDomain(host, domain string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	label, ok := strings.CutSuffix(host, "."+strings.ToLower(domain))
	return ok && label != ""
}

// ParsePort parses a port from a URL path segment: 1-65535, plain
// decimal.
func ParsePort(s string) (int, bool) { return api.ParsePort(s) }

// ValidToken reports whether s can be in a preview host: 1-16 of a-z,
// 0-9 and _. A token chosen now must also be at least
// api.MinPreviewTokenBytes long (checkOptions).
func ValidToken(s string) bool { return api.ValidPreviewToken(s) }

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
