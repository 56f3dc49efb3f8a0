// Package agentlog bounds the agent's own log while the agent runs.
//
// The agent's stderr is a file on the host's state filesystem (the daemon
// opens <state>/sandboxes/<key>/agent.log for the container), and a
// caller can make the agent log a line per request (a session for a user
// that the sandbox's own root made impossible to create). The daemon trims the file only when a sandbox starts, so without
// a bound here a sandbox could grow it, at the speed of its requests, on
// the disk that holds every other sandbox. The agent is the only writer:
// programs it starts never inherit its stderr, and it is not dumpable, so
// user code cannot open it through /proc/1/fd.
package agentlog

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
)

// DefaultMax is the size a log file is kept under.
const DefaultMax = 1 << 20

// Writer writes to a log file and keeps it under a size: when a write
// would pass it, the file is emptied and starts again with a note and the
// last lines written (a sixteenth of the bound), so the tail the daemon
// shows when an agent dies is still there. Writers to anything but a
// regular file (a pipe, a terminal) pass through.
type Writer struct {
	mu      sync.Mutex
	f       *os.File
	max     int64
	size    int64
	regular bool
	recent  []byte // the last max/16 bytes written, for after a cut
}

// New returns a Writer for f that keeps it under max bytes.
func New(f *os.File, max int64) *Writer {
	w := &Writer{f: f, max: max}
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		w.regular = true
		w.size = fi.Size()
	}
	return w
}

// Write writes p, first cutting the file if p would take it past the
// bound. A single write longer than a sixteenth of the bound is shortened.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.regular {
		return w.f.Write(p)
	}
	n := len(p)
	keep := int(w.max / 16)
	if len(p) > keep {
		p = append(p[:keep-4:keep-4], "...\n"...)
	}
	if w.size+int64(len(p)) > w.max {
		w.cut()
	}
	written, err := w.f.Write(p)
	w.size += int64(written)
	w.recent = append(w.recent, p...)
	if len(w.recent) > keep {
		w.recent = append(w.recent[:0], w.recent[len(w.recent)-keep:]...)
	}
	if err != nil {
		return written, err
	}
	return n, nil
}

// cut empties the file and writes a note and the recent lines. The file
// is opened for appending, so later writes follow; the seek is for a
// descriptor that is not.
func (w *Writer) cut() {
	if err := w.f.Truncate(0); err != nil {
		return
	}
	w.f.Seek(0, io.SeekStart)
	w.size = 0
	n, _ := fmt.Fprintf(w.f, "--- log cut at %d bytes; the last lines before the cut follow ---\n", w.max)
	w.size += int64(n)
	recent := w.recent
	if i := bytes.IndexByte(recent, '\n'); i >= 0 && len(recent) == int(w.max/16) {
		recent = recent[i+1:] // from the first whole line
	}
	m, _ := w.f.Write(recent)
	w.size += int64(m)
}
