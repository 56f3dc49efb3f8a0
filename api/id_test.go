package api

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// sandboxIDPattern is an independent statement of the rule, used as the
// oracle for the fuzz test.
var sandboxIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func TestValidateSandboxID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"0", true},
		{"user-123", true},
		{"a--b", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"-a", false},
		{"a-", false},
		{"-", false},
		{"User", false},
		{"a_b", false},
		{"a.b", false},
		{"a/b", false},
		{"..", false},
		{"a b", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := ValidateSandboxID(tt.id)
			if got := err == nil; got != tt.want {
				t.Fatalf("ValidateSandboxID(%q) = %v, want valid=%v", tt.id, err, tt.want)
			}
			if err != nil {
				var apiErr *Error
				if !errors.As(err, &apiErr) || apiErr.Code != CodeInvalidSandboxID {
					t.Errorf("ValidateSandboxID(%q) = %#v, want an *Error with code %s", tt.id, err, CodeInvalidSandboxID)
				}
			}
		})
	}
}

func FuzzValidateSandboxID(f *testing.F) {
	for _, seed := range []string{"a", "user-123", "-a", "a-", "A", strings.Repeat("z", 63), strings.Repeat("z", 64), "a.b", "\xff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateSandboxID(id)
		if want := sandboxIDPattern.MatchString(id); (err == nil) != want {
			t.Fatalf("ValidateSandboxID(%q) = %v, want valid=%v", id, err, want)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("error message for %q has a line break: %q", id, err.Error())
		}
	})
}
