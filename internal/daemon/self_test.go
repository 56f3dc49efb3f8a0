package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestSelfListener(t *testing.T) {
	l := newSelfListener()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := l.DialContext(ctx, "tcp", "sandboxd.invalid:80")
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	go c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()
	s.Close()

	// A dial nobody accepts gives up with its context.
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if _, err := l.DialContext(short, "tcp", "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("dial with a cancelled context: %v", err)
	}
	// After Close, Accept and dials fail at once.
	l.Close()
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := l.DialContext(ctx, "tcp", "x"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after Close: %v", err)
	}
}
