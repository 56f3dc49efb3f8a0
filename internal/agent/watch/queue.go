package watch

// queue is a watch's bounded buffer of events: a ring that grows up to max
// and then drops its oldest event. Events are numbered from 1; a stream
// reads them in order, a poll asks for everything after a number.
type queue struct {
	buf   []Event
	max   int
	head  int    // index of the oldest event in buf
	n     int    // events held
	first uint64 // number of the oldest event held (when n > 0)
	last  uint64 // number of the newest event pushed
	read  uint64 // number of the last event handed out
}

// at returns event number seq, which must be held.
func (q *queue) at(seq uint64) *Event {
	return &q.buf[(q.head+int(seq-q.first))%len(q.buf)]
}

// push adds ev, merging it into the previous event when both modify the
// same file and that one was not handed out yet. It reports false when an
// event that was never handed out had to be dropped.
func (q *queue) push(ev Event) bool {
	if q.n > 0 && q.last > q.read {
		if tail := q.at(q.last); ev.Type == Modify && tail.Type == Modify && tail.Path == ev.Path {
			return true
		}
	}
	q.last++
	if q.n == 0 {
		q.first = q.last
	}
	switch {
	case q.n < len(q.buf):
		q.buf[(q.head+q.n)%len(q.buf)] = ev
		q.n++
	case len(q.buf) < q.max:
		grown := make([]Event, min(q.max, 2*len(q.buf)+16))
		for i := 0; i < q.n; i++ {
			grown[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = grown, 0
		q.buf[q.n] = ev
		q.n++
	default:
		q.buf[q.head] = ev
		q.head = (q.head + 1) % len(q.buf)
		q.first++
	}
	return q.first <= q.read+1
}

// next hands out the event after the last one handed out, if any.
// errOverflow when it was dropped.
func (q *queue) next() (Event, bool, error) {
	if q.read >= q.last {
		return Event{}, false, nil
	}
	if q.read+1 < q.first {
		return Event{}, false, ErrOverflow
	}
	q.read++
	return *q.at(q.read), true, nil
}

// since returns the events after number seq. ok is false when some of them
// were dropped, or seq is not a number this queue gave out.
func (q *queue) since(seq uint64) (evs []Event, ok bool) {
	if seq > q.last {
		return nil, false
	}
	if seq == q.last {
		return nil, true
	}
	if seq+1 < q.first {
		return nil, false
	}
	for s := seq + 1; s <= q.last; s++ {
		evs = append(evs, *q.at(s))
	}
	q.read = q.last
	return evs, true
}
