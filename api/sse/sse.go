// Package sse encodes and decodes Server-Sent Events as sandboxd uses them:
// every event has an `event:` name and one `data:` line of JSON whose `type`
// field repeats the name, so both EventSource listeners and line parsers
// work. It is shared by the daemon, the agent and the Go SDK.
package sse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// ContentType is the media type of an event stream.
const ContentType = "text/event-stream"

// MaxEventBytes bounds one event's data when reading.
const MaxEventBytes = 8 << 20

// Writer writes events to an HTTP response and flushes each one, so the
// client sees it at once. It is safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
	rc *http.ResponseController
}

// NewWriter sets the stream headers on w and returns a Writer. It does not
// write the status line; the first event (or Keepalive) does.
func NewWriter(w http.ResponseWriter) *Writer {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	// A ResponseController, not a type assertion to http.Flusher: it
	// reaches the real writer through wrappers' Unwrap methods (request
	// logging, status recording), which a type assertion does not.
	return &Writer{w: w, rc: http.NewResponseController(w)}
}

// Send writes one event named name whose data is v as JSON.
func (s *Writer) Send(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s event: %w", name, err)
	}
	return s.SendRaw(name, data)
}

// SendRaw writes one event whose data is already-encoded JSON on one line.
func (s *Writer) SendRaw(name string, data []byte) error {
	var buf bytes.Buffer
	buf.Grow(len(name) + len(data) + 16)
	buf.WriteString("event: ")
	buf.WriteString(name)
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
	return s.write(buf.Bytes())
}

// Keepalive writes an SSE comment, which clients ignore, so that idle
// streams are not cut by proxies and dead clients are noticed.
func (s *Writer) Keepalive() error { return s.write([]byte(": keepalive\n\n")) }

func (s *Writer) write(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(p); err != nil {
		return err
	}
	// A writer that cannot flush (http.ErrNotSupported) still gets the
	// bytes; any other error is the connection's.
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// Event is one decoded event.
type Event struct {
	Name string
	Data []byte
}

// Decode unmarshals the event's data into v.
func (e Event) Decode(v any) error { return json.Unmarshal(e.Data, v) }

// ErrEventTooLarge is returned by Reader.Next for an event over MaxEventBytes.
var ErrEventTooLarge = errors.New("sse: event too large")

// Reader decodes events from a stream.
type Reader struct {
	r *bufio.Reader
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, readBufferSize)} }

// readBufferSize is a Reader's buffer. Lines longer than it are read in
// pieces (readLine), so it bounds nothing; it is at most 32 KiB because
// Go allocates a larger buffer as a large object of its own, which cost
// ~15-25 µs of CPU more per stream in a loaded microbenchmark (64 KiB
// against 16 KiB), paid by every E2B command's relay and every SDK
// stream, where most events are a few hundred bytes.
const readBufferSize = 16 << 10

// Next returns the next event, skipping comments. It returns io.EOF at the
// end of the stream and io.ErrUnexpectedEOF if the stream ends inside an
// event.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data []byte
	started := false
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && started {
				return Event{}, io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		if len(line) == 0 { // blank line: dispatch
			if !started {
				continue
			}
			if ev.Name == "" {
				ev.Name = "message"
			}
			ev.Data = data
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.Name = string(value)
			started = true
		case "data":
			if len(data)+len(value) > MaxEventBytes {
				return Event{}, ErrEventTooLarge
			}
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, value...)
			started = true
		}
	}
}

func (r *Reader) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := r.r.ReadLine()
		if err != nil {
			return nil, err
		}
		if len(line)+len(chunk) > MaxEventBytes+64 {
			return nil, ErrEventTooLarge
		}
		line = append(line, chunk...)
		if !isPrefix {
			return line, nil
		}
	}
}
