package sandbox

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestSetHostnameNamesOnlyTheSandboxsNamespace sets the hostname of a real
// UTS namespace (a child's) from many goroutines at once, some of them on
// threads they locked themselves: the child sees the name, and neither the
// host's hostname nor any caller's thread stays in the child's namespace.
func TestSetHostnameNamesOnlyTheSandboxsNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it enters a UTS namespace")
	}
	child := exec.Command("/bin/sh", "-c", "read _; cat /proc/sys/kernel/hostname")
	child.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUTS}
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	child.Stdout = &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	u, err := openUTS(child.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	self, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/uts", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if i%2 == 0 { // a caller that holds its thread already
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
			}
			if err := u.SetHostname("sbx-uts-test"); err != nil {
				t.Errorf("SetHostname: %v", err)
			}
			if i%2 == 0 {
				if ns, _ := os.Readlink("/proc/thread-self/ns/uts"); ns != self {
					t.Errorf("the caller's thread is in UTS namespace %s after SetHostname, not the daemon's %s", ns, self)
				}
			}
		})
	}
	wg.Wait()
	io.WriteString(stdin, "\n")
	stdin.Close()
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != "sbx-uts-test" {
		t.Errorf("the child's hostname is %q, want sbx-uts-test", got)
	}
	if now, _ := os.Hostname(); now != host {
		t.Errorf("the host's hostname became %q (was %q)", now, host)
	}
}
