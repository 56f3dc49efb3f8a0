package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Stream names one output of a process.
type Stream int

const (
	Stdout Stream = 0
	Stderr Stream = 1
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// logStream is one output of a process: the first maxDisk bytes go to a
// file on disk; beyond that the most recent tailSize bytes are kept in a
// ring in memory (allocated only then), written to a second file when the
// output ends. Offsets are logical: [0, size) is the file, [tailStart,
// total) the ring (or the tail file); a reader whose offset falls in the
// gap between them skips to tailStart.
//
// Appending never blocks on readers: they read the file with their own
// descriptors and copy from the ring under the lock, and are woken by
// closing the changed channel.
//
// The file is created by the first append, not with the stream: most
// commands an SDK runs write a line or nothing, and a process that writes
// nothing leaves no file (readers open it only below size). Its creation
// costs a start two file creations otherwise (and its removal two
// unlinks), each a metadata change on the sandbox's disk.
type logStream struct {
	path     string
	maxDisk  int64
	tailSize int

	mu        sync.Mutex
	file      *os.File // write handle, from the first append; nil once the output ended
	size      int64    // bytes in the file
	total     int64    // logical end
	ring      []byte   // nil until the file is full, and again once flushed
	tailStart int64
	tailFile  bool // the tail is in path+".tail"
	truncated bool
	ended     bool // EOF: no writer is left
	changed   chan struct{}
	drainReq  chan struct{} // closed by the reader when a drain is done
	endedCh   chan struct{}
}

// newLogStream starts an empty log at path: a file an earlier process of
// the same ID left there is removed, so that a restored record never
// shows its output.
func newLogStream(path string, maxDisk int64, tailSize int) (*logStream, error) {
	for _, p := range []string{path, path + ".tail"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("clearing log: %w", err)
		}
	}
	return &logStream{path: path, maxDisk: maxDisk, tailSize: tailSize,
		changed: make(chan struct{}), endedCh: make(chan struct{})}, nil
}

// create makes the log's file. Called with mu held, before the first
// write.
func (ls *logStream) create() error {
	f, err := os.OpenFile(ls.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	ls.file = f
	return nil
}

// restoredLogStream is the log of a process of an earlier agent: ended,
// on disk.
func restoredLogStream(path string, truncated bool) *logStream {
	ls := &logStream{path: path, ended: true, truncated: truncated,
		changed: make(chan struct{}), endedCh: make(chan struct{})}
	close(ls.endedCh)
	if fi, err := os.Stat(path); err == nil {
		ls.size = fi.Size()
	}
	ls.total, ls.tailStart = ls.size, ls.size
	if fi, err := os.Stat(path + ".tail"); err == nil {
		ls.tailFile = true
		ls.total += fi.Size()
	}
	return ls
}

// append adds output. It never blocks for long: a disk write, or a copy.
func (ls *logStream) append(p []byte) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.file == nil && !ls.ended && ls.size < ls.maxDisk && ls.create() != nil {
		ls.maxDisk = ls.size // disk full, say: keep the tail from here
	}
	if ls.file != nil && ls.size < ls.maxDisk {
		k := int(min(int64(len(p)), ls.maxDisk-ls.size))
		n, err := ls.file.Write(p[:k])
		ls.size += int64(n)
		ls.total += int64(n)
		p = p[n:]
		if err != nil {
			ls.maxDisk = ls.size // disk full, say: keep the tail from here
		}
	}
	if len(p) > 0 {
		if !ls.truncated {
			ls.truncated = true
			ls.tailStart = ls.total
		}
		if ls.ring == nil {
			ls.ring = make([]byte, ls.tailSize)
		}
		if len(p) > ls.tailSize {
			ls.total += int64(len(p) - ls.tailSize)
			p = p[len(p)-ls.tailSize:]
		}
		for len(p) > 0 {
			at := int((ls.total - ls.maxDisk) % int64(ls.tailSize))
			n := copy(ls.ring[at:], p)
			p = p[n:]
			ls.total += int64(n)
		}
		ls.tailStart = max(ls.tailStart, ls.total-int64(ls.tailSize))
	}
	close(ls.changed)
	ls.changed = make(chan struct{})
}

// end records that the output ended: the file is closed and the ring, if
// any, goes to the tail file so its memory is freed.
func (ls *logStream) end() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.ended {
		return
	}
	ls.ended = true
	if ls.file != nil {
		ls.file.Close()
		ls.file = nil
	}
	if ls.ring != nil {
		tail := ls.ringBytes(ls.tailStart, ls.total)
		if err := os.WriteFile(ls.path+".tail", tail, 0o600); err == nil {
			ls.tailFile = true
			ls.ring = nil
		}
	}
	close(ls.changed)
	ls.changed = make(chan struct{})
	close(ls.endedCh)
}

// ringBytes copies [from, to) out of the ring. Called with mu held.
func (ls *logStream) ringBytes(from, to int64) []byte {
	out := make([]byte, 0, to-from)
	for from < to {
		at := int((from - ls.maxDisk) % int64(ls.tailSize))
		n := min(int(to-from), ls.tailSize-at)
		out = append(out, ls.ring[at:at+n]...)
		from += int64(n)
	}
	return out
}

// state returns the logical end, whether the output ended, and the channel
// closed at the next change.
func (ls *logStream) state() (total int64, ended bool, changed <-chan struct{}) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.total, ls.ended, ls.changed
}

func (ls *logStream) isTruncated() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.truncated
}

// logReader reads one logStream from a logical offset.
type logReader struct {
	ls   *logStream
	off  int64
	disk *os.File
	tail *os.File
}

func (ls *logStream) reader() *logReader { return &logReader{ls: ls} }

func (r *logReader) close() {
	if r.disk != nil {
		r.disk.Close()
	}
	if r.tail != nil {
		r.tail.Close()
	}
}

// read copies what is available at the reader's offset into buf, without
// waiting: 0 and nil when it is caught up. io.EOF once caught up with an
// ended stream.
func (r *logReader) read(buf []byte) (int, error) {
	ls := r.ls
	ls.mu.Lock()
	size, total, tailStart, ended := ls.size, ls.total, ls.tailStart, ls.ended
	if r.off >= size && r.off < tailStart {
		r.off = tailStart // the middle was dropped
	}
	if r.off >= size && r.off < total && ls.ring != nil {
		n := copy(buf, ls.ringBytes(r.off, min(total, r.off+int64(len(buf)))))
		ls.mu.Unlock()
		r.off += int64(n)
		return n, nil
	}
	tailFile := ls.tailFile
	ls.mu.Unlock()
	switch {
	case r.off < size:
		if r.disk == nil {
			f, err := os.Open(ls.path)
			if err != nil {
				return 0, err
			}
			r.disk = f
		}
		n, err := r.disk.ReadAt(buf[:min(int64(len(buf)), size-r.off)], r.off)
		r.off += int64(n)
		if n == 0 && err != nil {
			return 0, err
		}
		return n, nil
	case r.off < total && tailFile:
		if r.tail == nil {
			f, err := os.Open(ls.path + ".tail")
			if err != nil {
				return 0, err
			}
			r.tail = f
		}
		n, err := r.tail.ReadAt(buf[:min(int64(len(buf)), total-r.off)], r.off-tailStart)
		r.off += int64(n)
		if n == 0 && err != nil {
			return 0, err
		}
		return n, nil
	case r.off >= total && ended:
		return 0, io.EOF
	}
	return 0, nil
}

// readAll returns the whole stored log.
func (ls *logStream) readAll() ([]byte, error) {
	r := ls.reader()
	defer r.close()
	var out []byte
	buf := make([]byte, 64<<10)
	total, _, _ := ls.state()
	for r.off < total {
		n, err := r.read(buf)
		out = append(out, buf[:n]...)
		if err != nil || n == 0 {
			if errors.Is(err, io.EOF) {
				break
			}
			return out, err
		}
	}
	return out, nil
}

// chunkPool holds the read buffers of pumps and followers, which every
// process has (two pumps, and a follower for most): a buffer of a
// process that ended serves the next one as it is, where a new one is
// zeroed and, once the collector returned the old one's pages to the
// kernel, faulted in page by page (tens of microseconds a page where
// page faults are expensive, as in a PVM guest), on every command's way.
var chunkPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// pump reads a process's output pipe into ls until EOF, and serves drain
// requests: see requestDrain.
func (ls *logStream) pump(f *os.File) {
	defer f.Close()
	defer ls.end()
	chunk := chunkPool.Get().(*[32 << 10]byte)
	defer chunkPool.Put(chunk)
	buf := chunk[:]
	for {
		n, err := f.Read(buf)
		if n > 0 {
			ls.append(buf[:n])
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			f.SetReadDeadline(time.Time{})
			budget := 0
			if rc, err := f.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { budget, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
			}
			for budget > 0 {
				n, err := f.Read(buf[:min(len(buf), budget)])
				if n > 0 {
					ls.append(buf[:n])
				}
				budget -= n
				if err != nil {
					break
				}
			}
			ls.mu.Lock()
			if ls.drainReq != nil {
				close(ls.drainReq)
				ls.drainReq = nil
			}
			ls.mu.Unlock()
			continue
		}
		if err != nil {
			return
		}
	}
}

// requestDrain makes the pump take in whatever the pipe holds now, and
// waits (at most until ctx is done) until it has. Called once the process
// exited: everything it wrote before is then in the log, even if a child
// it left behind keeps the pipe open.
//
// Why a read deadline: the pump is parked in Read. Setting a deadline in
// the past makes that Read (or the next one, if the pump is busy
// appending) return without consuming anything, so the pump then knows
// every earlier read was appended and can read exactly what the pipe holds.
func (ls *logStream) requestDrain(ctx context.Context, f *os.File) {
	ls.mu.Lock()
	if ls.ended {
		ls.mu.Unlock()
		return
	}
	done := make(chan struct{})
	ls.drainReq = done
	ls.mu.Unlock()
	f.SetReadDeadline(time.Unix(1, 0))
	select {
	case <-done:
	case <-ls.endedCh:
	case <-ctx.Done():
	}
}
