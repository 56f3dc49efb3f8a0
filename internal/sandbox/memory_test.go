package sandbox

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMemory is a host whose available memory is total less perSandbox for
// each live fake container.
type fakeMemory struct {
	rt         *fakeRuntime
	perSandbox int64

	mu       sync.Mutex
	total    int64
	pressure float64
}

func (f *fakeMemory) Available() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total - int64(f.rt.live())*f.perSandbox, nil
}

func (f *fakeMemory) Pressure() (float64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pressure, true
}

func (f *fakeMemory) set(total int64, pressure float64) {
	f.mu.Lock()
	f.total, f.pressure = total, pressure
	f.mu.Unlock()
}

const mib = 1 << 20

// memoryHarness is a host with 1 GiB kept in reserve on which each
// sandbox really uses 100 MiB, whatever its limit (256 MiB).
func memoryHarness(t *testing.T, total int64) (*harness, *fakeMemory) {
	var mem *fakeMemory
	h := newHarness(t, func(o *Options) {
		o.Capacity.MemoryReserve = 1024 * mib
		o.Capacity.MemoryPressure = 20
	})
	mem = &fakeMemory{rt: h.rt, perSandbox: 100 * mib, total: total}
	h.m.opts.HostMemory = mem
	return h, mem
}

func statusOf(t *testing.T, h *harness, id string) Status {
	t.Helper()
	inf, err := h.m.Get(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	return inf.Status
}

// TestAdmissionCountsRealUseNotLimits: limits that add up to more than the
// host has do not matter while the host has memory available.
func TestAdmissionCountsRealUseNotLimits(t *testing.T) {
	h, _ := memoryHarness(t, 4096*mib)
	// 12 × 256 MiB of limits = 3 GiB; 12 × 100 MiB used leaves 2.8 GiB.
	for i := range 12 {
		h.ensure(string(rune('a'+i)), Config{})
	}
	if n := h.rt.live(); n != 12 {
		t.Errorf("%d running, want 12", n)
	}
}

// TestAdmissionPutsTheLeastRecentlyUsedToSleepWhenMemoryRunsLow: at the
// reserve, a start puts the least recently used idle sandbox to sleep;
// with every sandbox in use, it is refused.
func TestAdmissionPutsTheLeastRecentlyUsedToSleepWhenMemoryRunsLow(t *testing.T) {
	// Room for 3 above the reserve and the 32 MiB of a start in flight.
	h, _ := memoryHarness(t, 1024*mib+3*100*mib+16*mib)
	for _, id := range []string{"old", "mid", "new"} {
		h.ensure(id, Config{})
		h.clock.Advance(time.Second)
	}
	h.ensure("fourth", Config{})
	if s := statusOf(t, h, "old"); s != StatusSleeping {
		t.Errorf("least recently used: %s, want sleeping", s)
	}
	if reason := h.row("old").StatusReason; !strings.Contains(reason, "make room") {
		t.Errorf("reason %q", reason)
	}
	for _, id := range []string{"mid", "new", "fourth"} {
		if s := statusOf(t, h, id); s != StatusRunning {
			t.Errorf("%s: %s, want running", id, s)
		}
		lease, err := h.m.Acquire(bg, id)
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Release()
	}
	_, err := h.m.Acquire(bg, "old")
	if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "MiB of memory available") {
		t.Errorf("waking with every sandbox in use: %v, want ErrCapacity about memory", err)
	}
	if n := h.rt.live(); n != 3 {
		t.Errorf("%d running, want 3", n)
	}
}

// TestBackgroundReliefSleepsIdleSandboxesUnderTheReserve: when sandboxes'
// use grows (here: the host's memory shrinks), the background pass puts
// idle sandboxes to sleep, least recently used first, until the reserve is
// free again, and leaves those in use alone.
func TestBackgroundReliefSleepsIdleSandboxesUnderTheReserve(t *testing.T) {
	h, mem := memoryHarness(t, 8192*mib)
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		h.ensure(id, Config{})
		h.clock.Advance(time.Second)
	}
	lease, err := h.m.Acquire(bg, "a") // in use: never put to sleep
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	h.m.relieveMemory(bg)
	if n := h.rt.live(); n != 5 {
		t.Fatalf("with memory to spare: %d running, want 5", n)
	}
	// 5 × 100 MiB used, and 250 MiB short of the reserve: two must sleep.
	mem.set(1024*mib+5*100*mib-250*mib, 0)
	h.m.relieveMemory(bg)
	want := map[string]Status{"a": StatusRunning, "b": StatusSleeping, "c": StatusSleeping, "d": StatusSleeping, "e": StatusRunning}
	// b, c and d: b and c free 200 MiB, still 50 short; d frees the rest.
	for id, w := range want {
		if s := statusOf(t, h, id); s != w {
			t.Errorf("%s: %s, want %s", id, s, w)
		}
	}
	if reason := h.row("b").StatusReason; !strings.Contains(reason, "MiB of memory available") {
		t.Errorf("reason %q", reason)
	}
}

// TestPressureSleepsOneIdleSandboxAtATime: under memory pressure a start
// first puts an idle sandbox to sleep, and the background pass one per
// round (pressure is averaged over 10 s and lags what a sleep frees).
func TestPressureSleepsOneIdleSandboxAtATime(t *testing.T) {
	h, mem := memoryHarness(t, 8192*mib)
	for _, id := range []string{"a", "b", "c"} {
		h.ensure(id, Config{})
		h.clock.Advance(time.Second)
	}
	mem.set(8192*mib, 35)
	h.m.relieveMemory(bg)
	if got := []Status{statusOf(t, h, "a"), statusOf(t, h, "b")}; got[0] != StatusSleeping || got[1] != StatusRunning {
		t.Errorf("after one round under pressure: a %s, b %s; want sleeping, running", got[0], got[1])
	}
	mem.set(8192*mib, 0)
	h.ensure("d", Config{})
	if s := statusOf(t, h, "b"); s != StatusRunning {
		t.Errorf("without pressure b is %s, want running", s)
	}
}

func TestParseProcMemory(t *testing.T) {
	avail, err := parseMemAvailable([]byte("MemTotal:       24578000 kB\nMemFree:         1000 kB\nMemAvailable:   22000000 kB\n"))
	if err != nil || avail != 22000000<<10 {
		t.Errorf("MemAvailable: %d %v", avail, err)
	}
	if _, err := parseMemAvailable([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Error("no MemAvailable line: no error")
	}
	p, ok := parsePressure([]byte("some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=5\n"))
	if !ok || p != 12.5 {
		t.Errorf("pressure %v %v", p, ok)
	}
	if avail, err := (ProcMemory{}).Available(); err != nil || avail <= 0 {
		t.Errorf("this host's MemAvailable: %d %v", avail, err)
	}
}
