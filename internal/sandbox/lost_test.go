package sandbox

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestLostSandboxAnswersLostAndCanBeDestroyed: a sandbox whose files
// vanished behind the daemon's back is not started on an empty disk: it is
// lost, every call answers ErrLost without starting anything, and destroy
// removes it.
func TestLostSandboxAnswersLostAndCanBeDestroyed(t *testing.T) {
	h := newHarness(t, nil)
	h.ensure("gone", Config{})
	if _, err := h.m.Stop(bg, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(h.m.paths(h.keyOf("gone")).dir); err != nil {
		t.Fatal(err)
	}
	creates := h.rt.creates()
	for range 2 {
		if _, err := h.m.Acquire(bg, "gone"); !errors.Is(err, ErrLost) {
			t.Fatalf("Acquire: %v, want ErrLost", err)
		}
	}
	if n := h.rt.creates(); n != creates {
		t.Errorf("%d containers created for a lost sandbox", n-creates)
	}
	inf, err := h.m.Get(bg, "gone")
	if err != nil || inf.Status != StatusLost || !strings.Contains(inf.StatusReason, "vanished") {
		t.Errorf("Get: %s %q %v, want lost with a reason", inf.Status, inf.StatusReason, err)
	}
	if row := h.row("gone"); row.Status != string(StatusLost) {
		t.Errorf("registry: %s, want lost", row.Status)
	}
	if _, err := h.m.Stop(bg, "gone"); !errors.Is(err, ErrLost) {
		t.Errorf("Stop: %v, want ErrLost", err)
	}
	if err := h.m.Destroy(bg, "gone"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := h.m.Get(bg, "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after destroy: %v, want ErrNotFound", err)
	}
	// The ID is free for a new sandbox.
	if inf := h.ensure("gone", Config{}); inf.Status != StatusRunning {
		t.Errorf("recreated: %s", inf.Status)
	}
}

// TestRecoveryFindsLostSandboxes: after a restart, a sandbox whose
// container and disk are both gone is lost; one whose container alone is
// gone (failed or sleeping: whether the daemon saw it die before the
// restart is a race) starts again on its next call.
func TestRecoveryFindsLostSandboxes(t *testing.T) {
	h := newHarness(t, nil)
	h.ensure("disk-gone", Config{})
	h.ensure("container-gone", Config{})
	for _, id := range []string{"disk-gone", "container-gone"} {
		if err := h.rt.Kill(bg, containerID(h.keyOf(id)), 9); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(h.m.paths(h.keyOf("disk-gone")).upper); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if inf, _ := h.m.Get(bg, "disk-gone"); inf.Status != StatusLost {
		t.Errorf("disk gone: %s, want lost", inf.Status)
	}
	if inf, _ := h.m.Get(bg, "container-gone"); inf.Status != StatusFailed && inf.Status != StatusSleeping {
		t.Errorf("container gone: %s, want failed or sleeping", inf.Status)
	}
	if inf := h.ensure("container-gone", Config{}); inf.Status != StatusRunning {
		t.Errorf("container gone, next call: %s", inf.Status)
	}
}

// TestFailedCreateIsRecordedFailed: a create refused after its row was
// written (here: no capacity) leaves the row failed with the reason, not
// creating, and the next call starts it.
func TestFailedCreateIsRecordedFailed(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Capacity.MaxRunning = 1 })
	lease, err := h.m.Acquire(bg, "busy")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.m.Ensure(bg, "late", Config{}); !errors.Is(err, ErrCapacity) {
		t.Fatalf("Ensure on a full host: %v, want ErrCapacity", err)
	}
	row := h.row("late")
	if row.Status != string(StatusFailed) || !strings.Contains(row.StatusReason, "capacity") {
		t.Errorf("registry: %s %q, want failed for capacity", row.Status, row.StatusReason)
	}
	lease.Release()
	if inf := h.ensure("late", Config{}); inf.Status != StatusRunning {
		t.Errorf("next call: %s, want running", inf.Status)
	}
}
