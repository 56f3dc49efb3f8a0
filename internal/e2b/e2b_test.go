package e2b

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
)

func TestParseHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		port int
		id   string
		ok   bool
	}{
		{"8000-abc123.localhost:7070", 8000, "abc123", true},
		{"49983-abc123.localhost", 49983, "abc123", true},
		{"8000-ABC123.LOCALHOST.", 8000, "abc123", true},
		{"8000-abc-tok.localhost", 0, "", false}, // sandboxd's own preview form
		{"8000abc.localhost", 0, "", false},
		{"0800-abc.localhost", 0, "", false},
		{"70000-abc.localhost", 0, "", false},
		{"8000-abc.other.localhost", 0, "", false},
		{"8000-abc.example.com", 0, "", false},
		{"8000-a_c.localhost", 0, "", false},
	} {
		port, id, ok := parseHost(tc.host, "localhost")
		if port != tc.port || id != tc.id || ok != tc.ok {
			t.Errorf("parseHost(%q) = %d, %q, %v; want %d, %q, %v", tc.host, port, id, ok, tc.port, tc.id, tc.ok)
		}
	}
}

func newTestServer(t *testing.T, now time.Time) *Server {
	t.Helper()
	s, err := New(Options{BaseURL: "http://sandboxd.invalid", Token: "tok", StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sign makes a signature as the SDK's getSignature does.
func sign(p, op, user, token, exp string) string {
	raw := p + ":" + op + ":" + user + ":" + token
	if exp != "" {
		raw += ":" + exp
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
}

func TestCheckSignature(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newTestServer(t, now)
	tok := s.table.token("envd", "box1")
	q := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	for _, tc := range []struct {
		name string
		q    url.Values
		op   string
		ok   bool
	}{
		{"valid", q("path", "/a", "signature", sign("/a", "read", "", tok, "")), "read", true},
		{"with user", q("path", "/a", "username", "root", "signature", sign("/a", "read", "root", tok, "")), "read", true},
		{"other op", q("path", "/a", "signature", sign("/a", "read", "", tok, "")), "write", false},
		{"other path", q("path", "/b", "signature", sign("/a", "read", "", tok, "")), "read", false},
		{"other user", q("path", "/a", "username", "root", "signature", sign("/a", "read", "", tok, "")), "read", false},
		{"other sandbox", q("path", "/a", "signature", sign("/a", "read", "", s.table.token("envd", "box2"), "")), "read", false},
		{"not expired", q("path", "/a", "signature_expiration", "1800000060", "signature", sign("/a", "read", "", tok, "1800000060")), "read", true},
		{"expired", q("path", "/a", "signature_expiration", "1799999999", "signature", sign("/a", "read", "", tok, "1799999999")), "read", false},
		{"expiration moved", q("path", "/a", "signature_expiration", "1800009999", "signature", sign("/a", "read", "", tok, "1800000060")), "read", false},
		{"none", q("path", "/a"), "read", false},
	} {
		err := s.checkSignature(tc.q, tc.op, "box1")
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func envelope(flag byte, msg string) []byte {
	b := make([]byte, 5+len(msg))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	copy(b[5:], msg)
	return b
}

func TestStreamFraming(t *testing.T) {
	s := &Server{}
	r := httptest.NewRequest("POST", "/process.Process/Start", bytes.NewReader(envelope(0, `{"process":{"cmd":"/bin/bash","args":["-c","x"]},"stdin":false}`)))
	r.Header.Set("Content-Type", "application/connect+json")
	var req startRequest
	if err := s.readStreamRequest(httptest.NewRecorder(), r, &req); err != nil {
		t.Fatal(err)
	}
	if req.Process.Cmd != "/bin/bash" || len(req.Process.Args) != 2 || req.Stdin == nil || *req.Stdin {
		t.Fatalf("decoded %+v", req)
	}
	w := httptest.NewRecorder()
	sw := newStreamWriter(w)
	_ = sw.send(eventMessage{Event: processEvent{Data: &dataEvent{Stdout: []byte("hi\n")}}})
	sw.end(rpcErrorf(codeNotFound, "gone"))
	_ = sw.send(eventMessage{}) // after the end: dropped
	want := append(envelope(0, `{"event":{"data":{"stdout":"aGkK"}}}`), envelope(flagEndStream, `{"error":{"code":"not_found","message":"gone"}}`)...)
	if diff := cmp.Diff(string(want), w.Body.String()); diff != "" {
		t.Errorf("stream (-want +got):\n%s", diff)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/connect+json" {
		t.Errorf("Content-Type %q", ct)
	}

	// Closed (its handler returned): nothing more is written.
	w = httptest.NewRecorder()
	sw = newStreamWriter(w)
	sw.close()
	if err := sw.send(eventMessage{}); err == nil || w.Body.Len() != 0 {
		t.Errorf("a send after close: %v, wrote %q", err, w.Body.String())
	}
	sw.end(rpcErrorf(codeDeadlineExceeded, "late"))
	if w.Body.Len() != 0 {
		t.Errorf("an end after close wrote %q", w.Body.String())
	}

	for _, bad := range [][]byte{
		envelope(flagCompress, `{}`),
		{0, 0xff, 0xff, 0xff, 0xff},
		{0, 0, 0},
	} {
		r := httptest.NewRequest("POST", "/x", bytes.NewReader(bad))
		r.Header.Set("Content-Type", "application/connect+json")
		if err := s.readStreamRequest(httptest.NewRecorder(), r, &req); err == nil {
			t.Errorf("readStreamRequest(% x) accepted", bad)
		}
	}
	// A message that claims the most and brings 10 bytes: refused, and
	// read with buffers the size of what came, not of the claim.
	claim := binary.BigEndian.AppendUint32([]byte{0}, maxRPCMessage)
	body := &largestRead{r: io.MultiReader(bytes.NewReader(claim), strings.NewReader(`{"process"`))}
	r = httptest.NewRequest("POST", "/x", body)
	r.Header.Set("Content-Type", "application/connect+json")
	if err := s.readStreamRequest(httptest.NewRecorder(), r, &req); err == nil || body.max > 64<<10 {
		t.Errorf("a short message claiming %d bytes: %v, largest read %d bytes", maxRPCMessage, err, body.max)
	}

	r = httptest.NewRequest("POST", "/x", strings.NewReader("{}"))
	r.Header.Set("Content-Type", "application/proto")
	if err := s.readUnary(httptest.NewRecorder(), r, &req); toRPCError(err).Code != codeInvalidArgument {
		t.Errorf("binary codec: %v", err)
	}
}

func TestUnaryErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{&api.Error{Code: api.CodeFileNotFound, Message: "m"}, 404, codeNotFound},
		{&api.Error{Code: api.CodeFileExists, Message: "m"}, 409, codeAlreadyExists},
		{&api.Error{Code: api.CodeNotDirectory, Message: "m"}, 400, codeInvalidArgument},
		{&api.Error{Code: api.CodeSandboxUnavailable, Message: "m"}, 503, codeUnavailable},
		{rpcErrorf(codeDeadlineExceeded, "m"), 504, codeDeadlineExceeded},
	} {
		w := httptest.NewRecorder()
		writeUnaryError(w, tc.err)
		var got rpcError
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != tc.status || got.Code != tc.code {
			t.Errorf("%v: %d %s; want %d %s", tc.err, w.Code, w.Body.String(), tc.status, tc.code)
		}
	}
}

func TestToEntry(t *testing.T) {
	n := idNames{users: map[int]string{0: "root", 1000: "user"}, groups: map[int]string{1000: "user"}}
	mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := []entryInfo{
		toEntry(api.FileEntry{Name: "a", AbsolutePath: "/h/a", Type: "file", Size: 5, OctalMode: "0644", UID: 1000, GID: 1000, ModifiedAt: mod}, n),
		toEntry(api.FileEntry{Name: "d", AbsolutePath: "/h/d", Type: "directory", OctalMode: "0755", UID: 0, GID: 0}, n),
		toEntry(api.FileEntry{Name: "l", AbsolutePath: "/h/l", Type: "symlink", OctalMode: "0777", Target: "/x", UID: 7, GID: 7}, n),
		toEntry(api.FileEntry{Name: "s", AbsolutePath: "/h/s", Type: "file", OctalMode: "4755"}, n),
	}
	target := "/x"
	want := []entryInfo{
		{Name: "a", Type: "FILE_TYPE_FILE", Path: "/h/a", Size: 5, Mode: 0o644, Permissions: "-rw-r--r--", Owner: "user", Group: "user", ModifiedTime: "2026-01-02T03:04:05Z"},
		{Name: "d", Type: "FILE_TYPE_DIRECTORY", Path: "/h/d", Mode: 0o755, Permissions: "drwxr-xr-x", Owner: "root", Group: "0", ModifiedTime: "0001-01-01T00:00:00Z"},
		{Name: "l", Type: "FILE_TYPE_SYMLINK", Path: "/h/l", Mode: 0o777, Permissions: "Lrwxrwxrwx", Owner: "7", Group: "7", ModifiedTime: "0001-01-01T00:00:00Z", SymlinkTarget: &target},
		{Name: "s", Type: "FILE_TYPE_FILE", Path: "/h/s", Mode: 0o755, Permissions: "urwxr-xr-x", Owner: "root", Group: "0", ModifiedTime: "0001-01-01T00:00:00Z"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	b, _ := json.Marshal(got[0])
	if !strings.Contains(string(b), `"size":"5"`) {
		t.Errorf("int64 size is not a JSON string: %s", b)
	}
}

func TestParseListQuery(t *testing.T) {
	// What the SDK sends for {metadata: {"a b": "x&y", k: "v"}, state: ["running", "paused"]}.
	inner := url.Values{url.QueryEscape("a b"): {url.QueryEscape("x&y")}, "k": {"v"}}.Encode()
	q := url.Values{"metadata": {inner}, "state": {"running", "paused"}, "limit": {"2"}}
	lq, err := parseListQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"a b": "x&y", "k": "v"}, lq.metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if lq.limit != 2 || !lq.states["running"] || !lq.states["paused"] {
		t.Errorf("parsed %+v", lq)
	}
	for _, bad := range []url.Values{
		{"limit": {"0"}}, {"limit": {"101"}}, {"state": {"sleeping"}}, {"nextToken": {"!!"}},
		{"order": {"up"}}, {"startedAfter": {"yesterday"}},
	} {
		if _, err := parseListQuery(bad); err == nil {
			t.Errorf("parseListQuery(%v) accepted", bad)
		}
	}
}

func TestTableDeadlines(t *testing.T) {
	dir := t.TempDir()
	tb, err := openTable(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0).UTC()
	for id, end := range map[string]time.Time{"a": t0.Add(time.Second), "b": t0.Add(time.Hour)} {
		if _, _, err := tb.update(id, true, func(e *entry) { e.StartedAt, e.EndAt = t0, end }); err != nil {
			t.Fatal(err)
		}
	}
	if got := tb.expired(t0.Add(2 * time.Second)); len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("expired = %+v", got)
	}
	// A paused sandbox's deadline does not run.
	if _, _, err := tb.update("a", false, func(e *entry) { e.Paused = true }); err != nil {
		t.Fatal(err)
	}
	if got := tb.expired(t0.Add(2 * time.Second)); len(got) != 0 {
		t.Fatalf("expired while paused = %+v", got)
	}
	// Deadlines and tokens survive a restart.
	tok := tb.token("envd", "b")
	tb2, err := openTable(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := tb2.get("b"); !ok || !e.EndAt.Equal(t0.Add(time.Hour)) || tb2.token("envd", "b") != tok {
		t.Fatalf("after reopen: %+v %v", e, ok)
	}
	if tb2.token("envd", "a") == tb2.token("envd", "b") || tb2.token("traffic", "b") == tok {
		t.Fatal("tokens are not distinct per sandbox and kind")
	}
}

func TestUserOf(t *testing.T) {
	for _, tc := range []struct {
		header, user string
		ok           bool
	}{
		{"", "user", true},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("root:")), "root", true},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte(":")), "user", true},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("Root:")), "", false},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("../x:")), "", false},
		{"Bearer x", "", false},
		{"Basic !!", "", false},
	} {
		r := httptest.NewRequest("POST", "/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		u, err := userOf(r)
		if u != tc.user || (err == nil) != tc.ok {
			t.Errorf("userOf(%q) = %q, %v", tc.header, u, err)
		}
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine(processConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", "echo 'it''s' $HOME"}})
	want := `exec '/bin/bash' '-l' '-c' 'echo '\''it'\'''\''s'\'' $HOME'`
	if got != want {
		t.Errorf("commandLine = %s\nwant %s", got, want)
	}
}

func TestControlNeedsKey(t *testing.T) {
	s := newTestServer(t, time.Now())
	for _, key := range []string{"", "wrong", "tok2"} {
		r := httptest.NewRequest("GET", "/e2b/v2/sandboxes", nil)
		if key != "" {
			r.Header.Set("X-API-KEY", key)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		body, _ := io.ReadAll(w.Body)
		if w.Code != http.StatusUnauthorized || !strings.Contains(string(body), `"code":401`) {
			t.Errorf("key %q: %d %s", key, w.Code, body)
		}
	}
	// envd of a sandbox this layer does not know: 502, as E2B's edge.
	r := httptest.NewRequest("GET", "/e2b/health", nil)
	r.Header.Set("E2b-Sandbox-Id", "nosuch")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusBadGateway {
		t.Errorf("unknown sandbox health: %d", w.Code)
	}
}

func TestEgressPolicy(t *testing.T) {
	p, err := egressRequest{AllowOut: []string{"1.1.1.1", "10.0.0.0/8", "pypi.org", "*.example.com"}, DenyOut: []string{allTraffic, "8.8.8.8", "ads.example.com"}}.policy()
	if err != nil {
		t.Fatal(err)
	}
	want := api.NetworkPolicy{Mode: api.NetworkInternet, Default: "deny",
		AllowCIDRs: []string{"1.1.1.1/32", "10.0.0.0/8"}, AllowDomains: []string{"pypi.org", "*.example.com"},
		DenyCIDRs: []string{"8.8.8.8/32"}, DenyDomains: []string{"ads.example.com"}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}
	if p, _ := (egressRequest{DenyOut: []string{"9.9.9.9"}}).policy(); p.Default != "allow" {
		t.Errorf("without ALL_TRAFFIC in denyOut the default is %q", p.Default)
	}
	for _, bad := range []egressRequest{
		{Rules: json.RawMessage(`{"a.com":[{"transform":{}}]}`)},
		{EgressProxy: json.RawMessage(`{"address":"x"}`)},
		{AllowOut: make([]string, maxEgressEntries+1)},
	} {
		if _, err := bad.policy(); err == nil {
			t.Errorf("policy(%+v) accepted", bad)
		}
	}
}

// largestRead records the largest buffer it was asked to fill.
type largestRead struct {
	r   io.Reader
	max int
}

func (l *largestRead) Read(p []byte) (int, error) {
	l.max = max(l.max, len(p))
	return l.r.Read(p)
}
