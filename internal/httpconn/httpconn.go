// Package httpconn makes an HTTP/1.1 exchange on a keep-alive connection
// in the caller's own goroutine, and pools such connections by key.
//
// http.Transport hands every request to two goroutines of its connection
// (one writes, one reads) and back, and the end of the answer's body to
// the reader again: on a loaded host, and on this PVM guest where each
// wake-up can wake another OS thread, those hand-offs and not the work
// were much of what a small call cost. The preview proxy's direct path
// and the daemon's calls to its agents both use this instead for the
// requests they can send whole before reading the answer.
package httpconn

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Conn is one connection used by one exchange at a time: written through
// Writer, read through Reader.
type Conn struct {
	Conn   net.Conn
	Reader *bufio.Reader
	Writer *bufio.Writer
	limit  *headerLimit
	idle   time.Time
}

// New wraps c with 4 KiB buffers each way.
func New(c net.Conn) *Conn {
	l := &headerLimit{r: c}
	return &Conn{Conn: c, Reader: bufio.NewReaderSize(l, 4<<10), Writer: bufio.NewWriterSize(c, 4<<10), limit: l}
}

// Send writes req (its body too) and flushes it.
func (c *Conn) Send(req *http.Request) error {
	if err := req.Write(c.Writer); err != nil {
		return err
	}
	return c.Writer.Flush()
}

// ReadResponse reads the answer's headers to req, reading at most
// maxHeaderBytes for them, and skipping 1xx answers other than 101
// (a 100 Continue comes before the real answer). A connection that ends
// before the answer's first byte fails with io.EOF (http.ReadResponse
// says io.ErrUnexpectedEOF either way): the peer may have closed it
// without reading the request.
func (c *Conn) ReadResponse(req *http.Request, maxHeaderBytes int64) (*http.Response, error) {
	c.limit.armed, c.limit.n = true, maxHeaderBytes
	defer func() { c.limit.armed = false }()
	if _, err := c.Reader.Peek(1); err != nil {
		return nil, err
	}
	for {
		resp, err := http.ReadResponse(c.Reader, req)
		if err != nil || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, err
		}
	}
}

// headerLimit bounds what a response's headers may read: it fails reads
// past n bytes while armed.
type headerLimit struct {
	r     io.Reader
	armed bool
	n     int64
}

// ErrHeadersTooLarge is the error of an answer whose headers are longer
// than ReadResponse allows.
var ErrHeadersTooLarge = errors.New("the response headers are too large")

func (l *headerLimit) Read(p []byte) (int, error) {
	if !l.armed {
		return l.r.Read(p)
	}
	if l.n <= 0 {
		return 0, ErrHeadersTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// IsConnReset reports whether err is a pooled connection found closed:
// the peer went away or closed it while idle.
func IsConnReset(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Pool holds idle connections by key. A connection is put back only
// once its answer was read to its end; one idle for IdleTimeout or
// longer is closed.
type Pool struct {
	idleTimeout time.Duration
	max         int // over all keys; 0: no limit
	maxPerKey   int

	mu     sync.Mutex
	idle   map[string][]*Conn
	count  int
	sweep  *time.Timer
	closed bool
}

// NewPool returns a pool that keeps at most maxPerKey idle connections
// per key and max in all (0: no limit over all keys).
func NewPool(idleTimeout time.Duration, max, maxPerKey int) *Pool {
	return &Pool{idleTimeout: idleTimeout, max: max, maxPerKey: maxPerKey}
}

// Get takes an idle connection of key, or returns nil.
func (p *Pool) Get(key string, now time.Time) *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for list := p.idle[key]; len(list) > 0; list = p.idle[key] {
		c := list[len(list)-1]
		p.idle[key] = list[:len(list)-1]
		if len(p.idle[key]) == 0 {
			delete(p.idle, key)
		}
		p.count--
		if now.Sub(c.idle) < p.idleTimeout {
			return c
		}
		c.Conn.Close()
	}
	return nil
}

// Put keeps c, idle, for key (or closes it when the pool is full or
// closed).
func (p *Pool) Put(key string, c *Conn, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || (p.max > 0 && p.count >= p.max) || len(p.idle[key]) >= p.maxPerKey {
		c.Conn.Close()
		return
	}
	c.idle = now
	if p.idle == nil {
		p.idle = map[string][]*Conn{}
	}
	p.idle[key] = append(p.idle[key], c)
	p.count++
	if p.sweep == nil {
		p.sweep = time.AfterFunc(p.idleTimeout, p.expire)
	}
}

// Drop closes the idle connections of key.
func (p *Pool) Drop(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle[key] {
		c.Conn.Close()
		p.count--
	}
	delete(p.idle, key)
}

// expire closes connections idle for longer than the timeout (those of a
// peer that went to sleep or away among them); it runs while any
// connection is idle.
func (p *Pool) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for key, list := range p.idle {
		kept := list[:0]
		for _, c := range list {
			if now.Sub(c.idle) < p.idleTimeout {
				kept = append(kept, c)
			} else {
				c.Conn.Close()
				p.count--
			}
		}
		if len(kept) == 0 {
			delete(p.idle, key)
		} else {
			p.idle[key] = kept
		}
	}
	p.sweep = nil
	if p.count > 0 && !p.closed {
		p.sweep = time.AfterFunc(p.idleTimeout/2, p.expire)
	}
}

// Close closes every idle connection, and every one put back later.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, list := range p.idle {
		for _, c := range list {
			c.Conn.Close()
		}
	}
	p.idle, p.count = nil, 0
	if p.sweep != nil {
		p.sweep.Stop()
	}
}
