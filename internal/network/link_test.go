package network

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

// A dump the kernel interrupts is tried again until one is whole, and
// gives up with the interruption only after dumpAttempts; any other error
// ends it at once.
func TestRetryDumpOutlastsChurn(t *testing.T) {
	calls := 0
	err := retryDump(func() error {
		if calls++; calls < 8 {
			return netlink.ErrDumpInterrupted
		}
		return nil
	})
	if err != nil || calls != 8 {
		t.Errorf("7 interrupted dumps then a whole one: err %v after %d calls, want nil after 8", err, calls)
	}
	calls = 0
	if err := retryDump(func() error { calls++; return netlink.ErrDumpInterrupted }); !errors.Is(err, netlink.ErrDumpInterrupted) || calls != dumpAttempts {
		t.Errorf("always interrupted: err %v after %d calls, want the interruption after %d", err, calls, dumpAttempts)
	}
	calls = 0
	other := errors.New("permission denied")
	if err := retryDump(func() error { calls++; return other }); err != other || calls != 1 {
		t.Errorf("another error: %v after %d calls, want it after 1", err, calls)
	}
}
