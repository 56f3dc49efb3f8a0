package e2e

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/hostlock"
)

// maxSubnetWait bounds how long a test waits for another test process
// to let go of a subnet it puts on the host.
const maxSubnetWait = 10 * time.Minute

// takeSubnet holds, for the rest of the test, the host-wide lock of a
// subnet (such as "198.18.102.0/24") that the test gives the
// host on a veth of its own, and skips the test when the host routes
// that subnet anyway.
//
// Why a lock: e2e processes run beside each other on one host (several
// engineers, or a run beside CI), and each once checked for a route and
// then added the host's address: two could both find none and both add
// 198.18.102.1/24 on interfaces of their own, and one's lookups and
// connections then reached the other's namespace, or nothing once the
// other was done (TestEgressPolicyByDomain: "allowed names resolve to
// \"\""). The lock makes the second wait; the route check then sees only
// routes no test of ours made. The lock is released after the test's
// other cleanups (registered first, it runs last), when its veth is gone.
func takeSubnet(t *testing.T, cidr string) {
	t.Helper()
	if err := os.MkdirAll(hostlock.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := hostlock.Path(hostlock.Dir, "e2e-subnet", strings.ReplaceAll(cidr, "/", "_"))
	deadline := time.Now().Add(maxSubnetWait)
	for {
		l, err := hostlock.Acquire(path)
		if err == nil {
			t.Cleanup(l.Release)
			break
		}
		if !errors.Is(err, hostlock.ErrHeld) {
			t.Fatalf("locking the test subnet %s: %v", cidr, err)
		}
		if time.Now().After(deadline) {
			t.Skipf("skipping: another test process (pid %s) has held the test subnet %s for %s",
				hostlock.Holder(path), cidr, maxSubnetWait)
		}
		time.Sleep(time.Second)
	}
	if out, _ := exec.Command("ip", "-4", "route", "show", cidr).Output(); len(out) > 0 {
		t.Skipf("skipping: the host already routes %s: %s", cidr, out)
	}
}
