package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPortsSurviveReopenAndGoWithTheirSandbox(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	sb := sample("demo", "k1", -1)
	if err := s.Insert(ctx, sb); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 8, 0, 0, 5, time.UTC)
	p := Port{SandboxID: "demo", Port: 8080, Name: "web", Token: "abc123", Public: true, CreatedAt: at}
	if err := s.InsertPort(ctx, &p); err != nil {
		t.Fatal(err)
	}
	if !p.SandboxCreatedAt.Equal(sb.CreatedAt) {
		t.Errorf("SandboxCreatedAt = %v, want %v", p.SandboxCreatedAt, sb.CreatedAt)
	}
	dup := p
	if err := s.InsertPort(ctx, &dup); !errors.Is(err, ErrPortExists) {
		t.Errorf("second insert: got %v, want ErrPortExists", err)
	}
	orphan := Port{SandboxID: "nobody", Port: 8080, Token: "x", CreatedAt: at}
	if err := s.InsertPort(ctx, &orphan); !errors.Is(err, ErrNotFound) {
		t.Errorf("port of an unknown sandbox: got %v, want ErrNotFound", err)
	}
	private := Port{SandboxID: "demo", Port: 3000, Token: "t_2", Public: false, CreatedAt: at}
	if err := s.InsertPort(ctx, &private); err != nil {
		t.Fatal(err)
	}

	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Port{private, p}, got); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}

	if ok, err := s2.DeletePort(ctx, "demo", 3000); err != nil || !ok {
		t.Errorf("delete: %v %v", ok, err)
	}
	if ok, err := s2.DeletePort(ctx, "demo", 3000); err != nil || ok {
		t.Errorf("second delete: %v %v, want false, nil", ok, err)
	}
	// Deleting the sandbox deletes its ports (foreign key cascade).
	if err := s2.Delete(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Ports(ctx); err != nil || len(got) != 0 {
		t.Errorf("ports after the sandbox was deleted: %v %v", got, err)
	}
	if err := s2.Insert(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if got, _ := s2.Ports(ctx); len(got) != 0 {
		t.Errorf("a re-created sandbox inherited ports: %v", got)
	}
}
