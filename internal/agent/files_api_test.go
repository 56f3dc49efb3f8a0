package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// fileCall posts body to path and decodes a 200 answer into out, or fails.
func (ta *testAgent) fileCall(t testing.TB, path string, body, out any) {
	t.Helper()
	status, data := ta.post(t, path, body)
	if status != http.StatusOK {
		t.Fatalf("POST %s: status %d: %s", path, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("decoding %s: %v: %s", path, err, data)
		}
	}
}

// fileCallError posts body to path and expects the error code (and its status).
func (ta *testAgent) fileCallError(t testing.TB, path string, body any, want api.Code) api.Error {
	t.Helper()
	status, data := ta.post(t, path, body)
	var e api.Error
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("POST %s: decoding error: %v: %s", path, err, data)
	}
	if e.Code != want || status != want.HTTPStatus() {
		t.Fatalf("POST %s %s: got %d %s (%s), want %d %s", path, truncate(fmt.Sprint(body), 120), status, e.Code, e.Message, want.HTTPStatus(), want)
	}
	return e
}

func (ta *testAgent) doRaw(t testing.TB, method, path string, body io.Reader, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, "http://agent"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := ta.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestFilesWriteReadJSON(t *testing.T) {
	ta := startAgent(t)
	p := filepath.Join(ta.workspace, "dir", "hello.txt")
	var wr api.WriteFileResult
	ta.fileCall(t, "/files/write", api.WriteFileRequest{Path: p, Content: "héllo\n", CreateParents: true, Mode: "0600"}, &wr)
	if !wr.Success || wr.Path != p || wr.BytesWritten != 7 {
		t.Errorf("write = %+v", wr)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	var rd api.ReadFileResult
	ta.fileCall(t, "/files/read", api.ReadFileRequest{Path: p}, &rd)
	if rd.Content != "héllo\n" || rd.Encoding != api.EncodingUTF8 || rd.IsBinary || rd.Size != 7 || rd.MimeType != "text/plain; charset=utf-8" {
		t.Errorf("read = %+v", rd)
	}
	bin := []byte{0x89, 'P', 'N', 'G', 0, 0xff, 0xfe}
	b64 := base64.StdEncoding.EncodeToString(bin)
	ta.fileCall(t, "/files/write", api.WriteFileRequest{Path: p + ".bin", Content: b64, Encoding: "base64"}, nil)
	ta.fileCall(t, "/files/read", api.ReadFileRequest{Path: p + ".bin"}, &rd)
	if rd.Content != b64 || rd.Encoding != api.EncodingBase64 || !rd.IsBinary {
		t.Errorf("binary read = %+v", rd)
	}
	ta.fileCallError(t, "/files/read", api.ReadFileRequest{Path: p + ".bin", Encoding: "utf-8"}, api.CodeValidationFailed)
	ta.fileCall(t, "/files/read", api.ReadFileRequest{Path: p, Encoding: "base64"}, &rd)
	if rd.Content != base64.StdEncoding.EncodeToString([]byte("héllo\n")) {
		t.Errorf("forced base64 = %+v", rd)
	}
}

func TestFilesErrorCodes(t *testing.T) {
	ta := startAgent(t)
	ws := ta.workspace
	os.WriteFile(filepath.Join(ws, "file"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(ws, "dir", "sub"), 0o755)
	cases := []struct {
		path string
		body any
		want api.Code
	}{
		{"/files/read", api.ReadFileRequest{Path: filepath.Join(ws, "missing")}, api.CodeFileNotFound},
		{"/files/read", api.ReadFileRequest{Path: filepath.Join(ws, "dir")}, api.CodeIsDirectory},
		{"/files/read", api.ReadFileRequest{Path: filepath.Join(ws, "file", "x")}, api.CodeNotDirectory},
		{"/files/read", api.ReadFileRequest{Path: ""}, api.CodeValidationFailed},
		{"/files/read", api.ReadFileRequest{Path: ws + "/a\x00b"}, api.CodeValidationFailed},
		{"/files/read", api.ReadFileRequest{Path: "/" + strings.Repeat("a/", 2100)}, api.CodeValidationFailed},
		{"/files/read", api.ReadFileRequest{Path: filepath.Join(ws, strings.Repeat("n", 256))}, api.CodeNameTooLong},
		{"/files/read", api.ReadFileRequest{Path: "/proc/self/environ"}, api.CodePermissionDenied},
		{"/files/read", `{"path":"/x","bogus":1}`, api.CodeValidationFailed},
		{"/files/read", `{"path":`, api.CodeInvalidJSON},
		{"/files/read", api.ReadFileRequest{Path: "rel", SessionID: "nope"}, api.CodeSessionNotFound},
		{"/files/write", api.WriteFileRequest{Path: filepath.Join(ws, "dir")}, api.CodeIsDirectory},
		{"/files/write", api.WriteFileRequest{Path: filepath.Join(ws, "no", "parent")}, api.CodeFileNotFound},
		{"/files/write", api.WriteFileRequest{Path: filepath.Join(ws, "f"), Encoding: "base64", Content: "!!"}, api.CodeValidationFailed},
		{"/files/write", api.WriteFileRequest{Path: filepath.Join(ws, "f"), Mode: "999"}, api.CodeValidationFailed},
		{"/files/write", api.WriteFileRequest{Path: "/proc/self/mem", Content: "x"}, api.CodePermissionDenied},
		{"/files/mkdir", api.PathRequest{Path: filepath.Join(ws, "dir")}, api.CodeFileExists},
		{"/files/mkdir", api.PathRequest{Path: filepath.Join(ws, "a", "b")}, api.CodeFileNotFound},
		{"/files/delete", api.PathRequest{Path: filepath.Join(ws, "dir")}, api.CodeIsDirectory},
		{"/files/delete", api.PathRequest{Path: filepath.Join(ws, "missing")}, api.CodeFileNotFound},
		{"/files/delete", api.PathRequest{Path: "/", Recursive: true}, api.CodeValidationFailed},
		{"/files/rename", api.RenameRequest{OldPath: filepath.Join(ws, "file"), NewPath: filepath.Join(ws, "dir")}, api.CodeFileExists},
		{"/files/rename", api.RenameRequest{SourcePath: "/a", DestinationPath: "/b"}, api.CodeValidationFailed},
		{"/files/move", api.RenameRequest{SourcePath: filepath.Join(ws, "missing"), DestinationPath: filepath.Join(ws, "x")}, api.CodeFileNotFound},
		{"/files/list", api.ListFilesRequest{Path: filepath.Join(ws, "file")}, api.CodeNotDirectory},
		{"/files/list", api.ListFilesRequest{Path: "/proc"}, api.CodePermissionDenied},
		{"/files/stat", api.PathRequest{Path: filepath.Join(ws, "missing")}, api.CodeFileNotFound},
	}
	for _, c := range cases {
		ta.fileCallError(t, c.path, c.body, c.want)
	}
}

func TestFilesJSONSizeLimit(t *testing.T) {
	ta := startAgent(t)
	big := filepath.Join(ta.workspace, "big")
	f, _ := os.Create(big)
	f.Truncate(api.MaxJSONFileBytes + 1)
	f.Close()
	e := ta.fileCallError(t, "/files/read", api.ReadFileRequest{Path: big}, api.CodeFileTooLarge)
	if !strings.Contains(e.Message, "/files/raw") {
		t.Errorf("message does not say what to use instead: %s", e.Message)
	}
	body := `{"path":"` + big + `","content":"` + strings.Repeat("a", api.MaxJSONWriteBody) + `"}`
	ta.fileCallError(t, "/files/write", body, api.CodeFileTooLarge)
	body = `{"path":"` + big + `","content":"` + strings.Repeat("a", api.MaxJSONFileBytes+1) + `"}`
	ta.fileCallError(t, "/files/write", body, api.CodeFileTooLarge)
}

func TestFilesRawWithRange(t *testing.T) {
	ta := startAgent(t)
	p := filepath.Join(ta.workspace, "sub", "data.bin")
	payload := bytes.Repeat([]byte("0123456789"), 100_000)
	q := "/files/raw?" + url.Values{"path": {p}, "createParents": {"true"}, "mode": {"0640"}}.Encode()
	resp := ta.doRaw(t, http.MethodPut, q, bytes.NewReader(payload), nil)
	var wr api.WriteFileResult
	if resp.StatusCode != http.StatusOK || json.Unmarshal(readAll(t, resp), &wr) != nil || wr.BytesWritten != int64(len(payload)) {
		t.Fatalf("PUT raw: %d %+v", resp.StatusCode, wr)
	}
	get := "/files/raw?" + url.Values{"path": {p}}.Encode()
	resp = ta.doRaw(t, http.MethodGet, get, nil, nil)
	if got := readAll(t, resp); !bytes.Equal(got, payload) || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET raw: %d bytes, headers %v", len(got), resp.Header)
	}
	etag := resp.Header.Get("ETag")
	resp = ta.doRaw(t, http.MethodGet, get, nil, http.Header{"Range": {"bytes=5-14"}})
	if got := readAll(t, resp); resp.StatusCode != http.StatusPartialContent || string(got) != "5678901234" {
		t.Errorf("range: %d %q", resp.StatusCode, got)
	}
	resp = ta.doRaw(t, http.MethodGet, get, nil, http.Header{"Range": {"bytes=-3"}, "If-Range": {etag}})
	if got := readAll(t, resp); resp.StatusCode != http.StatusPartialContent || string(got) != "789" {
		t.Errorf("suffix range: %d %q", resp.StatusCode, got)
	}
	resp = ta.doRaw(t, http.MethodGet, get, nil, http.Header{"Range": {"bytes=99999999-"}})
	var e api.Error
	if json.Unmarshal(readAll(t, resp), &e); resp.StatusCode != 416 || e.Code != api.CodeRangeNotSatisfiable {
		t.Errorf("range past the end: %d %+v", resp.StatusCode, e)
	}
	resp = ta.doRaw(t, http.MethodHead, get, nil, nil)
	if got := readAll(t, resp); resp.StatusCode != 200 || len(got) != 0 || resp.ContentLength != int64(len(payload)) {
		t.Errorf("HEAD: %d, %d bytes, length %d", resp.StatusCode, len(got), resp.ContentLength)
	}
	resp = ta.doRaw(t, http.MethodGet, "/files/raw?path="+url.QueryEscape(filepath.Join(ta.workspace, "nope")), nil, nil)
	if json.Unmarshal(readAll(t, resp), &e); resp.StatusCode != 404 || e.Code != api.CodeFileNotFound {
		t.Errorf("missing: %d %+v", resp.StatusCode, e)
	}
}

// A relative path resolves against the session's working directory, named
// in the body or in the header.
func TestFilesSessionRelativePaths(t *testing.T) {
	ta := startAgent(t)
	sub := filepath.Join(ta.workspace, "project")
	os.Mkdir(sub, 0o755)
	ta.run(t, "cd "+sub)
	var wr api.WriteFileResult
	ta.fileCall(t, "/files/write", api.WriteFileRequest{Path: "src/app.js", Content: "x", CreateParents: true}, &wr)
	if wr.Path != filepath.Join(sub, "src", "app.js") {
		t.Errorf("relative write landed at %s", wr.Path)
	}
	other := filepath.Join(ta.workspace, "other")
	os.Mkdir(other, 0o755)
	if _, err := ta.agent.sessions.Create("s2", session.Options{Cwd: other}); err != nil {
		t.Fatal(err)
	}
	ta.fileCall(t, "/files/write", api.WriteFileRequest{Path: "f", Content: "y", SessionID: "s2"}, &wr)
	if wr.Path != filepath.Join(other, "f") {
		t.Errorf("session s2 write landed at %s", wr.Path)
	}
	resp := ta.doRaw(t, http.MethodGet, "/files/raw?path=f", nil, http.Header{api.SessionHeader: {"s2"}})
	if got := readAll(t, resp); string(got) != "y" {
		t.Errorf("read through the header: %d %q", resp.StatusCode, got)
	}
}

func TestFilesOperations(t *testing.T) {
	ta := startAgent(t)
	ws := ta.workspace
	var pr api.PathResult
	ta.fileCall(t, "/files/mkdir", api.PathRequest{Path: filepath.Join(ws, "a", "b"), Recursive: true, Mode: "0700"}, &pr)
	if fi, _ := os.Stat(filepath.Join(ws, "a", "b")); fi == nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mkdir: %v", fi)
	}
	ta.fileCall(t, "/files/write", api.WriteFileRequest{Path: filepath.Join(ws, "a", "f.txt"), Content: "1"}, nil)
	ta.fileCall(t, "/files/rename", api.RenameRequest{OldPath: filepath.Join(ws, "a", "f.txt"), NewPath: filepath.Join(ws, "a", "g.txt")}, &pr)
	ta.fileCall(t, "/files/move", api.RenameRequest{SourcePath: filepath.Join(ws, "a", "g.txt"), DestinationPath: filepath.Join(ws, "a", "b")}, &pr)
	if pr.Path != filepath.Join(ws, "a", "b", "g.txt") {
		t.Errorf("move into a directory: %s", pr.Path)
	}
	var ex api.ExistsResult
	ta.fileCall(t, "/files/exists", api.PathRequest{Path: pr.Path}, &ex)
	if !ex.Exists || ex.Type != api.FileTypeFile {
		t.Errorf("exists = %+v", ex)
	}
	ta.fileCall(t, "/files/exists", api.PathRequest{Path: filepath.Join(ws, "nope")}, &ex)
	if ex.Exists {
		t.Error("exists of a missing file")
	}
	syscall.Chmod(pr.Path, 0o4755)
	var st api.StatResult
	ta.fileCall(t, "/files/stat", api.PathRequest{Path: pr.Path}, &st)
	if st.Type != api.FileTypeFile || st.Mode != "rwsr-xr-x" || st.OctalMode != "4755" || st.Size != 1 || !st.Permissions.Executable || st.Name != "g.txt" {
		t.Errorf("stat = %+v", st)
	}
	os.Symlink("b/g.txt", filepath.Join(ws, "a", "link"))
	var ls api.ListFilesResult
	ta.fileCall(t, "/files/list", api.ListFilesRequest{Path: filepath.Join(ws, "a"), Recursive: true}, &ls)
	var got []string
	for _, f := range ls.Files {
		got = append(got, f.RelativePath+":"+f.Type)
	}
	if strings.Join(got, " ") != "b:directory b/g.txt:file link:symlink" || ls.Count != 3 {
		t.Errorf("list = %v", got)
	}
	if ls.Files[2].Target != "b/g.txt" || ls.Files[1].AbsolutePath != pr.Path {
		t.Errorf("entries = %+v", ls.Files)
	}
	ta.fileCall(t, "/files/delete", api.PathRequest{Path: filepath.Join(ws, "a"), Recursive: true}, &pr)
	if _, err := os.Stat(filepath.Join(ws, "a")); !os.IsNotExist(err) {
		t.Error("delete left the tree")
	}
}

func (ta *testAgent) readFileStream(t testing.TB, p string) []api.FileStreamEvent {
	t.Helper()
	data, _ := json.Marshal(api.ReadFileRequest{Path: p})
	resp := ta.doRaw(t, http.MethodPost, "/files/read/stream", bytes.NewReader(data), nil)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("read/stream: %d %s", resp.StatusCode, readAll(t, resp))
	}
	var out []api.FileStreamEvent
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var e api.FileStreamEvent
		if err := ev.Decode(&e); err != nil || e.Type != ev.Name {
			t.Fatalf("event %s: %v %+v", ev.Name, err, e)
		}
		out = append(out, e)
	}
}

func TestFilesReadStream(t *testing.T) {
	ta := startAgent(t)
	// Text with a multi-byte character across every chunk boundary.
	text := strings.Repeat("ab€", 70_000) // 350 000 bytes
	p := filepath.Join(ta.workspace, "t.txt")
	os.WriteFile(p, []byte(text), 0o644)
	evs := ta.readFileStream(t, p)
	if evs[0].Type != api.FileEventMetadata || evs[0].Size != int64(len(text)) || evs[0].IsBinary || evs[0].Encoding != api.EncodingUTF8 {
		t.Fatalf("metadata = %+v", evs[0])
	}
	var got strings.Builder
	for _, e := range evs[1 : len(evs)-1] {
		if e.Type != api.FileEventChunk || e.Encoding != "" {
			t.Fatalf("chunk = %+v", e)
		}
		got.WriteString(e.Data)
	}
	last := evs[len(evs)-1]
	if got.String() != text || last.Type != api.EventComplete || last.BytesRead != int64(len(text)) {
		t.Errorf("text: %d bytes back, last %+v", got.Len(), last)
	}
	bin := make([]byte, 200_000)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	os.WriteFile(p, bin, 0o644)
	evs = ta.readFileStream(t, p)
	var back []byte
	for _, e := range evs[1 : len(evs)-1] {
		b, err := base64.StdEncoding.DecodeString(e.Data)
		if err != nil || e.Encoding != api.EncodingBase64 {
			t.Fatalf("binary chunk %+v: %v", e, err)
		}
		back = append(back, b...)
	}
	if !evs[0].IsBinary || !bytes.Equal(back, bin) {
		t.Errorf("binary: %d bytes back", len(back))
	}
	os.WriteFile(p, nil, 0o644)
	evs = ta.readFileStream(t, p)
	if len(evs) != 2 || evs[1].Type != api.EventComplete {
		t.Errorf("empty file: %+v", evs)
	}
}

func TestFilesArchiveRoundTrip(t *testing.T) {
	ta := startAgent(t)
	src := filepath.Join(ta.workspace, "src")
	os.MkdirAll(filepath.Join(src, "node_modules", "x"), 0o755)
	os.WriteFile(filepath.Join(src, "main.py"), []byte("print(1)"), 0o755)
	os.WriteFile(filepath.Join(src, "node_modules", "x", "y"), []byte("dep"), 0o644)
	resp := ta.doRaw(t, http.MethodGet, "/files/archive?"+url.Values{"path": {src}, "exclude": {"node_modules"}}.Encode(), nil, nil)
	archive := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-tar" {
		t.Fatalf("export: %d %s", resp.StatusCode, archive)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, " ") != "main.py" {
		t.Errorf("archive holds %v", names)
	}
	dst := filepath.Join(ta.workspace, "restored")
	resp = ta.doRaw(t, http.MethodPut, "/files/archive?"+url.Values{"path": {dst}}.Encode(), bytes.NewReader(archive), nil)
	var ar api.ArchiveResult
	if json.Unmarshal(readAll(t, resp), &ar); resp.StatusCode != 200 || ar.Entries != 1 || ar.Bytes != 8 {
		t.Errorf("import: %d %+v", resp.StatusCode, ar)
	}
	if fi, err := os.Stat(filepath.Join(dst, "main.py")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("restored: %v %v", fi, err)
	}
	resp = ta.doRaw(t, http.MethodPut, "/files/archive?"+url.Values{"path": {dst}}.Encode(), strings.NewReader("not a tar archive, just text that goes on for a while......................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................."), nil)
	var e api.Error
	if json.Unmarshal(readAll(t, resp), &e); e.Code != api.CodeValidationFailed {
		t.Errorf("garbage archive: %d %+v", resp.StatusCode, e)
	}
}

func TestFilesWatchStream(t *testing.T) {
	ta := startAgent(t)
	dir := filepath.Join(ta.workspace, "watched")
	os.Mkdir(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data, _ := json.Marshal(api.WatchRequest{Path: dir, Recursive: true, Exclude: []string{"*.tmp"}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/files/watch", bytes.NewReader(data))
	resp, err := ta.client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch: %v %v", err, resp)
	}
	r := sse.NewReader(resp.Body)
	nextEvent := func() api.WatchEvent {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		var e api.WatchEvent
		ev.Decode(&e)
		return e
	}
	if e := nextEvent(); e.Type != api.WatchEventWatching || e.Path != dir {
		t.Fatalf("first event = %+v", e)
	}
	os.WriteFile(filepath.Join(dir, "x.tmp"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "a.txt"), nil, 0o644)
	if e := nextEvent(); e.Type != api.WatchEventEvent || e.EventType != api.ChangeCreate || e.Path != filepath.Join(dir, "a.txt") {
		t.Errorf("event = %+v", e)
	}
	if n := ta.agent.server.files.hub.Len(); n != 1 {
		t.Errorf("%d watches while streaming", n)
	}
	resp.Body.Close()
	cancel()
	eventually(t, 5*time.Second, "the watch to be released", func() bool { return ta.agent.server.files.hub.Len() == 0 })
}

func TestFilesWatchLimit(t *testing.T) {
	ta := startAgent(t)
	var bodies []io.Closer
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	for i := 0; i < api.MaxWatches; i++ {
		data, _ := json.Marshal(api.WatchRequest{Path: ta.workspace})
		resp := ta.doRaw(t, http.MethodPost, "/files/watch", bytes.NewReader(data), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("watch %d: %d %s", i, resp.StatusCode, readAll(t, resp))
		}
		bodies = append(bodies, resp.Body)
	}
	ta.fileCallError(t, "/files/watch", api.WatchRequest{Path: ta.workspace}, api.CodeResourceExhausted)
	ta.fileCallError(t, "/files/changes", api.WatchRequest{Path: ta.workspace}, api.CodeResourceExhausted)
}

func TestFilesChanges(t *testing.T) {
	ta := startAgent(t)
	var c api.ChangesResult
	ta.fileCall(t, "/files/changes", api.WatchRequest{Path: ta.workspace}, &c)
	if c.Status != api.ChangesResync || c.Version == "" {
		t.Fatalf("first poll = %+v", c)
	}
	os.WriteFile(filepath.Join(ta.workspace, "n"), nil, 0o644)
	v := c.Version
	eventually(t, 5*time.Second, "a change", func() bool {
		ta.fileCall(t, "/files/changes", api.WatchRequest{Path: ta.workspace, Since: v}, &c)
		return c.Status == api.ChangesChanged
	})
	if len(c.Events) == 0 || c.Events[0].Path != filepath.Join(ta.workspace, "n") || c.Events[0].EventType != api.ChangeCreate {
		t.Errorf("changes = %+v", c)
	}
	ta.fileCall(t, "/files/changes", api.WatchRequest{Path: ta.workspace, Since: c.Version}, &c)
	if c.Status != api.ChangesUnchanged {
		t.Errorf("then = %+v", c)
	}
}

// A body cut short is an error, and the file this call made is removed.
func TestFilesRawUploadCutShort(t *testing.T) {
	ta := startAgent(t)
	p := filepath.Join(ta.workspace, "cut")
	pr, pw := io.Pipe()
	go func() {
		pw.Write(make([]byte, 1000))
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	req, _ := http.NewRequest(http.MethodPut, "http://agent/files/raw?path="+url.QueryEscape(p), pr)
	req.ContentLength = 5000
	resp, err := ta.client.Do(req)
	if err == nil {
		readAll(t, resp)
		if resp.StatusCode == 200 {
			t.Errorf("a short body was accepted")
		}
	}
	eventually(t, 5*time.Second, "the partial file to be removed", func() bool {
		_, err := os.Stat(p)
		return os.IsNotExist(err)
	})
}

func TestCopyFull(t *testing.T) {
	var dst bytes.Buffer
	src := io.MultiReader(strings.NewReader("abc"), strings.NewReader("defgh"), strings.NewReader("ij"))
	n, err := copyFull(&dst, src, make([]byte, 4))
	if err != nil || n != 10 || dst.String() != "abcdefghij" {
		t.Errorf("%d %v %q", n, err, dst.String())
	}
	_, err = copyFull(&dst, io.MultiReader(strings.NewReader("ab"), iotest{}), make([]byte, 4))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut body: %v", err)
	}
}

type iotest struct{}

func (iotest) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
