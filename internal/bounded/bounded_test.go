package bounded

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		in      string
		max     int64
		want    string
		tooLong bool
	}{
		{"", 4, "", false},
		{"abcd", 4, "abcd", false},
		{"abcde", 4, "abcd", true},
		{strings.Repeat("x", 1<<20), 10, "xxxxxxxxxx", true},
	} {
		got, err := Read(strings.NewReader(tc.in), tc.max, "the input")
		if string(got) != tc.want || errors.Is(err, ErrTooLarge) != tc.tooLong {
			t.Errorf("Read(%d bytes, %d) = %q, %v", len(tc.in), tc.max, got, err)
		}
		if tc.tooLong && !strings.Contains(err.Error(), "the input is larger than") {
			t.Errorf("the error does not say what: %v", err)
		}
	}
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("hello"), 0o600)
	if got, err := ReadFile(p, 5); err != nil || string(got) != "hello" {
		t.Errorf("ReadFile: %q %v", got, err)
	}
	if _, err := ReadFile(p, 4); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), p) {
		t.Errorf("ReadFile past the bound: %v", err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "none"), 4); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile of nothing: %v", err)
	}
}
