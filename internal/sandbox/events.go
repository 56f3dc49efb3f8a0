package sandbox

import (
	"sync"
	"time"
)

// Lifecycle event types.
const (
	EventCreated   = "created"
	EventStarted   = "started"
	EventSlept     = "slept"
	EventWoke      = "woke"
	EventPaused    = "paused"  // checkpointed with memory (gVisor)
	EventResumed   = "resumed" // restored from its checkpoint
	EventStopped   = "stopped"
	EventDestroyed = "destroyed"
	EventFailed    = "failed"
)

// Event is one lifecycle change of one sandbox.
type Event struct {
	Type      string
	SandboxID string
	Status    Status
	Reason    string
	Time      time.Time
}

// subscriberBuffer bounds what a slow subscriber may fall behind by; past
// it the subscriber is dropped (its channel closed) rather than slowing
// the daemon down.
const subscriberBuffer = 1024

// Events fans lifecycle events out to subscribers. Publishing never
// blocks.
type Events struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// Subscription receives events on C until it is cancelled or dropped.
type Subscription struct {
	C <-chan Event
	c chan Event
	// Dropped is set when the subscriber fell too far behind and C was
	// closed by the publisher.
	dropped bool
	hub     *Events
}

// NewEvents returns an empty hub.
func NewEvents() *Events { return &Events{subs: map[*Subscription]struct{}{}} }

// Subscribe returns a new subscription.
func (e *Events) Subscribe() *Subscription {
	c := make(chan Event, subscriberBuffer)
	s := &Subscription{C: c, c: c, hub: e}
	e.mu.Lock()
	e.subs[s] = struct{}{}
	e.mu.Unlock()
	return s
}

// Cancel ends the subscription.
func (s *Subscription) Cancel() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	if _, ok := s.hub.subs[s]; ok {
		delete(s.hub.subs, s)
		close(s.c)
	}
}

// Dropped reports whether the subscription was closed for falling behind.
func (s *Subscription) Dropped() bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.dropped
}

func (e *Events) publish(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := range e.subs {
		select {
		case s.c <- ev:
		default:
			s.dropped = true
			delete(e.subs, s)
			close(s.c)
		}
	}
}
