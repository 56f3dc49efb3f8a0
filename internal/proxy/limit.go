package proxy

import "sync"

// inFlight counts the requests a Proxy is serving, per sandbox and in
// all, and refuses more than its bounds: each one holds goroutines,
// buffers and an upstream connection, and preview requests need no
// credentials, so without a bound anyone could grow the daemon's memory
// at will.
type inFlight struct {
	maxPerSandbox, max int

	mu    sync.Mutex
	total int
	per   map[string]int
}

func newInFlight(maxPerSandbox, max int) *inFlight {
	return &inFlight{maxPerSandbox: maxPerSandbox, max: max, per: map[string]int{}}
}

// acquire takes a slot for a request to sandbox id, or reports false when
// the sandbox or the whole proxy is full.
func (l *inFlight) acquire(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.per[id] >= l.maxPerSandbox {
		return false
	}
	l.total++
	l.per[id]++
	return true
}

func (l *inFlight) release(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[id]--; l.per[id] <= 0 {
		delete(l.per, id)
	}
}
