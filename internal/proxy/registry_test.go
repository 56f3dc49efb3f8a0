package proxy

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/store"
)

func newRegistry(t *testing.T, reserved ...int) (*Registry, *store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registry.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r, err := NewRegistry(context.Background(), st, reserved)
	if err != nil {
		t.Fatal(err)
	}
	return r, st, path
}

func addSandbox(t *testing.T, st *store.Store, id string, created time.Time) {
	t.Helper()
	err := st.Insert(context.Background(), store.Sandbox{ID: id, Key: id + "k", Status: "running", Image: "host",
		Runtime: "crun", Config: []byte("{}"), NetSlot: -1, CreatedAt: created, LastUsedAt: created, StatusChangedAt: created})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRegistryExpose(t *testing.T) {
	ctx := context.Background()
	r, st, path := newRegistry(t, 4000)
	gen := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	addSandbox(t, st, "a", gen)

	for _, port := range []int{0, 80, 1023, 65536, -1, 4000} {
		if _, _, err := r.Expose(ctx, "a", gen, port, ExposeOptions{Public: true}); !errors.Is(err, ErrInvalidPort) {
			t.Errorf("port %d: got %v, want ErrInvalidPort", port, err)
		}
	}
	for _, o := range []ExposeOptions{{Token: "UPPER"}, {Token: "has-dash"}, {Token: "seventeen_chars_x"}, {Token: "a"}, {Token: "eleven_char"}, {Name: "bell\a"}, {Name: string(make([]byte, 65))}} {
		if _, _, err := r.Expose(ctx, "a", gen, 8080, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", o, err)
		}
	}

	p, created, err := r.Expose(ctx, "a", gen, 8080, ExposeOptions{Name: "web", Public: true})
	if err != nil || !created || len(p.Token) != 16 || !p.Generation.Equal(gen) {
		t.Fatalf("expose: %+v %v %v", p, created, err)
	}
	// Same options again: the same port, unchanged.
	again, created, err := r.Expose(ctx, "a", gen, 8080, ExposeOptions{Name: "web", Public: true})
	if err != nil || created || again.Token != p.Token {
		t.Errorf("expose again: %+v %v %v", again, created, err)
	}
	again, created, err = r.Expose(ctx, "a", gen, 8080, ExposeOptions{Name: "web", Public: true, Token: p.Token})
	if err != nil || created {
		t.Errorf("expose again naming the token: %+v %v %v", again, created, err)
	}
	for _, o := range []ExposeOptions{{Name: "other", Public: true}, {Name: "web"}, {Name: "web", Public: true, Token: "other_token_1"}} {
		if _, _, err := r.Expose(ctx, "a", gen, 8080, o); !errors.Is(err, ErrAlreadyExposed) {
			t.Errorf("%+v: got %v, want ErrAlreadyExposed", o, err)
		}
	}
	if _, _, err := r.Expose(ctx, "nobody", gen, 8080, ExposeOptions{}); !errors.Is(err, ErrSandboxNotFound) {
		t.Errorf("unknown sandbox: %v", err)
	}

	got, err := r.Lookup(p.Address())
	if err != nil || got.Port != 8080 {
		t.Errorf("lookup: %+v %v", got, err)
	}
	for _, a := range []Address{{8080, "a", "wrong"}, {8081, "a", p.Token}, {8080, "b", p.Token}} {
		if _, err := r.Lookup(a); !errors.Is(err, ErrNotFound) {
			t.Errorf("lookup %+v: %v, want ErrNotFound", a, err)
		}
	}

	// Survives a restart.
	reopened, err := NewRegistry(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := reopened.List("a", gen); len(l) != 1 || l[0].Token != p.Token {
		t.Errorf("after reload: %+v", l)
	}
	_ = path

	// Unexpose is idempotent, and a new expose gets a new token.
	for i := 0; i < 2; i++ {
		if err := r.Unexpose(ctx, "a", 8080); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Lookup(p.Address()); !errors.Is(err, ErrNotFound) {
		t.Error("old address works after unexpose")
	}
	p2, _, err := r.Expose(ctx, "a", gen, 8080, ExposeOptions{Public: true})
	if err != nil || p2.Token == p.Token {
		t.Errorf("re-expose: %+v %v (old token %s)", p2, err, p.Token)
	}
}

func TestRegistryLimit(t *testing.T) {
	ctx := context.Background()
	r, st, _ := newRegistry(t)
	gen := time.Unix(1, 0).UTC()
	addSandbox(t, st, "a", gen)
	for i := 0; i < 32; i++ {
		if _, _, err := r.Expose(ctx, "a", gen, 2000+i, ExposeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.Expose(ctx, "a", gen, 3000, ExposeOptions{}); !errors.Is(err, ErrLimit) {
		t.Errorf("33rd port: %v, want ErrLimit", err)
	}
}

// A sandbox destroyed and created again under the same ID must not inherit
// the ports (and tokens) of the old one, even from the copy in memory.
func TestRegistryForgetsEarlierGenerations(t *testing.T) {
	ctx := context.Background()
	r, st, _ := newRegistry(t)
	gen1 := time.Unix(100, 0).UTC()
	addSandbox(t, st, "a", gen1)
	old, _, err := r.Expose(ctx, "a", gen1, 8080, ExposeOptions{Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	gen2 := time.Unix(200, 0).UTC()
	addSandbox(t, st, "a", gen2)

	// The preview path looks up first, then checks the generation of the
	// sandbox it reached.
	p, err := r.Lookup(old.Address())
	if err != nil {
		t.Fatal("the copy in memory lost the port before anything told it")
	}
	if !r.Stale(p, gen2) {
		t.Error("a port of the earlier sandbox is not stale")
	}
	if _, err := r.Lookup(old.Address()); !errors.Is(err, ErrNotFound) {
		t.Error("a stale port is still found")
	}
	if l := r.List("a", gen2); len(l) != 0 {
		t.Errorf("new sandbox lists %+v", l)
	}
	p2, created, err := r.Expose(ctx, "a", gen2, 8080, ExposeOptions{Public: true, Token: old.Token})
	if err != nil || !created || !p2.Generation.Equal(gen2) {
		t.Errorf("expose on the new sandbox: %+v %v %v", p2, created, err)
	}

	// Reload drops what the database dropped.
	if err := st.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Count("a") != 0 {
		t.Error("reload kept ports of a deleted sandbox")
	}
}

// TestRegistryChosenTokens: a chosen token must be 12-16 characters (a
// short one could be guessed); a port exposed with a shorter one before
// the minimum existed keeps working after a restart.
func TestRegistryChosenTokens(t *testing.T) {
	ctx := context.Background()
	r, st, _ := newRegistry(t)
	gen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	addSandbox(t, st, "a", gen)
	p, created, err := r.Expose(ctx, "a", gen, 8080, ExposeOptions{Public: true, Token: "twelve_chars"})
	if err != nil || !created || p.Token != "twelve_chars" {
		t.Fatalf("12-character token: %+v %v %v", p, created, err)
	}
	if _, _, err := r.Expose(ctx, "a", gen, 8081, ExposeOptions{Public: true, Token: "x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("1-character token: %v, want ErrInvalid", err)
	}
	if err := st.InsertPort(ctx, &store.Port{SandboxID: "a", Port: 8082, Token: "old", Public: true, CreatedAt: gen}); err != nil {
		t.Fatal(err)
	}
	r2, err := NewRegistry(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Lookup(Address{Port: 8082, SandboxID: "a", Token: "old"}); err != nil {
		t.Errorf("a port exposed earlier with a short token: %v", err)
	}
}
