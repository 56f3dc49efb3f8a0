package httpapi

import (
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// listRow is how writeSandboxList encodes a row: the api.Sandbox, with
// its fields from CreatedAt on declared again after it. encoding/json
// writes an embedded struct's fields in their place and the outer
// fields after them, and an outer field hides the embedded one of the
// same name: so the row's JSON has the api.Sandbox's fields, names and
// order (TestListRowIsTheWireType), while its times are rowTimes.
//
// time.Time's MarshalJSON allocates its answer: 48 bytes a time, four
// times a row, 1.9 KB of a page of 10, more than anything else the page
// allocates. A rowTime is formatted into the row itself, and a page
// borrows one row for all of its rows (bench/results/scale.txt).
type listRow struct {
	api.Sandbox
	CreatedAt       rowTime       `json:"createdAt"`
	LastUsedAt      rowTime       `json:"lastUsedAt"`
	StatusChangedAt rowTime       `json:"statusChangedAt"`
	InstanceType    string        `json:"instanceType,omitempty"`
	SleepAfter      int64         `json:"sleepAfter"`
	KeepAlive       bool          `json:"keepAlive"`
	IdleDeadline    *rowTime      `json:"idleDeadline,omitempty"`
	Created         bool          `json:"created,omitempty"`
	Isolation       api.Isolation `json:"isolation"`
	Node            string        `json:"node,omitempty"`

	idleDeadline rowTime
}

// listRows lends writeSandboxList its row (borrowListRow, giveBack).
var listRows = sync.Pool{New: func() any { return new(listRow) }}

func borrowListRow() *listRow { return listRows.Get().(*listRow) }

// giveBack returns r to listRows, emptied: a row in the pool keeps no
// sandbox's labels or names alive.
func (r *listRow) giveBack() {
	*r = listRow{}
	listRows.Put(r)
}

// setInfo makes r the row of inf, as toWire has it. toWire's idle
// deadline is a *time.Time, which allocates; the row's is its own
// field.
func (r *listRow) setInfo(inf sandbox.Info) {
	deadline := inf.IdleDeadline
	inf.IdleDeadline = time.Time{}
	r.set(toWire(inf))
	if !deadline.IsZero() {
		r.idleDeadline.set(deadline.UTC())
		r.IdleDeadline = &r.idleDeadline
	}
}

// set makes r the row of s.
func (r *listRow) set(s api.Sandbox) {
	r.Sandbox = s
	r.CreatedAt.set(s.CreatedAt)
	r.LastUsedAt.set(s.LastUsedAt)
	r.StatusChangedAt.set(s.StatusChangedAt)
	r.InstanceType, r.SleepAfter, r.KeepAlive = s.InstanceType, s.SleepAfter, s.KeepAlive
	r.IdleDeadline = nil
	if s.IdleDeadline != nil {
		r.idleDeadline.set(*s.IdleDeadline)
		r.IdleDeadline = &r.idleDeadline
	}
	r.Created, r.Isolation, r.Node = s.Created, s.Isolation, s.Node
}

// rowTime is a time as time.Time's MarshalJSON writes it (a quoted
// RFC 3339 time with nanoseconds), formatted into buf.
type rowTime struct {
	buf    [len(`""`) + len(time.RFC3339Nano)]byte
	quoted []byte
	err    error
}

func (t *rowTime) set(at time.Time) {
	_, offset := at.Zone()
	if y := at.Year(); y < 0 || y > 9999 || offset <= -24*60*60 || offset >= 24*60*60 {
		// What MarshalJSON refuses, with its error.
		t.quoted, t.err = at.MarshalJSON()
		return
	}
	t.quoted = append(at.AppendFormat(append(t.buf[:0], '"'), time.RFC3339Nano), '"')
	t.err = nil
}

// MarshalJSON returns the formatted time, which encoding/json copies out
// before the row changes.
func (t *rowTime) MarshalJSON() ([]byte, error) { return t.quoted, t.err }
