package testdaemon

import (
	"os"
	"testing"

	"github.com/sandboxd/sandboxd/internal/hostlock"
)

// TestHeldInterfacePrefixIsSkipped: a test daemon never takes an
// interface prefix another daemon holds (another test process's, picked
// from the same few names), which made it refuse to start.
func TestHeldInterfacePrefixIsSkipped(t *testing.T) {
	SkipUnlessRoot(t)
	if err := os.MkdirAll(hostlock.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	next := ifacePrefix(os.Getpid(), int(seq.Load())+1)
	held, err := hostlock.Acquire(hostlock.Path(hostlock.Dir, "iface", next))
	if err != nil {
		t.Fatalf("holding %s as another daemon would: %v", next, err)
	}
	defer held.Release()
	d := Start(t, Options{})
	if d.IfacePrefix == next || len(d.IfacePrefix) != 3 {
		t.Errorf("the daemon's prefix is %q beside a held %q", d.IfacePrefix, next)
	}
}
