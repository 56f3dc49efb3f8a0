package watch

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Results of a poll.
const (
	Unchanged = "unchanged"
	Changed   = "changed"
	Resync    = "resync"
)

// Changes is the answer to a poll.
type Changes struct {
	Status  string
	Version string
	Events  []Event
}

// poll is a watch kept between polls, for clients that cannot hold a
// stream.
type poll struct {
	w    *Watch
	key  string
	seen time.Time // last polled
}

// Changes answers a poll of root with options o. key identifies root and
// o (two polls with the same key share one watch); since is the Version
// of the previous answer, or "" for a first poll.
//
// A first poll, an unknown or foreign cursor (another agent's, another
// key's), one older than the buffer, or a watch that broke, all answer
// Resync with a fresh Version: the client lists the path again and polls
// on. A poll that is not polled for PollTTL is dropped.
func (h *Hub) Changes(root string, o Options, key, since string) (Changes, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Now()
	h.expirePolls()
	if id, seq, ok := h.parseVersion(since); ok {
		if p := h.polls[id]; p != nil && p.key == key {
			if p.w.err == nil {
				p.seen = now
				evs, ok := p.w.q.since(seq)
				switch {
				case !ok:
					return h.resync(p), nil
				case len(evs) == 0:
					return Changes{Status: Unchanged, Version: h.version(p)}, nil
				}
				return Changes{Status: Changed, Version: h.version(p), Events: evs}, nil
			}
			p.w.release() // broken: start again below
		}
	}
	for _, p := range h.polls {
		if p.key == key && p.w.err == nil {
			p.seen = now
			return h.resync(p), nil
		}
	}
	w, err := h.watch(root, o, true)
	if err != nil {
		return Changes{}, err
	}
	p := &poll{w: w, key: key, seen: now}
	h.polls[w.id] = p
	return h.resync(p), nil
}

func (h *Hub) resync(p *poll) Changes {
	p.w.q.read = p.w.q.last
	return Changes{Status: Resync, Version: h.version(p)}
}

func (h *Hub) version(p *poll) string {
	return fmt.Sprintf("%s.%d.%d", h.nonce, p.w.id, p.w.q.last)
}

func (h *Hub) parseVersion(v string) (id, seq uint64, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 || parts[0] != h.nonce {
		return 0, 0, false
	}
	id, err1 := strconv.ParseUint(parts[1], 10, 64)
	seq, err2 := strconv.ParseUint(parts[2], 10, 64)
	return id, seq, err1 == nil && err2 == nil
}

// expirePolls drops the polls nobody polled for PollTTL. Called with h.mu
// held.
func (h *Hub) expirePolls() {
	now := h.cfg.Now()
	for _, p := range h.polls {
		if now.Sub(p.seen) > h.cfg.PollTTL {
			p.w.release()
		}
	}
}
