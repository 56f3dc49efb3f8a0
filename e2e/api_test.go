package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/api"
)

// TestBadInputGetsAClearError sends hostile and malformed requests straight
// over HTTP and checks each gets a 4xx with the right code — never a 500,
// never a hang.
func TestBadInputGetsAClearError(t *testing.T) {
	d := daemon(t)
	big := `{"command":"` + strings.Repeat("x", 40<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		noAuth                   bool
		status                   int
		code                     api.Code
	}{
		{"no token", "GET", "/v1/sandboxes", "", true, 401, api.CodeUnauthorized},
		{"unknown route", "GET", "/v1/nope", "", false, 404, api.CodeNotFound},
		{"wrong method", "POST", "/v1/sandboxes", "", false, 405, api.CodeMethodNotAllowed},
		{"invalid id: upper case", "PUT", "/v1/sandboxes/Demo", "{}", false, 400, api.CodeInvalidSandboxID},
		{"invalid id: too long", "PUT", "/v1/sandboxes/" + strings.Repeat("a", 64), "{}", false, 400, api.CodeInvalidSandboxID},
		{"invalid id: leading dash", "POST", "/v1/sandboxes/-x/exec", `{"command":"true"}`, false, 400, api.CodeInvalidSandboxID},
		{"unknown sandbox, read-only", "GET", "/v1/sandboxes/nobody-here", "", false, 404, api.CodeSandboxNotFound},
		{"unknown sandbox, destroy", "DELETE", "/v1/sandboxes/nobody-here", "", false, 404, api.CodeSandboxNotFound},
		{"malformed JSON", "PUT", "/v1/sandboxes/badjson", `{"image":`, false, 400, api.CodeInvalidJSON},
		{"wrong type", "PUT", "/v1/sandboxes/badtype", `{"limits":{"pids":"many"}}`, false, 400, api.CodeValidationFailed},
		{"unknown field", "PUT", "/v1/sandboxes/badfield", `{"imagee":"host"}`, false, 400, api.CodeValidationFailed},
		{"memory too small", "PUT", "/v1/sandboxes/tiny", `{"limits":{"memoryBytes":1024}}`, false, 400, api.CodeValidationFailed},
		{"memory too large", "PUT", "/v1/sandboxes/huge", `{"limits":{"memoryBytes":1e18}}`, false, 400, api.CodeValidationFailed},
		{"negative pids", "PUT", "/v1/sandboxes/neg", `{"limits":{"pids":-5}}`, false, 400, api.CodeValidationFailed},
		{"bad network mode", "PUT", "/v1/sandboxes/netmode", `{"network":{"mode":"bridge"}}`, false, 400, api.CodeValidationFailed},
		{"bad cidr", "PUT", "/v1/sandboxes/cidr", `{"network":{"mode":"internet","allowCidrs":["10.0.0.0/99"]}}`, false, 400, api.CodeInvalidNetworkPolicy},
		{"bad env name", "PUT", "/v1/sandboxes/envname", `{"env":{"A-B":"x"}}`, false, 400, api.CodeValidationFailed},
		{"unknown image", "PUT", "/v1/sandboxes/img", `{"image":"nope"}`, false, 404, api.CodeImageNotFound},
		{"oversized body", "PUT", "/v1/sandboxes/oversized", `{"labels":{"a":"` + strings.Repeat("x", 2<<20) + `"}}`, false, 413, api.CodeRequestTooLarge},
		{"oversized exec", "POST", "/v1/sandboxes/bigexec/exec", big, false, 413, api.CodeRequestTooLarge},
		{"empty command", "POST", "/v1/sandboxes/emptycmd/exec", `{"command":""}`, false, 400, api.CodeValidationFailed},
		{"negative timeout", "POST", "/v1/sandboxes/negtimeout/exec", `{"command":"true","timeout":-1}`, false, 400, api.CodeValidationFailed},
		{"malformed exec JSON", "POST", "/v1/sandboxes/badexec/exec", `{"command":`, false, 400, api.CodeInvalidJSON},
		{"internal agent route: shutdown", "POST", "/v1/sandboxes/internal/shutdown", `{"reason":"x"}`, false, 404, api.CodeNotFound},
		{"internal agent route: health", "GET", "/v1/sandboxes/internal/health", "", false, 404, api.CodeNotFound},
		{"internal agent route: activity", "GET", "/v1/sandboxes/internal/activity", "", false, 404, api.CodeNotFound},
		{"internal agent route: health below a sandbox", "GET", "/v1/sandboxes/emptycmd/internal/health", "", false, 404, api.CodeNotFound},
		{"internal agent route: shutdown below a sandbox", "POST", "/v1/sandboxes/emptycmd/internal/shutdown", `{"reason":"x"}`, false, 404, api.CodeNotFound},
		{"internal agent route: ready below a sandbox", "GET", "/v1/sandboxes/emptycmd/internal/ready", "", false, 404, api.CodeNotFound},
		{"internal agent route: dial below a sandbox", "GET", "/v1/sandboxes/emptycmd/internal/dial?port=22", "", false, 404, api.CodeNotFound},
		{"undeclared agent route: old health path", "GET", "/v1/sandboxes/emptycmd/health", "", false, 404, api.CodeNotFound},
		{"undeclared agent route: unknown path", "POST", "/v1/sandboxes/emptycmd/no-such-route", `{}`, false, 404, api.CodeNotFound},
		{"undeclared agent route: wrong method", "GET", "/v1/sandboxes/emptycmd/exec", "", false, 405, api.CodeMethodNotAllowed},
		{"undeclared agent route: creates no sandbox", "POST", "/v1/sandboxes/never-made/no-such-route", `{}`, false, 404, api.CodeNotFound},
		{"undeclared agent route: the sandbox was not made", "GET", "/v1/sandboxes/never-made", "", false, 404, api.CodeSandboxNotFound},
		// Issue 11, item 12.
		{"unknown exec field", "POST", "/v1/sandboxes/emptycmd/exec", `{"command":"sleep 60","timout":100}`, false, 400, api.CodeValidationFailed},
		{"invalid options for an existing sandbox", "PUT", "/v1/sandboxes/emptycmd", `{"limits":{"pids":5}}`, false, 400, api.CodeValidationFailed},
		{"unknown field for an existing sandbox", "PUT", "/v1/sandboxes/emptycmd", `{"imagee":"host"}`, false, 400, api.CodeValidationFailed},
		{"explicit zero pids", "PUT", "/v1/sandboxes/zeropids", `{"limits":{"pids":0}}`, false, 400, api.CodeValidationFailed},
		{"explicit zero memory", "PUT", "/v1/sandboxes/zeromem", `{"limits":{"memoryBytes":0}}`, false, 400, api.CodeValidationFailed},
		{"POST on a sandbox is no redirect", "POST", "/v1/sandboxes/emptycmd", `{}`, false, 405, api.CodeMethodNotAllowed},
		{"empty path segment is no redirect", "POST", "/v1/sandboxes/emptycmd//exec", `{"command":"true"}`, false, 404, api.CodeNotFound},
		{"dot segment is no redirect", "POST", "/v1/sandboxes/emptycmd/x/../exec", `{"command":"true"}`, false, 404, api.CodeNotFound},
	}
	// A redirect is not a clear error: see it rather than follow it.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, d.URL+tc.path, strings.NewReader(tc.body))
			if !tc.noAuth {
				req.Header.Set("Authorization", "Bearer "+d.Token)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var e api.Error
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("status %d, body not a JSON error: %q", resp.StatusCode, body)
			}
			if resp.StatusCode != tc.status || e.Code != tc.code || e.Message == "" {
				t.Errorf("got %d %s %q, want %d %s", resp.StatusCode, e.Code, e.Message, tc.status, tc.code)
			}
		})
	}
	// Authentication schemes are case-insensitive (issue 11, item 14).
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		req, _ := http.NewRequest("GET", d.URL+"/v1/health", nil)
		req.Header.Set("Authorization", scheme+" "+d.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("scheme %q: %d, want 200", scheme, resp.StatusCode)
		}
	}
	// None of the rejected creates left a sandbox behind.
	list, err := d.Client.List(ctxT(t, 10e9))
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range list {
		switch sb.ID {
		case "bigexec", "emptycmd", "negtimeout", "badexec":
			// Forwarded calls create the sandbox before the agent rejects
			// the body, as the reference's getSandbox does.
		default:
			t.Errorf("rejected request left sandbox %s", sb.ID)
		}
	}
}
