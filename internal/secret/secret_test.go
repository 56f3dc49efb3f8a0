package secret

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	if err := s.Set("r2", map[string]string{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "shh"}, now); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "r2.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("secrets directory mode %v; want 0700", di.Mode().Perm())
	}
	got, err := s.Get("r2")
	if err != nil || got.Values["AWS_SECRET_ACCESS_KEY"] != "shh" || strings.Join(got.Keys(), ",") != "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	bad := []struct {
		name   string
		values map[string]string
	}{
		{"../x", map[string]string{"A": "1"}},
		{"UPPER", map[string]string{"A": "1"}},
		{"ok", map[string]string{}},
		{"ok", map[string]string{"lower": "1"}},
		{"ok", map[string]string{"A": strings.Repeat("x", MaxValueBytes+1)}},
	}
	for _, b := range bad {
		if err := s.Set(b.name, b.values, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("Set(%q, %d values) = %v; want ErrInvalid", b.name, len(b.values), err)
		}
	}
	if err := s.Remove("r2"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"r2", "../../etc/passwd"} {
		if _, err := s.Get(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v; want ErrNotFound", name, err)
		}
		if err := s.Remove(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Remove(%q) = %v; want ErrNotFound", name, err)
		}
	}
}
