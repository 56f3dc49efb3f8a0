package bytesize

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true}, {"512Mi", 512 << 20, true}, {"1Gi", 1 << 30, true},
		{"1.5GiB", 3 << 29, true}, {"2G", 2e9, true}, {"64 MiB", 64 << 20, true}, {"10k", 1e4, true},
		{"", 0, false}, {"-1", 0, false}, {"1X", 0, false}, {"NaN", 0, false}, {"1e30Ti", 0, false},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("Parse(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{1 << 30: "1Gi", 512 << 20: "512Mi", 3 << 29: "1.5Gi", 100: "100"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
