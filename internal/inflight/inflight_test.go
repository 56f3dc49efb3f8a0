package inflight

import (
	"errors"
	"sync"
	"testing"
)

func TestLimiterBoundsPerTenantAndInAll(t *testing.T) {
	l := New(2, 3)
	a1, err := l.Acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := l.Acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire("a"); !errors.Is(err, ErrTenantBusy) {
		t.Errorf("a's third call: %v, want ErrTenantBusy", err)
	}
	b1, err := l.Acquire("b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(""); !errors.Is(err, ErrBusy) {
		t.Errorf("the admin's call past the total: %v, want ErrBusy", err)
	}
	a1()
	a1() // a second release gives nothing back twice
	if _, err := l.Acquire("b"); err != nil {
		t.Errorf("b's second call after a's release: %v", err)
	}
	if _, err := l.Acquire("a"); !errors.Is(err, ErrBusy) {
		t.Errorf("a's call when the total is reached again: %v, want ErrBusy", err)
	}
	a2()
	b1()
	if len(l.byTenant) != 1 || l.n != 1 {
		t.Errorf("after releases: %v in all, by tenant %v", l.n, l.byTenant)
	}
}

func TestLimiterUnderConcurrency(t *testing.T) {
	l := New(5, 8)
	var mu sync.Mutex
	held, most := 0, 0
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for range 100 {
				release, err := l.Acquire(string(rune('a' + i%4)))
				if err != nil {
					continue
				}
				mu.Lock()
				held++
				most = max(most, held)
				mu.Unlock()
				mu.Lock()
				held--
				mu.Unlock()
				release()
			}
		})
	}
	wg.Wait()
	if most > 8 || l.n != 0 || len(l.byTenant) != 0 {
		t.Errorf("at most %d held (bound 8); %d left, by tenant %v", most, l.n, l.byTenant)
	}
}
