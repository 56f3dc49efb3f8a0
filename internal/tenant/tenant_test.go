package tenant

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/store"
)

func TestScope(t *testing.T) {
	for _, tt := range []struct {
		c      Caller
		id     string
		scoped string
	}{
		{Caller{Admin: true}, "demo", "demo"},
		{Caller{Name: "ops", Admin: true}, "demo", "demo"},
		{Caller{Admin: true, As: "team-a"}, "demo", "team-a/demo"},
		{Caller{Name: "team-a"}, "demo", "team-a/demo"},
	} {
		got := tt.c.Scope(tt.id)
		if got != tt.scoped {
			t.Errorf("%+v.Scope(%q) = %q, want %q", tt.c, tt.id, got, tt.scoped)
		}
		if Local(got) != tt.id || Of(got) != tt.c.Namespace() {
			t.Errorf("Split(%q) = %q, %q", got, Of(got), Local(got))
		}
	}
	a, b := Caller{Name: "team-a"}, Caller{Name: "team-b"}
	if a.Owns("team-b/demo") || a.Owns("demo") || !a.Owns("team-a/demo") || b.Owns(a.Scope("x")) {
		t.Error("a tenant owns another's name")
	}
	if !(Caller{Admin: true}).Owns("team-b/demo") {
		t.Error("an admin does not own a tenant's name")
	}
	if FromContext(context.Background()) != (Caller{Admin: true}) {
		t.Error("a context without a caller is not the daemon's own")
	}
}

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{"team-a": true, "a": true, "default": false, "": false, "Team": false,
		"a/b": false, "-a": false, "abcdefghijklmnopqrstuvwxyz0123456": false} {
		if err := ValidateName(name); (err == nil) != ok {
			t.Errorf("ValidateName(%q) = %v", name, err)
		}
	}
}

// TestKeysAreStoredHashed creates, rotates and removes keys on a real
// registry and checks that no secret reaches the database file and that
// an old secret fails at once.
func TestKeysAreStoredHashed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k, err := OpenKeys(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	key, secret, err := k.Create(ctx, "team-a", false, Quota{MaxSandboxes: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := k.Authenticate(secret); !ok || c != (Caller{Name: "team-a"}) {
		t.Fatalf("Authenticate = %+v, %v", c, ok)
	}
	if _, _, err := k.Create(ctx, "team-a", false, Quota{}); err == nil {
		t.Error("a second key of the same name")
	}
	_, rotated, err := k.Rotate(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Authenticate(secret); ok {
		t.Error("the old secret still works after rotation")
	}
	if _, ok := k.Authenticate(rotated); !ok {
		t.Error("the new secret does not work")
	}
	if q := k.QuotaOf("team-a"); q != key.Quota || q.MaxSandboxes != 3 {
		t.Errorf("QuotaOf = %+v", q)
	}
	// Reopened from the registry, the key still works and no secret is
	// in the database's files.
	k2, err := OpenKeys(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k2.Authenticate(rotated); !ok {
		t.Error("the secret does not work after a reload")
	}
	st.Close()
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, s := range []string{secret, rotated, secret[4:], rotated[4:]} {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds a secret", f)
			}
		}
	}
	st, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k.store = st
	if err := k.Remove(ctx, "team-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Authenticate(rotated); ok {
		t.Error("a removed key still works")
	}
	if _, ok := k.Authenticate("sbx_"); ok {
		t.Error("an empty key works")
	}
}

func TestQuotaOfRequest(t *testing.T) {
	q, e := QuotaOfRequest(api.KeyCreateRequest{Name: "a", Quotas: api.Quotas{MaxSandboxes: 4, MaxRunning: 2, MaxMemory: 1 << 30}})
	if e != nil || q != (Quota{MaxSandboxes: 4, MaxRunning: 2, MaxMemory: 1 << 30}) || q.Wire() != (api.Quotas{MaxSandboxes: 4, MaxRunning: 2, MaxMemory: 1 << 30}) {
		t.Errorf("quotas: %+v %v", q, e)
	}
	for _, bad := range []api.KeyCreateRequest{
		{Name: "a", Quotas: api.Quotas{MaxSandboxes: -1}},
		{Name: "a", Quotas: api.Quotas{MaxRunning: 1<<20 + 1}},
		{Name: "a", Quotas: api.Quotas{MaxMemory: 1<<50 + 1}},
		{Name: "a", Admin: true, Quotas: api.Quotas{MaxSandboxes: 1}},
	} {
		if _, e := QuotaOfRequest(bad); e == nil || e.Code != api.CodeValidationFailed {
			t.Errorf("%+v: %v, want VALIDATION_FAILED", bad, e)
		}
	}
}
