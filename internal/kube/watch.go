package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// EventType is a watch event's type.
type EventType string

// Watch event types. Sync is Follow's own: the complete set of objects,
// from a (re)list.
const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	Bookmark EventType = "BOOKMARK"
	Sync     EventType = "SYNC"
)

// Event is one change of a watched object.
type Event[T any] struct {
	Type EventType
	// Object is the object after the change (before it, for Deleted); for
	// Bookmark only its resourceVersion is set; nil for Sync.
	Object *T
	// Items is, for Sync, every object that matches.
	Items []T
}

// Watch is one streamed watch response.
type Watch[T any] struct {
	body   io.ReadCloser
	r      *bufio.Reader
	cancel context.CancelFunc
}

// watchTimeout is how long the server keeps one watch open, at most (it
// is randomised from half of it up, so that watches do not all end at
// once); the watcher then resumes from the last version it saw.
const watchTimeout = 5 * time.Minute

func watch[T any](ctx context.Context, c *Client, k kind, o ListOptions) (*Watch[T], error) {
	q := o.query()
	q.Set("watch", "1")
	q.Set("allowWatchBookmarks", "true")
	secs := int(watchTimeout.Seconds())
	q.Set("timeoutSeconds", strconv.Itoa(secs/2+rand.IntN(secs/2)))
	ctx, cancel := context.WithCancel(ctx)
	resp, err := c.send(ctx, request{method: http.MethodGet, path: k.path(c.namespace, ""), query: q})
	if err != nil {
		cancel()
		return nil, err
	}
	return &Watch[T]{body: resp.Body, r: bufio.NewReaderSize(resp.Body, 64<<10), cancel: cancel}, nil
}

// Next blocks for the next event: io.EOF when the server ended the watch
// (resume from the last resourceVersion seen), an *APIError when it sent
// an error (ErrGone: list again).
func (w *Watch[T]) Next() (Event[T], error) {
	for {
		line, err := readLine(w.r, maxObjectBytes)
		if err != nil {
			return Event[T]{}, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var raw struct {
			Type   EventType       `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := json.Unmarshal(line, &raw); err != nil {
			return Event[T]{}, fmt.Errorf("decoding a watch event: %w", err)
		}
		switch raw.Type {
		case Added, Modified, Deleted, Bookmark:
			obj := new(T)
			if err := json.Unmarshal(raw.Object, obj); err != nil {
				return Event[T]{}, fmt.Errorf("decoding a watch event's object: %w", err)
			}
			return Event[T]{Type: raw.Type, Object: obj}, nil
		case "ERROR":
			var st status
			_ = json.Unmarshal(raw.Object, &st)
			return Event[T]{}, apiError(st.Code, raw.Object)
		default:
			return Event[T]{}, fmt.Errorf("watch event of unknown type %.32q", raw.Type)
		}
	}
}

// Stop ends the watch.
func (w *Watch[T]) Stop() {
	w.cancel()
	w.body.Close()
}

// readLine reads one newline-terminated line of at most limit bytes.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("a watch event is larger than %d bytes", limit)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// retryDelay is how long Follow waits after a failed list or watch.
const retryDelay = time.Second

// follow lists the objects of k matching selector, hands them to fn as
// one Sync event, then watches from the list's version and hands fn every
// change; it resumes a watch the server ended from the last version seen,
// and lists again (another Sync) when that version is gone or a request
// failed. It returns ctx's error when ctx ends; fn runs on its goroutine.
func follow[T any, P object[T]](ctx context.Context, c *Client, k kind, selector string, fn func(Event[T])) error {
	rv := ""
	for ctx.Err() == nil {
		if rv == "" {
			items, listRV, err := list[T](ctx, c, k, ListOptions{LabelSelector: selector})
			if err != nil {
				sleepCtx(ctx, retryDelay)
				continue
			}
			fn(Event[T]{Type: Sync, Items: items})
			rv = listRV
		}
		w, err := watch[T](ctx, c, k, ListOptions{LabelSelector: selector, ResourceVersion: rv})
		if err != nil {
			if errors.Is(err, ErrGone) {
				rv = ""
			}
			sleepCtx(ctx, retryDelay)
			continue
		}
		rv = drain[T, P](w, rv, fn)
	}
	return ctx.Err()
}

// drain hands fn the events of w until it ends and returns the version to
// resume from ("" to list again).
func drain[T any, P object[T]](w *Watch[T], rv string, fn func(Event[T])) string {
	defer w.Stop()
	for {
		ev, err := w.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return rv
			}
			// Gone, a broken stream or a bad event: list again, so that
			// nothing between is missed.
			return ""
		}
		if v := P(ev.Object).meta().ResourceVersion; v != "" {
			rv = v
		}
		if ev.Type != Bookmark {
			fn(ev)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
