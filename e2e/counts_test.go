package e2e

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// perUserCounts prints how many of each per-user kernel object it could
// make, up to its limits: inotify instances, POSIX message queues of about
// 80 KiB (10 messages of 8 KiB) and real-time signals queued to itself
// while it blocks them, as "inotify N mq N rtsig N". With a file name it
// writes the line there and keeps them all until killed.
const perUserCounts = `python3 -c '
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
rt = ctypes.CDLL("librt.so.1", use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]
def count(limit, make):
    n = 0
    while n < limit and make(n) >= 0:
        n += 1
    return n
sig = signal.SIGRTMIN
signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
got = [
    count(int(sys.argv[1]), lambda n: libc.inotify_init1(0)),
    count(int(sys.argv[2]), lambda n: rt.mq_open(b"/q%d" % n, os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(Attr(0, 10, 8192, 0)))),
    count(int(sys.argv[3]), lambda n: libc.sigqueue(os.getpid(), sig, ctypes.c_long(n))),
]
line = "inotify %d mq %d rtsig %d" % tuple(got)
if len(sys.argv) < 5:
    print(line)
    sys.exit()
with open(sys.argv[4] + ".tmp", "w") as f:
    f.write(line)
os.rename(sys.argv[4] + ".tmp", sys.argv[4])
time.sleep(3600)
' `

// TestIsolationOfPerUserKernelCounts tries to starve one sandbox (and the
// host's root) of per-user kernel objects from another: the kernel counts
// inotify instances, message queue bytes and queued signals per user, in
// each user namespace and for its owner above it. A sandbox whose user
// namespace the host's root owned charged them all to root: one that took
// root's 128 inotify instances, 800 KiB of queues and 96,367 queued signals
// left the other sandboxes unable to make a single one. Each sandbox's
// namespace is its own root's, so it uses up only its own.
func TestIsolationOfPerUserKernelCounts(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		hog, other := d.Client.Sandbox("counts-hog"), d.Client.Sandbox("counts-other")
		run(t, other, "true")
		got := trim(run(t, hog, fmt.Sprintf(`(%s 1000 1000 100000 /tmp/held >/dev/null 2>&1 &)
			for i in $(seq 600); do [ -e /tmp/held ] && break; sleep 0.1; done; cat /tmp/held`, perUserCounts)))
		defer run(t, hog, "pkill -f /tmp/held || true")
		var inotify, mq, rtsig int
		if _, err := fmt.Sscanf(got, "inotify %d mq %d rtsig %d", &inotify, &mq, &rtsig); err != nil {
			t.Fatalf("the hog printed %q: %v", got, err)
		}
		t.Logf("one sandbox holds: %s", got)
		if !onGVisor(t) && (inotify == 1000 || mq == 1000 || rtsig == 100000) {
			t.Errorf("one sandbox made %s: want the host's per-user limits to stop it", got)
		}
		if got := trim(run(t, other, perUserCounts+"3 2 3")); got != "inotify 3 mq 2 rtsig 3" {
			t.Errorf("while one sandbox holds its share, another made %q, want inotify 3 mq 2 rtsig 3", got)
		}
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			t.Errorf("while one sandbox holds its share, the host's root: inotify_init1: %v", err)
		} else {
			unix.Close(fd)
		}
	})
}
