package sockjoin

import (
	"strings"
	"testing"
)

// TestScanDecides runs the scan's automaton over requests a client may
// send on a joined connection: what goes on to the service, and what the
// daemon must read.
func TestScanDecides(t *testing.T) {
	table := buildScan()
	const k = 0x1234567
	host := "8080-a-0123456789abcdef.localhost:7070"
	want := hostHash(k, host)
	get := func(target string, headers ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n" + strings.Join(append(headers, ""), "\r\n") + "\r\n"
	}
	for _, tc := range []struct {
		name string
		buf  string
		pass bool
	}{
		{"plain GET", get("/ok"), true},
		{"two pipelined GETs", get("/a") + get("/b?x=1"), true},
		{"ordinary headers", get("/", "User-Agent: curl/8", "Accept: */*", "Connection: keep-alive", "Cookie: session=abc"), true},
		{"HEAD and other methods", strings.Replace(get("/"), "GET", "HEAD", 1), true},
		{"Host with spaces around", "GET / HTTP/1.1\r\nHost:  \t" + host + "\r\n\r\n", true},
		{"host header in any case", "GET / HTTP/1.1\r\nhOsT: " + host + "\r\n\r\n", true},
		{"names that start like sensitive ones", get("/", "Hostname: x", "Authorize: x", "Cookies: sandboxd_preview=1", "Upgraded: no"), true},

		{"Authorization", get("/", "Authorization: Bearer tok"), false},
		{"authorization in lower case", get("/", "authorization: Bearer tok"), false},
		{"AUTHORIZATION with underscores", get("/", "AUTHORIZATION: x"), false},
		{"Proxy-Authorization", get("/", "Proxy-Authorization: x"), false},
		{"X-Forwarded-For", get("/", "X-Forwarded-For: 203.0.113.9"), false},
		{"x_forwarded_for", get("/", "x_forwarded_for: 203.0.113.9"), false},
		{"X-Forwarded-Host", get("/", "X-Forwarded-Host: evil"), false},
		{"Forwarded", get("/", "Forwarded: for=1.2.3.4"), false},
		{"preview cookie", get("/", "Cookie: a=1; sandboxd_preview=tok"), false},
		{"preview cookie in other case", get("/", "cookie: SandBoxD_preview=tok"), false},
		{"signed link", get("/?sandboxd_link=x"), false},
		{"percent-encoded query", get("/?%73andboxd_link=x"), false},
		{"body", get("/", "Content-Length: 3") + "abc", false},
		{"chunked", get("/", "Transfer-Encoding: chunked") + "0\r\n\r\n", false},
		{"upgrade", get("/", "Connection: Upgrade", "Upgrade: websocket"), false},
		{"another Host", "GET / HTTP/1.1\r\nHost: 8080-b-0123456789abcdef.localhost:7070\r\n\r\n", false},
		{"a Host that only starts alike", "GET / HTTP/1.1\r\nHost: " + host + "x\r\n\r\n", false},
		{"a shorter Host", "GET / HTTP/1.1\r\nHost: " + host[:len(host)-1] + "\r\n\r\n", false},
		{"second request with another Host", get("/") + "GET / HTTP/1.1\r\nHost: other\r\n\r\n", false},
		{"two Host lines", get("/", "Host: "+host), false},
		{"no Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", false},
		{"Host with a space inside", "GET / HTTP/1.1\r\nHost: " + host + " x\r\n\r\n", false},
		{"absolute URL", "GET http://8080-b-0123456789abcdef.localhost:7070/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n", false},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: " + host + "\r\n\r\n", false},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: " + host + "\r\n\r\n", false},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
		{"half a request", get("/")[:20], false},
		{"header split across buffers: first part", "GET / HTTP/1.1\r\nHost: " + host + "\r\nAuthor", false},
		{"header split across buffers: second part", "ization: Bearer tok\r\n\r\n", false},
		{"request then a partial one", get("/") + "GET /", false},
		{"bare LF", "GET / HTTP/1.1\nHost: " + host + "\n\n", false},
		{"bare LF inside a value", get("/", "X-A: a\nAuthorization: x"), false},
		{"folded line", get("/", "X-A: a", " Authorization: x"), false},
		{"space before colon", get("/", "Authorization : x"), false},
		{"control byte in a value", get("/", "X-A: a\x00b"), false},
		{"empty name", get("/", ": x"), false},
		{"too long", get("/", "X-A: "+strings.Repeat("a", maxScan)), false},
	} {
		if got := scan(table, k, want, []byte(tc.buf)); got != tc.pass {
			t.Errorf("%s: sent on %v, want %v (%q)", tc.name, got, tc.pass, tc.buf)
		}
	}
}
