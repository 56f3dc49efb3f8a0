package e2e

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// codeOf returns the API error code of err ("" if it has none).
func codeOf(err error) api.Code {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestFilesRoundTrip(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("files")
		ctx := ctxT(t, 2*time.Minute)

		res, err := sb.WriteFile(ctx, "/workspace/app/main.py", []byte("print('hi')\n"), client.CreateParents(), client.WithMode(0o750))
		if err != nil {
			t.Fatal(err)
		}
		if res.Path != "/workspace/app/main.py" || res.BytesWritten != 12 {
			t.Errorf("write = %+v", res)
		}
		if out := run(t, sb, "python3 /workspace/app/main.py; stat -c '%a %U' /workspace/app/main.py"); out != "hi\n750 root\n" {
			t.Errorf("in the sandbox: %q", out)
		}
		run(t, sb, "printf '\\x00\\x01\\xff' > /workspace/app/blob")
		f, err := sb.ReadFile(ctx, "/workspace/app/blob")
		if err != nil || !bytes.Equal(f.Content, []byte{0, 1, 0xff}) || !f.IsBinary || f.Encoding != api.EncodingBase64 {
			t.Errorf("read blob = %+v, %v", f, err)
		}
		f, err = sb.ReadFile(ctx, "/workspace/app/main.py")
		if err != nil || string(f.Content) != "print('hi')\n" || f.IsBinary || f.MimeType != "text/x-python; charset=utf-8" {
			t.Errorf("read text = %+v, %v", f, err)
		}

		// Raw streams, with an owner and a range.
		payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		if _, err := sb.Upload(ctx, "/workspace/data/raw.bin", bytes.NewReader(payload), client.CreateParents(), client.WithOwner(1234, 4321)); err != nil {
			t.Fatal(err)
		}
		if out := run(t, sb, "stat -c '%s %u:%g' /workspace/data/raw.bin; sha256sum < /workspace/data/raw.bin | cut -c1-16"); !strings.HasPrefix(out, "1048576 1234:4321\n") {
			t.Errorf("uploaded: %q", out)
		}
		r, err := sb.OpenFile(ctx, "/workspace/data/raw.bin", client.WithRange(16*1000+3, 5))
		if err != nil {
			t.Fatal(err)
		}
		part, _ := io.ReadAll(r)
		r.Close()
		if string(part) != "34567" || r.TotalSize != int64(len(payload)) {
			t.Errorf("range = %q of %d", part, r.TotalSize)
		}
		var buf bytes.Buffer
		if n, err := sb.Download(ctx, "/workspace/data/raw.bin", &buf); err != nil || n != int64(len(payload)) || !bytes.Equal(buf.Bytes(), payload) {
			t.Errorf("download: %d, %v", n, err)
		}
		fs, err := sb.ReadFileStream(ctx, "/workspace/data/raw.bin")
		if err != nil {
			t.Fatal(err)
		}
		streamed, err := io.ReadAll(fs)
		fs.Close()
		if err != nil || !bytes.Equal(streamed, payload) || fs.Metadata.Size != int64(len(payload)) {
			t.Errorf("read stream: %d bytes, %v", len(streamed), err)
		}

		// Directories, renames, moves, listings.
		if err := sb.Mkdir(ctx, "/workspace/a/b/c", client.Recursive()); err != nil {
			t.Fatal(err)
		}
		if err := sb.Mkdir(ctx, "/workspace/a"); codeOf(err) != api.CodeFileExists {
			t.Errorf("mkdir existing: %v", err)
		}
		if err := sb.RenameFile(ctx, "/workspace/app/main.py", "/workspace/app/app.py"); err != nil {
			t.Fatal(err)
		}
		to, err := sb.MoveFile(ctx, "/workspace/app/app.py", "/workspace/a/b")
		if err != nil || to != "/workspace/a/b/app.py" {
			t.Fatalf("move = %q, %v", to, err)
		}
		if err := sb.RenameFile(ctx, "/workspace/app/blob", "/workspace/a/b/app.py"); codeOf(err) != api.CodeFileExists {
			t.Errorf("rename onto a file: %v", err)
		}
		run(t, sb, "ln -s b/app.py /workspace/a/link")
		ls, err := sb.ListFiles(ctx, "/workspace/a", client.Recursive())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ls.Files {
			names = append(names, e.RelativePath+":"+e.Type)
		}
		if strings.Join(names, " ") != "b:directory b/app.py:file b/c:directory link:symlink" {
			t.Errorf("list = %v", names)
		}
		st, err := sb.Stat(ctx, "/workspace/a/b/app.py")
		if err != nil || st.Mode != "rwxr-x---" || st.OctalMode != "0750" || st.Size != 12 || !st.Permissions.Readable {
			t.Errorf("stat = %+v, %v", st, err)
		}
		if ok, err := sb.Exists(ctx, "/workspace/a/link"); !ok || err != nil {
			t.Errorf("exists link = %v, %v", ok, err)
		}
		if err := sb.DeleteFile(ctx, "/workspace/a"); codeOf(err) != api.CodeIsDirectory {
			t.Errorf("delete dir without recursive: %v", err)
		}
		if err := sb.DeleteFile(ctx, "/workspace/a", client.Recursive()); err != nil {
			t.Fatal(err)
		}
		if ok, _ := sb.Exists(ctx, "/workspace/a"); ok {
			t.Error("still there after delete")
		}
		if _, err := sb.ReadFile(ctx, "/workspace/nope"); codeOf(err) != api.CodeFileNotFound || !errors.Is(err, client.ErrNotFound) {
			t.Errorf("missing: %v", err)
		}
	})
}

// Relative paths resolve against the session's working directory, after
// a cd in that session.
func TestFilesFollowTheSessionDirectory(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("cwd")
		ctx := ctxT(t, time.Minute)
		run(t, sb, "mkdir -p /workspace/my-project && cd /workspace/my-project")
		res, err := sb.WriteFile(ctx, "src/index.js", []byte("x"), client.CreateParents())
		if err != nil || res.Path != "/workspace/my-project/src/index.js" {
			t.Fatalf("write = %+v, %v", res, err)
		}
		if out := run(t, sb, "cat src/index.js"); out != "x" {
			t.Errorf("cat = %q", out)
		}
		ls, err := sb.ListFiles(ctx, ".")
		if err != nil || ls.Path != "/workspace/my-project" || ls.Count != 1 {
			t.Errorf("list . = %+v, %v", ls, err)
		}
		if _, err := sb.ReadFile(ctx, "x", client.InSession("no-such-session")); codeOf(err) != api.CodeSessionNotFound {
			t.Errorf("unknown session: %v", err)
		}

		// A session of its own, with a user: relative paths follow its cd,
		// and what it creates belongs to its user.
		se, err := sb.CreateSession(ctx, client.WithSessionID("alice-work"), client.AsUser("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := se.Exec(ctx, "mkdir -p ~/proj && cd ~/proj"); err != nil {
			t.Fatal(err)
		}
		res, err = se.WriteFile(ctx, "notes/todo.txt", []byte("x"), client.CreateParents())
		if err != nil || res.Path != "/home/alice/proj/notes/todo.txt" {
			t.Fatalf("session write = %+v, %v", res, err)
		}
		if err := se.Mkdir(ctx, "build"); err != nil {
			t.Fatal(err)
		}
		if out := run(t, sb, "stat -c %U /home/alice/proj/notes/todo.txt /home/alice/proj/notes /home/alice/proj/build"); out != "alice\nalice\nalice\n" {
			t.Errorf("owners: %q", out)
		}
		if out, err := se.Exec(ctx, "echo more >> notes/todo.txt && cat notes/todo.txt"); err != nil || out.Stdout != "xmore\n" {
			t.Errorf("the session's user cannot write its file: %+v %v", out, err)
		}
	})
}

// The attacks of the issue. Each must fail or stay inside the sandbox.
func TestFilesPathsStayInTheSandbox(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("paths")
		// A guard against a hang, not a speed check: the subtests take
		// about a minute on gVisor quietly and over two at load 30.
		ctx := ctxT(t, 10*time.Minute)
		run(t, sb, "mkdir -p /workspace/x && cd /workspace/x")
		hostShadow, _ := os.ReadFile("/etc/shadow")

		t.Run("dot-dot reaches the sandbox's own /etc", func(t *testing.T) {
			for _, p := range []string{"../../etc/shadow", "/../../../../etc/shadow", "/workspace/../../etc/shadow"} {
				f, err := sb.ReadFile(ctx, p)
				if err != nil {
					t.Fatalf("read %s: %v", p, err)
				}
				if len(hostShadow) > 0 && bytes.Equal(f.Content, hostShadow) {
					t.Fatalf("read %s returned the host's /etc/shadow", p)
				}
				if want := run(t, sb, "cat /etc/shadow"); string(f.Content) != want {
					t.Errorf("read %s differs from the sandbox's /etc/shadow", p)
				}
			}
		})
		t.Run("host paths do not exist", func(t *testing.T) {
			for _, p := range []string{d.StateDir + "/token", d.StateDir + "/registry.db", d.RunDir} {
				if _, err := sb.ReadFile(ctx, p); codeOf(err) != api.CodeFileNotFound && codeOf(err) != api.CodeIsDirectory {
					t.Errorf("read %s: %v", p, err)
				}
				if ok, _ := sb.Exists(ctx, p); ok {
					t.Errorf("%s exists in the sandbox", p)
				}
			}
		})
		t.Run("symlinks into /proc", func(t *testing.T) {
			run(t, sb, `ln -sfn /proc/1/root /workspace/root1; ln -sfn /proc/self/root /workspace/rootself;
			ln -sfn /proc/self/environ /workspace/env; ln -sfn /proc/1/mem /workspace/mem; ln -sfn /proc/self /workspace/self`)
			for _, p := range []string{
				"/workspace/root1/etc/hostname", "/workspace/rootself/etc/hostname", "/workspace/env",
				"/workspace/mem", "/workspace/self/environ", "/workspace/self/fd/0", "/proc/1/environ", "/proc/self/cmdline",
			} {
				if f, err := sb.ReadFile(ctx, p); err == nil {
					t.Errorf("read %s succeeded: %q", p, f.Content[:min(len(f.Content), 40)])
				}
				if _, err := sb.WriteFile(ctx, p, []byte("x")); err == nil {
					t.Errorf("write %s succeeded", p)
				}
				if _, err := sb.OpenFile(ctx, p); err == nil {
					t.Errorf("raw read %s succeeded", p)
				}
			}
			if _, err := sb.ListFiles(ctx, "/workspace/self/fd"); err == nil {
				t.Error("listed the agent's descriptors")
			}
			if _, err := sb.Watch(ctx, "/workspace/root1"); err == nil {
				t.Error("watched through /proc/1/root")
			}
		})
		t.Run("the agent's own files", func(t *testing.T) {
			for _, p := range []string{"/.sandboxd/agent", "/.sandboxd"} {
				if err := sb.DeleteFile(ctx, p, client.Recursive()); codeOf(err) != api.CodePermissionDenied {
					t.Errorf("delete %s: %v", p, err)
				}
			}
			run(t, sb, "ln -sfn /.sandboxd /workspace/private")
			if _, err := sb.WriteFile(ctx, "/workspace/private/planted", []byte("x")); codeOf(err) != api.CodePermissionDenied {
				t.Errorf("write through a link into the agent's directory: %v", err)
			}
			if _, err := sb.MoveFile(ctx, "/.sandboxd", "/tmp/moved"); codeOf(err) != api.CodePermissionDenied {
				t.Errorf("move /.sandboxd: %v", err)
			}
			if got := trim(run(t, sb, "echo alive")); got != "alive" {
				t.Errorf("sandbox broken: %q", got)
			}
		})
		t.Run("symlink swaps during writes", func(t *testing.T) {
			// User code exchanges /workspace/swap, atomically and as fast as
			// it can, between a directory and a symlink to the agent's private
			// directory, while files are written through it.
			st, err := sb.ExecStream(ctx, `python3 -c '
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir("/workspace"); os.makedirs("swap", exist_ok=True)
if not os.path.lexists("swap.l"): os.symlink("/.sandboxd", "swap.l")
n, end = 0, time.time() + 6
while time.time() < end:
    if libc.renameat2(-100, b"swap", -100, b"swap.l", 2) == 0: n += 1
print(n)'`)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan *client.ExecResult, 1)
			go func() { res, _ := st.Collect(client.Callbacks{}); done <- res }()
			deadline := time.Now().Add(5 * time.Second)
			wrote, refused := 0, 0
			for i := 0; time.Now().Before(deadline); i++ {
				if _, err := sb.Upload(ctx, fmt.Sprintf("/workspace/swap/planted-%d", i), strings.NewReader("x")); err == nil {
					wrote++
				} else {
					refused++
				}
				sb.WriteFile(ctx, fmt.Sprintf("/workspace/swap/json-planted-%d", i), []byte("x"))
				sb.Mkdir(ctx, fmt.Sprintf("/workspace/swap/dir-planted-%d", i))
				sb.Upload(ctx, fmt.Sprintf("/workspace/swap/sub/planted-%d", i), strings.NewReader("x"), client.CreateParents())
			}
			res := <-done
			t.Logf("%s swaps; %d writes went through, %d were refused", trim(res.Stdout), wrote, refused)
			if wrote == 0 || refused == 0 {
				t.Errorf("the race did not happen (%d written, %d refused); the test proves nothing", wrote, refused)
			}
			filepath.WalkDir(d.RunDir, func(p string, e fs.DirEntry, err error) error {
				if err == nil && (strings.Contains(e.Name(), "planted") || e.Name() == "sub") {
					t.Errorf("a write landed on the host: %s", p)
				}
				return nil
			})
			if got := trim(run(t, sb, "ls -A /.sandboxd | grep -c -e planted -e '^sub$' || true")); got != "0" {
				t.Errorf("%s writes landed in the agent's directory", got)
			}
		})
		t.Run("long names and paths", func(t *testing.T) {
			long := strings.Repeat("n", 255)
			if _, err := sb.WriteFile(ctx, "/workspace/"+long, []byte("ok")); err != nil {
				t.Errorf("255-byte name: %v", err)
			}
			if _, err := sb.WriteFile(ctx, "/workspace/"+long+"n", []byte("x")); codeOf(err) != api.CodeNameTooLong {
				t.Errorf("256-byte name: %v", err)
			}
			deep := "/workspace" + strings.Repeat("/d", 2100)
			if _, err := sb.WriteFile(ctx, deep, []byte("x")); codeOf(err) != api.CodeValidationFailed {
				t.Errorf("4 KiB path: %v", err)
			}
		})
		t.Run("many files", func(t *testing.T) {
			// 20,000 creates through gVisor's gofer took over the minute
			// run gives a command at load 30.
			mk := "mkdir -p /workspace/many && cd /workspace/many && seq -f 'f%05g' 1 20000 | xargs touch && cd /workspace/x"
			if res, err := sb.Exec(ctx, mk); err != nil || res.ExitCode != 0 {
				t.Fatalf("exec %q: %v %+v", mk, err, res)
			}
			ls, err := sb.ListFiles(ctx, "/workspace/many")
			if err != nil || ls.Count != 20000 || ls.Truncated {
				t.Fatalf("list: %v %v", ls.Count, err)
			}
			if ls.Files[0].Name != "f00001" || ls.Files[19999].Name != "f20000" {
				t.Errorf("order: %s ... %s", ls.Files[0].Name, ls.Files[19999].Name)
			}
			if err := sb.DeleteFile(ctx, "/workspace/many", client.Recursive()); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func TestFilesTarSnapshotAndRestore(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		src, dst := d.Client.Sandbox("snap-src"), d.Client.Sandbox("snap-dst")
		ctx := ctxT(t, 2*time.Minute)
		run(t, src, `mkdir -p /workspace/proj/src /workspace/proj/node_modules/dep && cd /workspace/proj &&
		echo 'print(1)' > src/main.py && chmod 751 src/main.py && chown 1234:4321 src/main.py &&
		echo dep > node_modules/dep/index.js && ln -s src/main.py entry && ln src/main.py hard &&
		touch -d '2020-01-02 03:04:05' src/main.py && echo log > debug.log`)
		rc, err := src.ExportTar(ctx, "/workspace/proj", client.Exclude("node_modules", "*.log"))
		if err != nil {
			t.Fatal(err)
		}
		archive, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
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
		if strings.Join(names, " ") != "entry hard src/ src/main.py" {
			t.Errorf("archive: %v", names)
		}
		res, err := dst.ImportTar(ctx, "/workspace/restored", bytes.NewReader(archive))
		if err != nil || res.Entries != 4 {
			t.Fatalf("import = %+v, %v", res, err)
		}
		want := "751 1234:4321 2020-01-02 03:04:05\nsrc/main.py\n2\n"
		if got := run(t, dst, "cd /workspace/restored && stat -c '%a %u:%g %y' src/main.py | cut -c1-33 && readlink entry && stat -c %h hard"); got != want {
			t.Errorf("restored:\n%s\nwant:\n%s", got, want)
		}
	})
}

func TestFilesWatch(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("watch")
		ctx := ctxT(t, 2*time.Minute)
		run(t, sb, "mkdir -p /workspace/w/node_modules")
		w, err := sb.Watch(ctx, "/workspace/w", client.Recursive(), client.Exclude("node_modules"))
		if err != nil {
			t.Fatal(err)
		}
		// Watching came first: what happens now is seen.
		run(t, sb, "cd /workspace/w && echo a > a.txt && mkdir -p sub/deep && echo b > sub/deep/b.txt && mv a.txt c.txt && touch node_modules/x && rm c.txt")
		want := []string{"create /workspace/w/a.txt", "modify /workspace/w/a.txt", "create /workspace/w/sub", "create /workspace/w/sub/deep/b.txt",
			"move_from /workspace/w/a.txt", "move_to /workspace/w/c.txt", "delete /workspace/w/c.txt"}
		var seen []string
		for _, wnt := range want {
			for {
				ev, err := w.Next()
				if err != nil {
					t.Fatalf("waiting for %q: %v (seen %v)", wnt, err, seen)
				}
				s := ev.EventType + " " + ev.Path
				seen = append(seen, s)
				if strings.Contains(s, "node_modules") {
					t.Errorf("excluded event %s", s)
				}
				if s == wnt {
					break
				}
			}
		}
		w.Close()

		// A sandbox has at most api.MaxWatches; closed watches are released.
		var open []*client.Watch
		for i := 0; i < api.MaxWatches; i++ {
			w, err := sb.Watch(ctx, "/workspace")
			if err != nil {
				t.Fatalf("watch %d: %v", i, err)
			}
			open = append(open, w)
		}
		if _, err := sb.Watch(ctx, "/workspace"); codeOf(err) != api.CodeResourceExhausted {
			t.Errorf("one watch too many: %v", err)
		}
		for _, w := range open {
			w.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			w, err := sb.Watch(ctx, "/workspace")
			if err == nil {
				w.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("closed watches were not released: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}

		// The pollable form.
		c, err := sb.CheckChanges(ctx, "/workspace/w", "")
		if err != nil || c.Status != api.ChangesResync {
			t.Fatalf("first poll = %+v, %v", c, err)
		}
		run(t, sb, "touch /workspace/w/polled")
		v := c.Version
		for c.Status != api.ChangesChanged {
			if c, err = sb.CheckChanges(ctx, "/workspace/w", v); err != nil {
				t.Fatal(err)
			}
		}
		if c.Events[0].Path != "/workspace/w/polled" {
			t.Errorf("changes = %+v", c.Events)
		}
		if c, _ = sb.CheckChanges(ctx, "/workspace/w", c.Version); c.Status != api.ChangesUnchanged {
			t.Errorf("then = %+v", c)
		}
	})
}

// Concurrent uploads and reads of one sandbox do not mix.
func TestFilesConcurrentTransfers(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("concurrent")
	ctx := ctxT(t, 2*time.Minute)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte('a' + i)}, 3<<20+i)
			p := fmt.Sprintf("/workspace/c/%d", i)
			if _, err := sb.Upload(ctx, p, bytes.NewReader(data), client.CreateParents()); err != nil {
				t.Error(err)
				return
			}
			var buf bytes.Buffer
			if _, err := sb.Download(ctx, p, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
				t.Errorf("file %d: %d bytes back, %v", i, buf.Len(), err)
			}
		}()
	}
	wg.Wait()
}

// A full disk is NO_SPACE, the partial file is removed, and the sandbox
// goes on working.
func TestFilesDiskFull(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("files-tiny-disk", client.WithLimits(api.Limits{DiskBytes: 64 << 20}))
	ctx := ctxT(t, 2*time.Minute)
	_, err := sb.Upload(ctx, "/workspace/big.bin", newPatternReader(100<<20))
	if codeOf(err) != api.CodeNoSpace {
		t.Fatalf("100 MB into a 64 MiB disk: %v, want NO_SPACE", err)
	}
	if ok, err := sb.Exists(ctx, "/workspace/big.bin"); ok || err != nil {
		t.Errorf("the partial file is left (%v, %v)", ok, err)
	}
	if _, err := sb.WriteFile(ctx, "/workspace/small", []byte("still works")); err != nil {
		t.Errorf("after the full disk: %v", err)
	}
}
