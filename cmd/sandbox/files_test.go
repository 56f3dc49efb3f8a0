package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func TestParseCopyArg(t *testing.T) {
	for in, want := range map[string]remotePath{
		"demo:/workspace/a": {id: "demo", path: "/workspace/a", remote: true},
		"demo:rel":          {id: "demo", path: "rel", remote: true},
		"demo:":             {id: "demo", path: ".", remote: true},
		"./a:b":             {path: "./a:b"},
		"/abs:x":            {path: "/abs:x"},
		"Bad_ID:x":          {path: "Bad_ID:x"},
		"file.txt":          {path: "file.txt"},
		"-":                 {path: "-"},
	} {
		if got := parseCopyArg(in); got != want {
			t.Errorf("parseCopyArg(%q) = %+v, want %+v", in, got, want)
		}
	}
}

// statAs answers files/stat: directories named in dirs, FILE_NOT_FOUND
// otherwise.
func statAs(t *testing.T, f *fakeDaemon, dirs ...string) {
	f.HandleFunc("POST /v1/sandboxes/{id}/files/stat", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.PathRequest](t, r)
		for _, d := range dirs {
			if req.Path == d {
				writeJSON(w, 200, api.StatResult{Success: true, FileEntry: api.FileEntry{AbsolutePath: d, Type: api.FileTypeDirectory}})
				return
			}
		}
		writeJSON(w, 404, api.Error{Code: api.CodeFileNotFound, Message: req.Path + ": no such file or directory"})
	})
}

func TestCopyUploadsAFile(t *testing.T) {
	f := newFakeDaemon(t)
	statAs(t, f, "/workspace")
	var gotPath, gotBody, parents string
	f.HandleFunc("PUT /v1/sandboxes/demo/files/raw", func(w http.ResponseWriter, r *http.Request) {
		gotPath, parents = r.URL.Query().Get("path"), r.URL.Query().Get("createParents")
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		writeJSON(w, 200, api.WriteFileResult{Success: true, Path: gotPath, BytesWritten: int64(len(b))})
	})
	local := filepath.Join(t.TempDir(), "data.csv")
	os.WriteFile(local, []byte("a,b\n"), 0o644)
	if res := runCLI(t, f, cliRun{args: []string{"cp", local, "demo:/workspace"}}); res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if gotPath != "/workspace/data.csv" || gotBody != "a,b\n" || parents != "true" {
		t.Errorf("PUT %s (parents %s): %q", gotPath, parents, gotBody)
	}
	if res := runCLI(t, f, cliRun{args: []string{"cp", "-", "demo:/tmp/x"}, stdin: "from stdin"}); res.code != 0 {
		t.Fatalf("stdin: exit %d: %s", res.code, res.stderr)
	}
	if gotPath != "/tmp/x" || gotBody != "from stdin" {
		t.Errorf("stdin PUT %s: %q", gotPath, gotBody)
	}
	dir := t.TempDir()
	if res := runCLI(t, f, cliRun{args: []string{"cp", dir, "demo:/x"}}); res.code != exitFailure || !strings.Contains(res.stderr, "use -r") {
		t.Errorf("directory without -r: %d %s", res.code, res.stderr)
	}
	if res := runCLI(t, f, cliRun{args: []string{"cp", "a", "b"}}); res.code != exitFailure || !strings.Contains(res.stderr, "ID:PATH") {
		t.Errorf("no remote side: %d %s", res.code, res.stderr)
	}
}

func TestCopyDownloadsAFile(t *testing.T) {
	f := newFakeDaemon(t)
	statAs(t, f)
	f.HandleFunc("GET /v1/sandboxes/demo/files/raw", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("path") != "/workspace/out.bin" {
			writeJSON(w, 404, api.Error{Code: api.CodeFileNotFound, Message: "no"})
			return
		}
		w.Write([]byte{0, 1, 2, 3})
	})
	res := runCLI(t, f, cliRun{args: []string{"cp", "demo:/workspace/out.bin", "-"}})
	if res.code != 0 || res.stdout != "\x00\x01\x02\x03" {
		t.Errorf("to stdout: %d %q %s", res.code, res.stdout, res.stderr)
	}
	dir := t.TempDir()
	if res := runCLI(t, f, cliRun{args: []string{"cp", "demo:/workspace/out.bin", dir}}); res.code != 0 {
		t.Fatalf("into a dir: %d %s", res.code, res.stderr)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "out.bin")); !bytes.Equal(data, []byte{0, 1, 2, 3}) {
		t.Errorf("local file %q", data)
	}
	res = runCLI(t, f, cliRun{args: []string{"cp", "demo:/missing", dir}})
	if res.code != exitFailure || !strings.Contains(res.stderr, "FILE_NOT_FOUND") {
		t.Errorf("missing: %d %s", res.code, res.stderr)
	}
}

func TestCopyDirectoriesAsTar(t *testing.T) {
	f := newFakeDaemon(t)
	statAs(t, f, "/workspace/src")
	var names []string
	f.HandleFunc("PUT /v1/sandboxes/demo/files/archive", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("path") != "/workspace/project" {
			t.Errorf("import into %s", r.URL.Query().Get("path"))
		}
		tr := tar.NewReader(r.Body)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
		writeJSON(w, 200, api.ArchiveResult{Success: true, Entries: len(names)})
	})
	local := filepath.Join(t.TempDir(), "project")
	os.MkdirAll(filepath.Join(local, "sub"), 0o755)
	os.WriteFile(filepath.Join(local, "sub", "a.py"), []byte("x"), 0o644)
	os.Symlink("sub/a.py", filepath.Join(local, "link"))
	if res := runCLI(t, f, cliRun{args: []string{"cp", "-r", local, "demo:/workspace/project"}}); res.code != 0 {
		t.Fatalf("upload -r: %d %s", res.code, res.stderr)
	}
	if strings.Join(names, " ") != "link sub sub/a.py" {
		t.Errorf("archive sent: %v", names)
	}

	// Download: the archive tries to write outside the target through a
	// symlink and a ../ name; neither may land.
	outside := t.TempDir()
	f.HandleFunc("GET /v1/sandboxes/demo/files/archive", func(w http.ResponseWriter, r *http.Request) {
		tw := tar.NewWriter(w)
		tw.WriteHeader(&tar.Header{Name: "ok.txt", Mode: 0o600, Size: 2, Typeflag: tar.TypeReg, ModTime: time.Unix(1e9, 0)})
		tw.Write([]byte("ok"))
		tw.WriteHeader(&tar.Header{Name: "esc", Linkname: outside, Typeflag: tar.TypeSymlink})
		tw.WriteHeader(&tar.Header{Name: "esc/pwned", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
		tw.Write([]byte("x"))
		tw.WriteHeader(&tar.Header{Name: "../pwned2", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
		tw.Write([]byte("x"))
		tw.Close()
	})
	dst := filepath.Join(t.TempDir(), "copy")
	res := runCLI(t, f, cliRun{args: []string{"cp", "-r", "demo:/workspace/src", dst}})
	if data, _ := os.ReadFile(filepath.Join(dst, "ok.txt")); string(data) != "ok" {
		t.Errorf("ok.txt = %q (exit %d: %s)", data, res.code, res.stderr)
	}
	if fi, err := os.Stat(filepath.Join(dst, "ok.txt")); err != nil || fi.Mode().Perm() != 0o600 || !fi.ModTime().Equal(time.Unix(1e9, 0)) {
		t.Errorf("ok.txt metadata: %v %v", fi, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("extraction escaped through a symlink: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dst), "pwned2")); err == nil {
		t.Error("extraction escaped through ../")
	}
	if res.code == 0 {
		t.Error("an archive with an escaping entry extracted without an error")
	}
}

func TestFsCommands(t *testing.T) {
	f := newFakeDaemon(t)
	mtime := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	f.HandleFunc("POST /v1/sandboxes/demo/files/list", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.ListFilesRequest](t, r)
		if req.Path != "/w" || !req.Recursive || !req.IncludeHidden || req.SessionID != "s1" {
			t.Errorf("list request %+v", req)
		}
		writeJSON(w, 200, api.ListFilesResult{Success: true, Path: "/w", Count: 2, Files: []api.FileEntry{
			{Name: "src", RelativePath: "src", Type: "directory", Size: 4096, Mode: "rwxr-xr-x", ModifiedAt: mtime},
			{Name: "l", RelativePath: "src/l", Type: "symlink", Size: 3, Mode: "rwxrwxrwx", Target: "../x", ModifiedAt: mtime},
		}})
	})
	var deleted []string
	f.HandleFunc("POST /v1/sandboxes/demo/files/delete", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.PathRequest](t, r)
		deleted = append(deleted, fmt.Sprintf("%s:%v", req.Path, req.Recursive))
		if req.Path == "/missing" {
			writeJSON(w, 404, api.Error{Code: api.CodeFileNotFound, Message: "no"})
			return
		}
		writeJSON(w, 200, api.PathResult{Success: true, Path: req.Path})
	})
	f.HandleFunc("POST /v1/sandboxes/demo/files/move", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.RenameRequest](t, r)
		writeJSON(w, 200, api.PathResult{Success: true, Path: req.DestinationPath + "/a"})
	})
	f.HandleFunc("POST /v1/sandboxes/demo/files/mkdir", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.PathRequest](t, r)
		if !req.Recursive || req.Mode != "0700" {
			t.Errorf("mkdir %+v", req)
		}
		writeJSON(w, 200, api.PathResult{Success: true, Path: req.Path})
	})
	statAs(t, f, "/w")

	res := runCLI(t, f, cliRun{args: []string{"fs", "ls", "-R", "-a", "--session", "s1", "demo", "/w"}})
	want := "drwxr-xr-x  4096   2026-11-21 12:00   src\nlrwxrwxrwx     3   2026-11-21 12:00   src/l -> ../x\n"
	if res.code != 0 || strings.ReplaceAll(res.stdout, " ", "") != strings.ReplaceAll(want, " ", "") {
		t.Errorf("ls: %d %q %s", res.code, res.stdout, res.stderr)
	}
	if res := runCLI(t, f, cliRun{args: []string{"fs", "rm", "-r", "-f", "demo", "/a", "/missing"}}); res.code != 0 || strings.Join(deleted, " ") != "/a:true /missing:true" {
		t.Errorf("rm: %d %v %s", res.code, deleted, res.stderr)
	}
	if res := runCLI(t, f, cliRun{args: []string{"fs", "rm", "demo", "/missing"}}); res.code != exitFailure {
		t.Errorf("rm without -f: %d", res.code)
	}
	if res := runCLI(t, f, cliRun{args: []string{"fs", "mv", "demo", "/a", "/w"}}); res.code != 0 || res.stdout != "/w/a\n" {
		t.Errorf("mv: %d %q", res.code, res.stdout)
	}
	if res := runCLI(t, f, cliRun{args: []string{"fs", "mkdir", "-p", "--mode", "700", "demo", "/x/y"}}); res.code != 0 {
		t.Errorf("mkdir: %d %s", res.code, res.stderr)
	}
	res = runCLI(t, f, cliRun{args: []string{"fs", "stat", "demo", "/w"}})
	if res.code != 0 || !strings.Contains(res.stdout, "type:      directory") {
		t.Errorf("stat: %d %q", res.code, res.stdout)
	}
}

func TestFsWatchPrintsEvents(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("POST /v1/sandboxes/demo/files/watch", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.WatchRequest](t, r)
		if !req.Recursive || strings.Join(req.Exclude, ",") != "node_modules,*.log" {
			t.Errorf("watch request %+v", req)
		}
		w.Header().Set("Content-Type", sse.ContentType)
		for _, ev := range []api.WatchEvent{
			{Type: "watching", Path: "/w"},
			{Type: "event", EventType: "create", Path: "/w/d", IsDirectory: true},
			{Type: "event", EventType: "modify", Path: "/w/d/f\nforged"},
			{Type: "error", Code: api.CodeWatchOverflow, Message: "lost events"},
		} {
			data, _ := json.Marshal(ev)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, data)
		}
	})
	res := runCLI(t, f, cliRun{args: []string{"fs", "watch", "-r", "--exclude", "node_modules", "--exclude", "*.log", "demo", "/w"}})
	if res.stdout != "create /w/d/\nmodify /w/d/f\\nforged\n" {
		t.Errorf("stdout %q", res.stdout)
	}
	if res.code != exitFailure || !strings.Contains(res.stderr, "watching /w") || !strings.Contains(res.stderr, "WATCH_OVERFLOW") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestGitClone(t *testing.T) {
	f := newFakeDaemon(t)
	var got api.GitCheckoutRequest
	f.HandleFunc("POST /v1/sandboxes/demo/git/checkout", func(w http.ResponseWriter, r *http.Request) {
		got = decodeBody[api.GitCheckoutRequest](t, r)
		writeJSON(w, 200, api.GitCheckoutResult{Success: true, RepoURL: "https://h/org/r.git", Branch: "dev", TargetDir: "/workspace/app", Commit: strings.Repeat("ab", 20)})
	})
	res := runCLI(t, f, cliRun{
		args: []string{"git", "clone", "--branch", "dev", "--depth", "1", "--dir", "/workspace/app", "--auth-env", "GIT_AUTH", "demo", "https://h/org/r.git"},
		env:  map[string]string{"GIT_AUTH": "alice:t0ken"},
	})
	if res.code != 0 || res.stdout != "cloned https://h/org/r.git (branch dev, commit abababababab) into /workspace/app\n" {
		t.Errorf("exit %d, %q %s", res.code, res.stdout, res.stderr)
	}
	if got.RepoURL != "https://alice:t0ken@h/org/r.git" || got.Branch != "dev" || got.Depth != 1 || got.TargetDir != "/workspace/app" {
		t.Errorf("request %+v", got)
	}
	res = runCLI(t, f, cliRun{args: []string{"git", "clone", "--auth-env", "NOPE", "demo", "https://h/r.git"}})
	if res.code != exitFailure || !strings.Contains(res.stderr, "user:token") {
		t.Errorf("unset auth env: %d %s", res.code, res.stderr)
	}
}
