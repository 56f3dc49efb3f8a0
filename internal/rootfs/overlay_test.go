package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOverlayManyLayers mounts more layers than fit in mount(2)'s
// one-page option string, and checks their order (the top layer wins).
func TestOverlayManyLayers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts an overlay")
	}
	dir := t.TempDir()
	var layers []string
	for i := 0; i < 120; i++ {
		l := filepath.Join(dir, fmt.Sprintf("layer-with-a-long-name-%s-%03d", strings.Repeat("x", 20), i))
		os.MkdirAll(l, 0o755)
		os.WriteFile(filepath.Join(l, "which"), []byte(fmt.Sprint(i)), 0o644)
		os.WriteFile(filepath.Join(l, fmt.Sprintf("only-%d", i)), nil, 0o644)
		layers = append(layers, l)
	}
	ov := Overlay{Layers: layers, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Target: filepath.Join(dir, "root")}
	if err := ov.Mount(); err != nil {
		t.Fatal(err)
	}
	defer ov.Unmount()
	if data, _ := os.ReadFile(filepath.Join(ov.Target, "which")); string(data) != "119" {
		t.Errorf("which = %q, want the top layer's 119", data)
	}
	for _, i := range []int{0, 60, 119} {
		if _, err := os.Stat(filepath.Join(ov.Target, fmt.Sprintf("only-%d", i))); err != nil {
			t.Errorf("layer %d's file: %v", i, err)
		}
	}
}

// TestOverlayProvidesTmp: an image without /tmp gets one in the sandbox's
// writable layer (a directory, mode 1777); an image whose /tmp is anything
// else, here a symlink, keeps it as it is.
func TestOverlayProvidesTmp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts an overlay")
	}
	for _, tc := range []struct {
		name  string
		image func(layer string)
		want  func(t *testing.T, tmp string)
	}{
		{"no tmp", func(string) {}, func(t *testing.T, tmp string) {
			fi, err := os.Lstat(tmp)
			if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
				t.Errorf("/tmp: %v %v, want a directory with mode 1777", fi, err)
			}
		}},
		{"tmp is a symlink", func(layer string) { os.Symlink("var/tmp", filepath.Join(layer, "tmp")) }, func(t *testing.T, tmp string) {
			if target, err := os.Readlink(tmp); err != nil || target != "var/tmp" {
				t.Errorf("/tmp: %q %v, want the image's symlink to var/tmp", target, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			layer := filepath.Join(dir, "layer")
			os.MkdirAll(filepath.Join(layer, "bin"), 0o755)
			tc.image(layer)
			ov := Overlay{Layers: []string{layer}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Target: filepath.Join(dir, "root")}
			if err := ov.Mount(); err != nil {
				t.Fatal(err)
			}
			defer ov.Unmount()
			tc.want(t, filepath.Join(ov.Target, "tmp"))
		})
	}
}
