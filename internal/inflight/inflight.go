// Package inflight bounds how many calls of one kind are in flight, per
// tenant and in all, refusing past the bound rather than queueing: a
// queued call would still hold its connection, goroutine and, for an
// upload, its spool file. It owns only counts; it never blocks and never
// decides what the refusal looks like on the wire.
package inflight

import (
	"errors"
	"sync"
)

var (
	// ErrTenantBusy: the tenant has its bound of calls in flight.
	ErrTenantBusy = errors.New("too many calls of this tenant in flight")
	// ErrBusy: the bound of calls in flight in all is reached.
	ErrBusy = errors.New("too many calls in flight")
)

// Limiter counts calls in flight. Its zero value refuses everything; use
// New.
type Limiter struct {
	perTenant, total int

	mu       sync.Mutex
	byTenant map[string]int
	n        int
}

// New returns a Limiter of at most perTenant calls of one tenant and
// total in all.
func New(perTenant, total int) *Limiter {
	return &Limiter{perTenant: perTenant, total: total, byTenant: map[string]int{}}
}

// Acquire counts a call of tenant ("" for the admin namespace, bounded
// like any other) in flight, or refuses it with ErrTenantBusy or ErrBusy.
// release, called exactly once when the call ends, gives its place back.
func (l *Limiter) Acquire(tenant string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byTenant[tenant] >= l.perTenant {
		return nil, ErrTenantBusy
	}
	if l.n >= l.total {
		return nil, ErrBusy
	}
	l.byTenant[tenant]++
	l.n++
	var once sync.Once
	return func() { once.Do(func() { l.release(tenant) }) }, nil
}

func (l *Limiter) release(tenant string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if l.byTenant[tenant]--; l.byTenant[tenant] == 0 {
		delete(l.byTenant, tenant)
	}
}
