package mcpserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/client"
)

// fakeDaemon answers the few routes these tests use, like sandboxd would:
// an exec stream that prints lines lines, raw uploads (kept in files),
// and SANDBOX_NOT_FOUND for destroying "gone".
type fakeDaemon struct {
	lines int

	mu    sync.Mutex
	files map[string]string
}

func (f *fakeDaemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/sandboxes/box/exec/stream":
		s := sse.NewWriter(w)
		s.Send(api.EventStart, api.ExecEvent{Type: api.EventStart, Command: "seq"})
		for i := 1; i <= f.lines; i++ {
			s.Send(api.EventStdout, api.ExecEvent{Type: api.EventStdout, Data: fmt.Sprintf("%d\n", i)})
		}
		code := 0
		s.Send(api.EventComplete, api.ExecEvent{Type: api.EventComplete, ExitCode: &code, Duration: 5})
	case r.Method == http.MethodPut && r.URL.Path == "/v1/sandboxes/box/files/raw":
		data, _ := io.ReadAll(r.Body)
		path := r.URL.Query().Get("path")
		f.mu.Lock()
		f.files[path] = string(data)
		f.mu.Unlock()
		json.NewEncoder(w).Encode(api.WriteFileResult{Success: true, Path: path, BytesWritten: int64(len(data))})
	case r.Method == http.MethodDelete && r.URL.Path == "/v1/sandboxes/gone":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.Error{Code: api.CodeSandboxNotFound, Message: "sandbox gone does not exist"})
	default:
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusTeapot)
	}
}

// connect serves New over an in-memory transport to a fake daemon and
// returns a client session; progress notifications go to progress.
func connect(t *testing.T, f *fakeDaemon, opts Options, progress func(*mcp.ProgressNotificationParams)) *mcp.ClientSession {
	t.Helper()
	f.files = map[string]string{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	st, ct := mcp.NewInMemoryTransports()
	if _, err := New(c, opts).Connect(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	mc := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			if progress != nil {
				progress(r.Params)
			}
		},
	})
	cs, err := mc.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func call(t *testing.T, cs *mcp.ClientSession, params *mcp.CallToolParams) (*mcp.CallToolResult, map[string]any) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), params)
	if err != nil {
		t.Fatalf("calling %s: %v", params.Name, err)
	}
	var structured map[string]any
	data, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(data, &structured)
	return res, structured
}

func TestToolsAndSchemas(t *testing.T) {
	cs := connect(t, &fakeDaemon{}, Options{}, nil)
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	want := []string{"create_sandbox", "list_sandboxes", "destroy_sandbox", "exec", "write_file", "read_file",
		"list_files", "run_code", "start_process", "process_logs", "kill_process", "expose_port"}
	slices.Sort(want) // tools/list is sorted by name
	if !slices.Equal(names, want) {
		t.Errorf("tools = %v, want %v", names, want)
	}
}

func TestInvalidArgumentsAreCodedToolErrors(t *testing.T) {
	cs := connect(t, &fakeDaemon{}, Options{}, nil)
	for _, args := range []map[string]any{
		{"sandbox": "Bad_ID", "command": "true"},
		{"sandbox": "-box", "command": "true"},
		{"sandbox": strings.Repeat("a", 64), "command": "true"},
		{"sandbox": "box"},
		{"sandbox": "box", "command": ""},
		{"sandbox": "box", "command": "true", "timeout_seconds": 0.5},
		{"sandbox": "box", "command": "true", "timeout_seconds": 100000},
		{"sandbox": "box", "command": "true", "extra": true},
		{"sandbox": "box", "command": 7},
	} {
		res, structured := call(t, cs, &mcp.CallToolParams{Name: "exec", Arguments: args})
		errBody, _ := structured["error"].(map[string]any)
		if !res.IsError || errBody["code"] != string(api.CodeValidationFailed) {
			t.Errorf("exec %v: %+v %v, want a VALIDATION_FAILED tool error", args, res, structured)
		}
		if text := res.Content[0].(*mcp.TextContent).Text; !strings.HasPrefix(text, "VALIDATION_FAILED: ") {
			t.Errorf("exec %v: text %q", args, text)
		}
	}
}

func TestDaemonErrorsKeepTheirCode(t *testing.T) {
	cs := connect(t, &fakeDaemon{}, Options{}, nil)
	res, structured := call(t, cs, &mcp.CallToolParams{Name: "destroy_sandbox", Arguments: map[string]any{"sandbox": "gone"}})
	errBody, _ := structured["error"].(map[string]any)
	if !res.IsError || errBody["code"] != string(api.CodeSandboxNotFound) {
		t.Fatalf("destroy_sandbox gone: %+v %v", res, structured)
	}
	if text := res.Content[0].(*mcp.TextContent).Text; text != "SANDBOX_NOT_FOUND: sandbox gone does not exist" {
		t.Errorf("text %q", text)
	}
}

func TestExecOutputIsBoundedAndSpooled(t *testing.T) {
	var mu sync.Mutex
	var streamed strings.Builder
	f := &fakeDaemon{lines: 3000}
	cs := connect(t, f, Options{OutputBytes: 2048}, func(p *mcp.ProgressNotificationParams) {
		mu.Lock()
		streamed.WriteString(p.Message)
		mu.Unlock()
	})
	var full strings.Builder
	for i := 1; i <= f.lines; i++ {
		fmt.Fprintf(&full, "%d\n", i)
	}
	params := &mcp.CallToolParams{Name: "exec", Arguments: map[string]any{"sandbox": "box", "command": "seq 3000"}}
	params.SetProgressToken("p1")
	res, structured := call(t, cs, params)
	if res.IsError {
		t.Fatalf("exec: %+v", res)
	}
	stdout, _ := structured["stdout"].(string)
	if len(stdout) > 2048+100 || !strings.HasPrefix(stdout, "1\n2\n3\n") || !strings.HasSuffix(stdout, "2999\n3000\n") ||
		!strings.Contains(stdout, "bytes of stdout omitted") {
		t.Errorf("stdout in the result (%d bytes): %q", len(stdout), stdout)
	}
	file, _ := structured["stdout_file"].(string)
	if !strings.HasPrefix(file, "/tmp/sandboxd-mcp/exec-") || !strings.HasSuffix(file, ".stdout") {
		t.Fatalf("stdout_file = %q", file)
	}
	f.mu.Lock()
	spooled := f.files[file]
	f.mu.Unlock()
	if spooled != full.String() {
		t.Errorf("the spooled file has %d bytes, want the whole output (%d bytes)", len(spooled), full.Len())
	}
	if text := res.Content[0].(*mcp.TextContent).Text; !strings.Contains(text, "all of it is in "+file) {
		t.Errorf("no note naming the file in %q", text)
	}
	// Notifications may trail the result a little: wait for the last line.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := streamed.String()
		mu.Unlock()
		if got == full.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress streamed %d bytes, want the whole output (%d bytes)", len(got), full.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCaptureKeepsHeadAndTail(t *testing.T) {
	c := newCapture(context.Background(), nil, "t", "stdout", 16)
	c.write([]byte("0123456789"))
	if text, note := c.finish(); text != "0123456789" || note != "" || c.path() != "" {
		t.Errorf("output within the bound: %q %q %q", text, note, c.path())
	}
}

func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code api.Code
		msg  string
	}{
		{&client.Error{Status: 404, Code: api.CodeFileNotFound, Message: "no /x"}, api.CodeFileNotFound, "no /x"},
		{fmt.Errorf("%w: %w", client.ErrUnavailable, io.ErrUnexpectedEOF), CodeUnavailable, "unexpected EOF"},
		{fmt.Errorf("exec: %w", context.Canceled), CodeCancelled, "exec: context canceled"},
		{io.ErrClosedPipe, api.CodeInternal, "io: read/write on closed pipe"},
	} {
		if code, msg := errorOf(tc.err); code != tc.code || msg != tc.msg {
			t.Errorf("errorOf(%v) = %s %q, want %s %q", tc.err, code, msg, tc.code, tc.msg)
		}
	}
}
