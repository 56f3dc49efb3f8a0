package sandbox

import (
	"strings"
	"testing"
)

func TestCPUsFor(t *testing.T) {
	host := []int{0, 1, 2, 3}
	tests := []struct {
		milli int64
		want  int // CPUs in the set; 0: no cpuset
	}{
		{0, 0}, {250, 1}, {1000, 1}, {1001, 2}, {2500, 3}, {4000, 0}, {8000, 0},
	}
	for _, tt := range tests {
		got := cpusFor("abc123", tt.milli, host)
		n := 0
		if got != "" {
			n = len(strings.Split(got, ","))
		}
		if n != tt.want {
			t.Errorf("cpusFor(%d milliCPU) = %q, want %d CPUs", tt.milli, got, tt.want)
		}
	}
	if a, b := cpusFor("abc123", 1000, host), cpusFor("abc123", 1000, host); a != b {
		t.Errorf("cpusFor is not stable for one key: %q, %q", a, b)
	}
	// Keys spread over the host's CPUs.
	seen := map[string]bool{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		seen[cpusFor(k, 1000, host)] = true
	}
	if len(seen) < 2 {
		t.Errorf("12 keys all got the same CPU: %v", seen)
	}
	if got := cpusFor("x", 1000, []int{5, 7}); got != "5" && got != "7" {
		t.Errorf("cpusFor on CPUs 5 and 7 = %q", got)
	}
}
