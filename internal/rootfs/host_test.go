package rootfs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestHostVersionsOutliveTheirOverlays repeats what a daemon restart
// does to the host image: it is prepared again (an unchanged skeleton is
// reused, not replaced), and old versions are collected only once no
// overlay uses them as a lower layer. Deleting a mounted lower layer
// empties the root of a running sandbox.
func TestHostVersionsOutliveTheirOverlays(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts an overlay")
	}
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "hostfs")
	img, err := PrepareHost(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := PrepareHost(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Layers, again.Layers) {
		t.Fatalf("an unchanged skeleton got a new version: %v, then %v", img.Layers, again.Layers)
	}
	if _, err := os.Stat(filepath.Join(img.Layers[0], "etc", "passwd")); err != nil {
		t.Fatalf("the reused version lost its files: %v", err)
	}

	// Two older versions (as after a host upgrade): one still below a
	// running sandbox's overlay, one used by nothing; and an older
	// daemon's unversioned skeleton below another overlay.
	used, unused, legacy := filepath.Join(dir, "0ld0000000000001"), filepath.Join(dir, "0ld0000000000002"), filepath.Join(tmp, "host")
	for _, d := range []string{used, unused, legacy} {
		if err := os.MkdirAll(filepath.Join(d, "tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var overlays []Overlay
	for i, lower := range []string{used, legacy} {
		ov := Overlay{Layers: []string{lower}, Upper: filepath.Join(tmp, "upper", string(rune('a'+i))),
			Work: filepath.Join(tmp, "work", string(rune('a'+i))), Target: filepath.Join(tmp, "root", string(rune('a'+i)))}
		if err := ov.Mount(); err != nil {
			t.Fatal(err)
		}
		defer ov.Unmount()
		overlays = append(overlays, ov)
	}
	removed, err := CollectHost(dir, img, legacy)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{unused}) {
		t.Errorf("collected %v, want only %s", removed, unused)
	}
	for _, ov := range overlays {
		if _, err := os.Stat(filepath.Join(ov.Target, "tmp")); err != nil {
			t.Errorf("a mounted sandbox root lost its /tmp: %v", err)
		}
	}
	if _, err := os.Stat(img.Layers[0]); err != nil {
		t.Errorf("the current version was collected: %v", err)
	}

	// Once the sandboxes are gone, so are their versions.
	for _, ov := range overlays {
		if err := ov.Unmount(); err != nil {
			t.Fatal(err)
		}
	}
	removed, err = CollectHost(dir, img, legacy)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{legacy, used}; !slices.Equal(removed, want) {
		t.Errorf("after the overlays went: collected %v, want %v", removed, want)
	}
	if _, err := os.Stat(img.Layers[0]); err != nil {
		t.Errorf("the current version was collected: %v", err)
	}
}
