package rootfs

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/mountinfo"
)

// lowerSet is every lower directory of the overlays mounted in the
// daemon's mount namespace, by path and by inode: an overlay mounted
// through another spelling of a path (a symlink in the state directory's
// path) still counts.
type lowerSet struct {
	paths  []string
	inodes map[fileID]bool
}

type fileID struct{ dev, ino uint64 }

// overlayLowers reads the lower directories of every overlay in
// /proc/self/mountinfo. The kernel lists them as they were given at mount
// time ("lowerdir=a:b", or "lowerdir+=a" per layer), with ':', ',' and
// white space escaped as octal.
func overlayLowers() (*lowerSet, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	set := &lowerSet{inodes: map[fileID]bool{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options optional... - fstype source superopts
		before, after, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(after)
		if !ok || len(fields) < 3 || fields[0] != "overlay" {
			continue
		}
		// Overlay.Mount gives its directories relative to the mount
		// point's parent.
		var base string
		if f := strings.Fields(before); len(f) > 4 {
			base = filepath.Dir(mountinfo.Unescape(f[4]))
		}
		for _, opt := range strings.Split(fields[2], ",") {
			key, value, _ := strings.Cut(opt, "=")
			if key != "lowerdir" && key != "lowerdir+" && key != "datadir+" {
				continue
			}
			for _, l := range strings.Split(value, ":") {
				if l == "" {
					continue
				}
				l = mountinfo.Unescape(l)
				if !filepath.IsAbs(l) && base != "" {
					l = filepath.Join(base, l)
				}
				set.add(l)
			}
		}
	}
	return set, sc.Err()
}

func (s *lowerSet) add(path string) {
	s.paths = append(s.paths, path)
	if id, ok := idOf(path); ok {
		s.inodes[id] = true
	}
}

// uses reports whether dir, or a directory below it, is a lower layer.
func (s *lowerSet) uses(dir string) bool {
	for _, p := range s.paths {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	id, ok := idOf(dir)
	return ok && s.inodes[id]
}

func idOf(path string) (fileID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}
