package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The boot gate lets MaxBoots starts run at once; the next waits for a
// turn, and a caller that gives up while waiting is told so.
func TestBootGate(t *testing.T) {
	m := New(Options{MaxBoots: 2})
	ctx := context.Background()
	for range 2 {
		if err := m.enterBoot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	entered := make(chan error, 1)
	go func() { entered <- m.enterBoot(ctx) }()
	select {
	case err := <-entered:
		t.Fatalf("a third start entered the gate while two ran (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	m.leaveBoot()
	if err := <-entered; err != nil {
		t.Fatalf("the waiting start, once a turn was free: %v", err)
	}

	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.enterBoot(gone); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a start whose caller left while waiting: %v, want ErrUnavailable", err)
	}
	m.leaveBoot()
	m.leaveBoot()
	if err := m.enterBoot(ctx); err != nil {
		t.Errorf("after every turn ended: %v", err)
	}
}

// The default is two starts per CPU the daemon may use.
func TestBootGateDefault(t *testing.T) {
	m := New(Options{})
	if got, want := cap(m.boots), 2*len(m.hostCPUs); got != want || got < 2 {
		t.Errorf("MaxBoots default = %d, want %d (at least 2)", got, want)
	}
}
