// Package glob matches paths, relative to a watched or archived directory,
// against include and exclude patterns. It only compares strings: it never
// touches the file system.
//
// A pattern without a slash matches any element of the path ("*.log",
// "node_modules"), so it also covers everything below a matching
// directory. A pattern with a slash is anchored at the directory the call
// named ("src/*.go"); "**" stands for any number of elements
// ("src/**/*.go"), and a match also covers everything below the matched
// path. Elements use path.Match syntax (*, ?, [...], \).
package glob

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Bounds of one Set; the caller validates against its own wire limits
// first, these keep the package safe on its own.
const (
	MaxPatterns     = 64
	MaxPatternBytes = 256
)

// ErrBadPattern is returned by Compile for a malformed pattern.
var ErrBadPattern = errors.New("bad glob pattern")

// Set is a compiled list of patterns. The zero Set (and nil) matches
// nothing.
type Set struct {
	pats []pattern
}

type pattern struct {
	elems    []string
	anywhere bool // no slash: matches any one element
}

// Compile checks and compiles patterns.
func Compile(patterns []string) (*Set, error) {
	if len(patterns) > MaxPatterns {
		return nil, fmt.Errorf("%w: %d patterns; at most %d are allowed", ErrBadPattern, len(patterns), MaxPatterns)
	}
	s := &Set{}
	for _, raw := range patterns {
		if len(raw) > MaxPatternBytes {
			return nil, fmt.Errorf("%w: a pattern is %d bytes long; at most %d are allowed", ErrBadPattern, len(raw), MaxPatternBytes)
		}
		p := strings.TrimPrefix(raw, "./")
		p = strings.Trim(p, "/")
		if p == "" || strings.IndexByte(p, 0) >= 0 {
			return nil, fmt.Errorf("%w: %q", ErrBadPattern, raw)
		}
		elems := strings.Split(p, "/")
		for _, e := range elems {
			if e == "" || e == "." || e == ".." {
				return nil, fmt.Errorf("%w: %q has an empty, . or .. element", ErrBadPattern, raw)
			}
			if _, err := path.Match(e, ""); err != nil {
				return nil, fmt.Errorf("%w: %q", ErrBadPattern, raw)
			}
		}
		s.pats = append(s.pats, pattern{elems: elems, anywhere: len(elems) == 1 && elems[0] != "**"})
	}
	return s, nil
}

// Empty reports whether the set has no pattern.
func (s *Set) Empty() bool { return s == nil || len(s.pats) == 0 }

// Match reports whether rel, a slash-separated relative path, matches a
// pattern of the set.
func (s *Set) Match(rel string) bool {
	if s.Empty() || rel == "" {
		return false
	}
	elems := strings.Split(rel, "/")
	for _, p := range s.pats {
		if p.anywhere {
			for _, e := range elems {
				if ok, _ := path.Match(p.elems[0], e); ok {
					return true
				}
			}
			continue
		}
		if matchPrefix(p.elems, elems) {
			return true
		}
	}
	return false
}

// matchPrefix reports whether pat matches rel or a leading part of it. It
// is a table over (pattern position, path position), so "**" costs
// len(pat)*len(rel) at most, never exponential time.
func matchPrefix(pat, rel []string) bool {
	// reach[j]: pat[:i] can match rel[:j].
	reach := make([]bool, len(rel)+1)
	reach[0] = true
	for _, pe := range pat {
		next := make([]bool, len(rel)+1)
		progressed := false
		for j := 0; j <= len(rel); j++ {
			if !reach[j] {
				continue
			}
			if pe == "**" {
				for k := j; k <= len(rel); k++ {
					next[k] = true
				}
				progressed = true
				break
			}
			if j < len(rel) {
				if ok, _ := path.Match(pe, rel[j]); ok {
					next[j+1] = true
					progressed = true
				}
			}
		}
		if !progressed {
			return false
		}
		reach = next
	}
	for _, r := range reach {
		if r {
			return true
		}
	}
	return false
}
