package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func sseEvent(name string, v any) string {
	return fmt.Sprintf("event: %s\ndata: %s\n\n", name, mustJSON(v))
}

func TestWriteFileEncodings(t *testing.T) {
	var got []api.WriteFileRequest
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/files/write", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.WriteFileRequest](t, r)
		got = append(got, req)
		writeJSON(w, 200, api.WriteFileResult{Success: true, Path: req.Path, BytesWritten: int64(len(req.Content))})
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	ctx := context.Background()
	if _, err := sb.WriteFile(ctx, "/a.txt", []byte("héllo"), CreateParents(), WithMode(0o755|fs.ModeSetuid), WithOwner(1000, 1001), InSession("s1")); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.WriteFile(ctx, "b.bin", []byte{0xff, 0}); err != nil {
		t.Fatal(err)
	}
	a, b := got[0], got[1]
	if a.Content != "héllo" || a.Encoding != "" || !a.CreateParents || a.Mode != "4755" || *a.UID != 1000 || *a.GID != 1001 || a.SessionID != "s1" {
		t.Errorf("text write = %+v", a)
	}
	if b.Encoding != api.EncodingBase64 || b.Content != base64.StdEncoding.EncodeToString([]byte{0xff, 0}) {
		t.Errorf("binary write = %+v", b)
	}
}

func TestWriteFileLargeGoesRaw(t *testing.T) {
	var n int64
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/sandboxes/demo/files/raw", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("path") != "/big" || r.ContentLength != api.MaxJSONFileBytes+1 {
			t.Errorf("raw PUT %s, length %d", r.URL, r.ContentLength)
		}
		n, _ = io.Copy(io.Discard, r.Body)
		writeJSON(w, 200, api.WriteFileResult{Success: true, Path: "/big", BytesWritten: n})
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	res, err := sb.WriteFile(context.Background(), "/big", make([]byte, api.MaxJSONFileBytes+1))
	if err != nil || res.BytesWritten != api.MaxJSONFileBytes+1 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestReadFileDecodes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/files/read", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.ReadFileRequest](t, r)
		if req.Path == "/missing" {
			writeError(w, 404, api.CodeFileNotFound, "/missing: no such file or directory", nil)
			return
		}
		writeJSON(w, 200, api.ReadFileResult{Success: true, Path: req.Path, Content: base64.StdEncoding.EncodeToString([]byte{1, 2, 0}), Encoding: api.EncodingBase64, IsBinary: true, Size: 3})
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	f, err := sb.ReadFile(context.Background(), "/x")
	if err != nil || !bytes.Equal(f.Content, []byte{1, 2, 0}) || !f.IsBinary {
		t.Fatalf("%+v %v", f, err)
	}
	_, err = sb.ReadFile(context.Background(), "/missing")
	var e *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &e) || e.Code != api.CodeFileNotFound {
		t.Errorf("missing: %v", err)
	}
}

func TestPathsAreCheckedBeforeSending(t *testing.T) {
	sb := newTestClient(t, http.NotFoundHandler()).Sandbox("demo")
	ctx := context.Background()
	for _, p := range []string{"", "a\x00b", "/" + strings.Repeat("a", api.MaxPathBytes)} {
		if _, err := sb.ReadFile(ctx, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ReadFile(%.10q) = %v", p, err)
		}
		if err := sb.Mkdir(ctx, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("Mkdir(%.10q) = %v", p, err)
		}
	}
	if _, err := sb.GitCheckout(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("GitCheckout(\"\") = %v", err)
	}
}

func TestOpenFileRange(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sandboxes/demo/files/raw", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(api.SessionHeader) != "s1" || r.URL.Query().Get("path") != "rel/f" {
			t.Errorf("headers %v, query %v", r.Header, r.URL.Query())
		}
		switch rg := r.Header.Get("Range"); rg {
		case "bytes=10-19":
			w.Header().Set("Content-Range", "bytes 10-19/100")
			w.Header().Set("ETag", `"abc"`)
			w.WriteHeader(206)
			io.WriteString(w, "0123456789")
		case "bytes=-5", "bytes=95-":
			w.Header().Set("Content-Range", "bytes 95-99/100")
			w.WriteHeader(206)
			io.WriteString(w, "56789")
		default:
			t.Errorf("Range %q", rg)
		}
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	f, err := sb.OpenFile(context.Background(), "rel/f", WithRange(10, 10), InSession("s1"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != "0123456789" || f.Size != 10 || f.TotalSize != 100 || f.ETag != `"abc"` {
		t.Errorf("range read %q %+v", data, f)
	}
	var buf bytes.Buffer
	if n, err := sb.Download(context.Background(), "rel/f", &buf, WithRange(-5, -1), InSession("s1")); err != nil || n != 5 {
		t.Errorf("tail: %d %v", n, err)
	}
	if n, err := sb.Download(context.Background(), "rel/f", &buf, WithRange(95, -1), InSession("s1")); err != nil || n != 5 {
		t.Errorf("from offset: %d %v", n, err)
	}
}

func TestUploadStreams(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/sandboxes/demo/files/raw", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("createParents") != "true" || q.Get("mode") != "0600" {
			t.Errorf("query %v", q)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		writeJSON(w, 200, api.WriteFileResult{Success: true, Path: q.Get("path"), BytesWritten: n})
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	// An io.Reader of unknown length goes chunked.
	pr, pw := io.Pipe()
	go func() {
		for range 100 {
			pw.Write(make([]byte, 1000))
		}
		pw.Close()
	}()
	res, err := sb.Upload(context.Background(), "/x", pr, CreateParents(), WithMode(0o600))
	if err != nil || res.BytesWritten != 100_000 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestWatch(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/files/watch", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.WatchRequest](t, r)
		if !req.Recursive || len(req.Exclude) != 1 || req.Include[0] != "*.go" {
			t.Errorf("request %+v", req)
		}
		w.Header().Set("Content-Type", sse.ContentType)
		io.WriteString(w, sseEvent("watching", api.WatchEvent{Type: "watching", Path: "/w"}))
		io.WriteString(w, ": keepalive\n\n")
		io.WriteString(w, sseEvent("event", api.WatchEvent{Type: "event", EventType: "create", Path: "/w/a.go"}))
		io.WriteString(w, sseEvent("future", map[string]string{"type": "future"}))
		io.WriteString(w, sseEvent("error", api.WatchEvent{Type: "error", Code: api.CodeWatchOverflow, Message: "lost"}))
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	wt, err := sb.Watch(context.Background(), "/w", Recursive(), Include("*.go"), Exclude("vendor"))
	if err != nil {
		t.Fatal(err)
	}
	if wt.Path != "/w" {
		t.Errorf("path %q", wt.Path)
	}
	var got []string
	var last error
	for ev, err := range wt.Events() {
		if err != nil {
			last = err
			break
		}
		got = append(got, ev.EventType+" "+ev.Path)
	}
	var e *Error
	if strings.Join(got, ",") != "create /w/a.go" || !errors.As(last, &e) || e.Code != api.CodeWatchOverflow {
		t.Errorf("events %v, end %v", got, last)
	}
}

func TestWatchThatEndsWithoutTerminal(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/files/watch", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", sse.ContentType)
		io.WriteString(w, sseEvent("watching", api.WatchEvent{Type: "watching", Path: "/w"}))
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	wt, err := sb.Watch(context.Background(), "/w")
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	if _, err := wt.Next(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("cut stream: %v", err)
	}
}

func TestReadFileStream(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/files/read/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", sse.ContentType)
		io.WriteString(w, sseEvent("metadata", api.FileStreamEvent{Type: "metadata", Path: "/f", Size: 6}))
		io.WriteString(w, sseEvent("chunk", api.FileStreamEvent{Type: "chunk", Data: "abc"}))
		io.WriteString(w, sseEvent("chunk", api.FileStreamEvent{Type: "chunk", Data: base64.StdEncoding.EncodeToString([]byte{0, 1, 2}), Encoding: "base64"}))
		io.WriteString(w, sseEvent("complete", api.FileStreamEvent{Type: "complete", BytesRead: 6}))
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	fs, err := sb.ReadFileStream(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	data, err := io.ReadAll(fs)
	if err != nil || string(data) != "abc\x00\x01\x02" || fs.Metadata.Size != 6 {
		t.Errorf("%q %v %+v", data, err, fs.Metadata)
	}
}

func TestGitCheckoutRequest(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/git/checkout", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.GitCheckoutRequest](t, r)
		if req.Branch != "dev" || req.Depth != 1 || req.TargetDir != "p" || req.Timeout != 1500 || req.SessionID != "s" {
			t.Errorf("request %+v", req)
		}
		if strings.Contains(req.RepoURL, "nope") {
			writeError(w, 404, api.CodeGitRepositoryNotFound, "not found", nil)
			return
		}
		writeJSON(w, 200, api.GitCheckoutResult{Success: true, RepoURL: req.RepoURL, Branch: "dev", TargetDir: "/workspace/p"})
	})
	sb := newTestClient(t, mux).Sandbox("demo")
	opts := []GitOption{WithBranch("dev"), WithDepth(1), WithTargetDir("p"), WithCloneTimeout(1499500 * time.Microsecond), InSession("s")}
	res, err := sb.GitCheckout(context.Background(), "https://h/r.git", opts...)
	if err != nil || res.TargetDir != "/workspace/p" {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := sb.GitCheckout(context.Background(), "https://h/nope.git", opts...); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing repo: %v", err)
	}
}

func TestFileErrorClasses(t *testing.T) {
	for code, class := range map[api.Code]error{
		api.CodeFileNotFound:          ErrNotFound,
		api.CodeFileExists:            ErrConflict,
		api.CodeInvalidGitURL:         ErrInvalid,
		api.CodeGitBranchNotFound:     ErrNotFound,
		api.CodeGitRepositoryNotFound: ErrNotFound,
		api.CodeGitNetworkError:       ErrUnavailable,
		api.CodeIsDirectory:           ErrInvalid,
		api.CodeFileTooLarge:          ErrInvalid,
	} {
		e := &Error{Code: code, Status: code.HTTPStatus()}
		if !errors.Is(e, class) {
			t.Errorf("%s (%d) is not %v", code, e.Status, class)
		}
	}
}

func TestSessionFileCallsNameTheSession(t *testing.T) {
	var sessions []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/files/mkdir", func(w http.ResponseWriter, r *http.Request) {
		sessions = append(sessions, decodeBody[api.PathRequest](t, r).SessionID)
		writeJSON(w, 200, api.PathResult{Success: true})
	})
	mux.HandleFunc("PUT /v1/sandboxes/demo/files/raw", func(w http.ResponseWriter, r *http.Request) {
		sessions = append(sessions, r.Header.Get(api.SessionHeader))
		io.Copy(io.Discard, r.Body)
		writeJSON(w, 200, api.WriteFileResult{Success: true})
	})
	mux.HandleFunc("POST /v1/sandboxes/demo/git/checkout", func(w http.ResponseWriter, r *http.Request) {
		sessions = append(sessions, decodeBody[api.GitCheckoutRequest](t, r).SessionID)
		writeJSON(w, 200, api.GitCheckoutResult{Success: true})
	})
	se := newTestClient(t, mux).Sandbox("demo").Session("work")
	ctx := context.Background()
	opts := make([]FileOption, 1, 2)
	opts[0] = Recursive()
	if err := se.Mkdir(ctx, "a/b", opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := se.Upload(ctx, "f", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := se.GitCheckout(ctx, "https://h/r.git"); err != nil {
		t.Fatal(err)
	}
	if strings.Join(sessions, ",") != "work,work,work" {
		t.Errorf("sessions named: %v", sessions)
	}
	if opts[:2][1] != nil {
		t.Error("the caller's slice of options was written to")
	}
}
