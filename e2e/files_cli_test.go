package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFilesCLI(t *testing.T) {
	d := daemon(t)
	mustCLI := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, d, stdin, args...)
		if code != 0 {
			t.Fatalf("sandbox %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	local := t.TempDir()
	blob := bytes.Repeat([]byte{0, 1, 2, 0xff}, 300_000)
	os.WriteFile(filepath.Join(local, "blob.bin"), blob, 0o644)
	os.MkdirAll(filepath.Join(local, "proj", "src"), 0o755)
	os.WriteFile(filepath.Join(local, "proj", "src", "main.py"), []byte("print(1)\n"), 0o755)
	os.Symlink("src/main.py", filepath.Join(local, "proj", "entry"))

	mustCLI("", "fs", "mkdir", "-p", "cli", "/workspace/in")
	mustCLI("", "cp", filepath.Join(local, "blob.bin"), "cli:/workspace/in")
	if got := mustCLI("", "fs", "cat", "cli", "/workspace/in/blob.bin"); got != string(blob) {
		t.Errorf("fs cat: %d bytes", len(got))
	}
	mustCLI("from stdin\n", "cp", "-", "cli:/workspace/in/stdin.txt")
	if got := mustCLI("", "cp", "cli:/workspace/in/stdin.txt", "-"); got != "from stdin\n" {
		t.Errorf("cp to stdout: %q", got)
	}
	mustCLI("", "cp", "-r", filepath.Join(local, "proj"), "cli:/workspace/proj")
	if got := mustCLI("", "exec", "cli", "--", "cd /workspace/proj && python3 entry && stat -c %a src/main.py"); got != "1\n755\n" {
		t.Errorf("uploaded tree: %q", got)
	}
	back := filepath.Join(t.TempDir(), "back")
	mustCLI("", "cp", "-r", "cli:/workspace/proj", back)
	if target, _ := os.Readlink(filepath.Join(back, "entry")); target != "src/main.py" {
		t.Errorf("downloaded symlink: %q", target)
	}
	if data, _ := os.ReadFile(filepath.Join(back, "src", "main.py")); string(data) != "print(1)\n" {
		t.Errorf("downloaded file: %q", data)
	}
	ls := mustCLI("", "fs", "ls", "-R", "cli", "/workspace/proj")
	if !strings.Contains(ls, "entry -> src/main.py") || !strings.Contains(ls, "src/main.py") || !strings.HasPrefix(ls, "l") {
		t.Errorf("fs ls:\n%s", ls)
	}
	if got := mustCLI("", "fs", "mv", "cli", "/workspace/in/stdin.txt", "/workspace/proj"); got != "/workspace/proj/stdin.txt\n" {
		t.Errorf("fs mv: %q", got)
	}
	if got := mustCLI("", "fs", "stat", "--json", "cli", "/workspace/proj/src/main.py"); !strings.Contains(got, `"octalMode": "0755"`) {
		t.Errorf("fs stat: %s", got)
	}
	if _, errOut, code := cli(t, d, "", "fs", "rm", "cli", "/workspace/proj"); code != 125 || !strings.Contains(errOut, "IS_DIRECTORY") {
		t.Errorf("fs rm of a directory: %d %s", code, errOut)
	}
	mustCLI("", "fs", "rm", "-r", "cli", "/workspace/proj")
	if _, errOut, code := cli(t, d, "", "fs", "cat", "cli", "/workspace/proj/src/main.py"); code != 125 || !strings.Contains(errOut, "FILE_NOT_FOUND") {
		t.Errorf("cat after rm: %d %s", code, errOut)
	}
}
