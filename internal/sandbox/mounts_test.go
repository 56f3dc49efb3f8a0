package sandbox

import (
	"errors"
	"testing"
)

func TestValidateMountPath(t *testing.T) {
	for _, p := range []string{"/data", "/mnt/bucket", "/workspace/in", "/tmp/x", "/home/u/b", "/var/data", "/procfs"} {
		if err := ValidateMountPath(p); err != nil {
			t.Errorf("ValidateMountPath(%q) = %v; want ok", p, err)
		}
	}
	for _, p := range []string{"", "data", "/", "/proc", "/proc/1", "/sys/x", "/dev/shm", "/.sandboxd", "/.sandboxd/agent",
		"/usr", "/usr/local/x", "/etc/x", "/lib64", "/run/x", "/var/lib/sandboxd-agent/x", "/a/../proc", "/a/", "/a//b",
		"/a,b", "/a\nb", "/" + string(make([]byte, 300))} {
		if err := ValidateMountPath(p); !errors.Is(err, ErrMountPathInvalid) {
			t.Errorf("ValidateMountPath(%q) = %v; want ErrMountPathInvalid", p, err)
		}
	}
}

func TestOverlaps(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"/a", "/a", true}, {"/a", "/a/b", true}, {"/a/b", "/a", true}, {"/a", "/ab", false}, {"/a/b", "/a/c", false},
	} {
		if got := overlaps(c.a, c.b); got != c.want {
			t.Errorf("overlaps(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
