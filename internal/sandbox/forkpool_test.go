package sandbox

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/snapshot"
)

// TestForkPoolHandsOutAStartedFork: once a snapshot is forked, the next
// fork with the same settings takes a sandbox started ahead on the
// snapshot's layer and named for it; a fork with other settings starts
// cold; removing the snapshot discards the warm fork, and one unused for
// forkPoolIdle is discarded too.
func TestForkPoolHandsOutAStartedFork(t *testing.T) {
	var st *snapshot.Store
	h := newHarness(t, func(o *Options) {
		o.WarmPool = 1
		var err error
		if st, err = snapshot.Open(filepath.Join(t.TempDir(), "snapshots")); err != nil {
			t.Fatal(err)
		}
		o.Snapshots = st
	})
	if err := os.MkdirAll(st.LayerPath("sha256-x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := st.Add(snapshot.Snapshot{Name: "s", Image: "host", Runtime: RuntimeCrun, Layer: "sha256-x"}); err != nil {
		t.Fatal(err)
	}
	h.ensure("fork-1", Config{Snapshot: "s"})
	warm := h.waitWarmFork("s")
	creates := h.rt.creates()
	inf := h.ensure("fork-2", Config{Snapshot: "s"})
	if h.keyOf("fork-2") != warm || h.rt.creates() != creates || inf.Config.Snapshot != "s" || inf.Config.SnapshotLayer != "sha256-x" {
		t.Fatalf("fork-2: key %s (warm %s), %d creates: want the warm fork", h.keyOf("fork-2"), warm, h.rt.creates()-creates)
	}
	if got := h.mounts.hostname(h.pidOf("fork-2")); got != "fork-2" {
		t.Errorf("hostname of the adopted fork: %q", got)
	}
	// Other settings: a cold start, and the pool follows the new settings.
	warm = h.waitWarmFork("s")
	h.ensure("fork-env", Config{Snapshot: "s", Env: map[string]string{"A": "1"}})
	if h.keyOf("fork-env") == warm {
		t.Error("a fork with other settings took the warm fork")
	}
	for _, id := range []string{"fork-1", "fork-2", "fork-env"} {
		if err := h.m.Destroy(bg, id); err != nil {
			t.Fatal(err)
		}
	}
	h.waitWarmFork("s")
	h.waitWarm()
	live := h.rt.live()
	if err := h.m.RemoveSnapshot(bg, "s"); err != nil {
		t.Fatal(err)
	}
	if h.rt.live() != live-1 || h.warmFork("s") != "" {
		t.Errorf("after the snapshot's removal: %d containers (was %d), warm fork %q", h.rt.live(), live, h.warmFork("s"))
	}
	// A pool nobody forks from any more goes.
	if err := os.MkdirAll(st.LayerPath("sha256-x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := st.Add(snapshot.Snapshot{Name: "s2", Image: "host", Runtime: RuntimeCrun, Layer: "sha256-x"}); err != nil {
		t.Fatal(err)
	}
	h.ensure("fork-3", Config{Snapshot: "s2"})
	h.waitWarmFork("s2")
	h.clock.Advance(forkPoolIdle + time.Minute)
	h.m.fillForkPools(bg)
	if h.warmFork("s2") != "" {
		t.Error("the warm fork outlived forkPoolIdle")
	}
}

// waitWarmFork waits until snapshot name has a warm fork (started in the
// background after a fork) and returns its key.
func (h *harness) waitWarmFork(name string) string {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h.m.fillForkPools(bg)
		if key := h.warmFork(name); key != "" {
			return key
		}
		if time.Now().After(deadline) {
			h.t.Fatal("no warm fork was started")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// warmFork is the key of the warm fork of snapshot name, or "".
func (h *harness) warmFork(name string) string {
	h.m.forks.mu.Lock()
	defer h.m.forks.mu.Unlock()
	if p := h.m.forks.bySnap[name]; p != nil && p.ready != nil {
		return p.ready.rec.Key
	}
	return ""
}
