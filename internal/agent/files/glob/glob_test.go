package glob

import (
	"errors"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern string
		rel     string
		want    bool
	}{
		{"*.log", "a.log", true},
		{"*.log", "dir/a.log", true},
		{"*.log", "a.log/inside", true},
		{"*.log", "a.txt", false},
		{"node_modules", "node_modules", true},
		{"node_modules", "web/node_modules/x/y.js", true},
		{"node_modules", "node_modules_old/x", false},
		{"src/*.go", "src/a.go", true},
		{"src/*.go", "src/sub/a.go", false},
		{"src/*.go", "lib/src/a.go", false},
		{"src/**/*.go", "src/a.go", true},
		{"src/**/*.go", "src/x/y/z/a.go", true},
		{"src/**/*.go", "src/x/y/z/a.txt", false},
		{"**/*.go", "a.go", true},
		{"**/*.go", "deep/er/a.go", true},
		{"build/out", "build/out/bin/x", true},
		{"build/out", "build/outer", false},
		{"./build/", "build/x", true},
		{"/build", "build", true},
		{"**", "anything/at/all", true},
		{"a/**", "a", true},
		{"[ab].txt", "b.txt", true},
		{`\*`, "*", true},
		{`\*`, "x", false},
	}
	for _, tt := range tests {
		s, err := Compile([]string{tt.pattern})
		if err != nil {
			t.Fatalf("Compile(%q): %v", tt.pattern, err)
		}
		if got := s.Match(tt.rel); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.rel, got, tt.want)
		}
	}
}

func TestEmptySetMatchesNothing(t *testing.T) {
	var s *Set
	if s.Match("x") || !s.Empty() {
		t.Error("nil set")
	}
	s, _ = Compile(nil)
	if s.Match("x") || !s.Empty() {
		t.Error("empty set")
	}
}

func TestCompileRejects(t *testing.T) {
	for _, p := range []string{"", "/", "[", "a/../b", "a//b", "a\x00", strings.Repeat("a", MaxPatternBytes+1)} {
		if _, err := Compile([]string{p}); !errors.Is(err, ErrBadPattern) {
			t.Errorf("Compile(%q) = %v, want ErrBadPattern", p, err)
		}
	}
	if _, err := Compile(make([]string, MaxPatterns+1)); !errors.Is(err, ErrBadPattern) {
		t.Errorf("too many patterns: %v", err)
	}
}

// Many ** against a deep path must stay fast: the matcher is a table, not
// backtracking.
func TestManyDoubleStarsAreCheap(t *testing.T) {
	pat := strings.Repeat("**/", 60) + "z"
	s, err := Compile([]string{pat[:min(len(pat), MaxPatternBytes)]})
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.Repeat("a/", 500) + "b"
	if s.Match(rel) {
		t.Error("matched")
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("src/**/*.go", "src/a/b.go")
	f.Add("*.log", "x.log")
	f.Fuzz(func(t *testing.T, pattern, rel string) {
		s, err := Compile([]string{pattern})
		if err != nil {
			return
		}
		s.Match(rel)
	})
}
