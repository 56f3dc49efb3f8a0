package s3test_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sandboxd/sandboxd/internal/s3"
	"github.com/sandboxd/sandboxd/internal/s3test"
)

// TestServer puts and gets an object on a real versitygw, and checks that
// the client classifies the failures mounts report.
func TestServer(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	srv.Bucket(t, "data")
	c := srv.Client()
	if err := c.PutObject(ctx, "data", "dir/hello world.txt", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetObject(ctx, "data", "dir/hello world.txt", 1<<20)
	if err != nil || string(got) != "hi" {
		t.Fatalf("GetObject = %q, %v; want hi", got, err)
	}
	if err := c.CheckBucket(ctx, "data", "dir/"); err != nil {
		t.Fatalf("CheckBucket: %v", err)
	}
	if err := c.CheckBucket(ctx, "nope", ""); !errors.Is(err, s3.ErrNotFound) {
		t.Errorf("CheckBucket(missing bucket) = %v; want ErrNotFound", err)
	}
	bad := *c
	bad.Creds.SecretAccessKey = "wrong"
	if err := bad.CheckBucket(ctx, "data", ""); !errors.Is(err, s3.ErrAuth) {
		t.Errorf("CheckBucket(wrong secret) = %v; want ErrAuth", err)
	}
	srv.Stop()
	if err := c.CheckBucket(ctx, "data", ""); !errors.Is(err, s3.ErrUnreachable) {
		t.Errorf("CheckBucket(server stopped) = %v; want ErrUnreachable", err)
	}
}
