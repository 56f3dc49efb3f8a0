package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// maxFollowers bounds the open log streams and readiness waits of a
// sandbox: each holds a read buffer.
const maxFollowers = 256

// maxLine bounds a line kept for matching; a longer line is matched in
// pieces of this size.
const maxLine = 64 << 10

// Chunk is a piece of one stream's output.
type Chunk struct {
	Stream Stream
	Data   []byte // valid until the next call to Next
}

// Follower reads a process's output from the start: what is stored, then
// live output, until the process has ended and everything it wrote before
// is delivered. A follower never slows the process: one that falls behind
// the ring loses the dropped part.
type Follower struct {
	p         *Proc
	r         [2]*logReader
	chunk     *[32 << 10]byte // buf's, from chunkPool until Close
	buf       []byte
	next      int // stream to try first, so neither starves
	endTotals *[2]int64
}

// Follow opens a follower; Close it. It fails with ErrLimit when too many
// are open.
func (p *Proc) Follow() (*Follower, error) {
	m := p.m
	m.mu.Lock()
	if m.readers >= maxFollowers {
		m.mu.Unlock()
		return nil, ErrLimit
	}
	m.readers++
	m.mu.Unlock()
	chunk := chunkPool.Get().(*[32 << 10]byte)
	return &Follower{p: p, r: [2]*logReader{p.logs[Stdout].reader(), p.logs[Stderr].reader()}, chunk: chunk, buf: chunk[:]}, nil
}

// Followers is the number of open followers.
func (m *Manager) Followers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readers
}

// Close releases the follower; the data of its chunks is no longer valid.
func (f *Follower) Close() {
	if f.p == nil {
		return
	}
	for _, r := range f.r {
		r.close()
	}
	chunkPool.Put(f.chunk)
	f.chunk, f.buf = nil, nil
	m := f.p.m
	m.mu.Lock()
	m.readers--
	m.mu.Unlock()
	f.p = nil
}

// Next returns the next chunk, waiting for output if needed. It returns
// io.EOF once the process has ended and its output is delivered, and the
// context's error when ctx is done first.
func (f *Follower) Next(ctx context.Context) (Chunk, error) {
	p := f.p
	for {
		for i := range 2 {
			st := Stream((f.next + i) % 2)
			r := f.r[st]
			if f.endTotals != nil && r.off >= f.endTotals[st] {
				continue
			}
			n, err := r.read(f.buf)
			if n > 0 {
				f.next = int(st+1) % 2
				return Chunk{Stream: st, Data: f.buf[:n]}, nil
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return Chunk{}, err
			}
		}
		if f.endTotals != nil {
			return Chunk{}, io.EOF
		}
		_, _, ch0 := p.logs[Stdout].state()
		_, _, ch1 := p.logs[Stderr].state()
		select {
		case <-p.done:
			// Everything written before the end is in the logs now.
			t0, _, _ := p.logs[Stdout].state()
			t1, _, _ := p.logs[Stderr].state()
			f.endTotals = &[2]int64{t0, t1}
		default:
			// Re-check after taking the channels: a chunk may have
			// arrived in between.
			if a, _, _ := p.logs[Stdout].state(); a > f.r[Stdout].off {
				continue
			}
			if a, _, _ := p.logs[Stderr].state(); a > f.r[Stderr].off {
				continue
			}
			select {
			case <-ch0:
			case <-ch1:
			case <-p.done:
			case <-ctx.Done():
				return Chunk{}, ctx.Err()
			}
		}
	}
}

// Matcher matches one line of output.
type Matcher func(line []byte) bool

// NewMatcher matches lines containing pattern, or matching it as an RE2
// regular expression when regex is set.
func NewMatcher(pattern string, regex bool) (Matcher, error) {
	if !regex {
		b := []byte(pattern)
		return func(line []byte) bool { return bytes.Contains(line, b) }, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	return re.Match, nil
}

// WaitForLog waits until a line of stdout or stderr matches, looking at
// the output so far first, and returns the line and its stream. It fails
// with ErrExitedBeforeReady when the process ends without a match (its
// last, unterminated, line included) and with ErrTimeout after timeout.
func (p *Proc) WaitForLog(ctx context.Context, match Matcher, timeout time.Duration) (string, Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f, err := p.Follow()
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	var partial [2][]byte
	for {
		c, err := f.Next(ctx)
		if errors.Is(err, io.EOF) {
			for st, line := range partial {
				if len(line) > 0 && match(line) {
					return string(line), Stream(st), nil
				}
			}
			return "", 0, ErrExitedBeforeReady
		}
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				if context.Cause(ctx) == context.DeadlineExceeded {
					return "", 0, ErrTimeout
				}
			}
			return "", 0, err
		}
		data := c.Data
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			var piece []byte
			if i < 0 {
				piece, data = data, nil
			} else {
				piece, data = data[:i], data[i+1:]
			}
			line := append(partial[c.Stream], piece...)
			if i < 0 && len(line) < maxLine {
				partial[c.Stream] = line
				continue
			}
			line = bytes.TrimSuffix(line, []byte("\r"))
			if match(line) {
				return string(line), c.Stream, nil
			}
			partial[c.Stream] = line[:0]
		}
	}
}

// WaitForExit waits for the process to end, at most timeout.
func (p *Proc) WaitForExit(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return ErrTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PortCheck is what WaitForPort waits for.
type PortCheck struct {
	Port int
	// HTTP: answer a GET of Path with a status in [StatusMin, StatusMax];
	// otherwise accept a TCP connection.
	HTTP                 bool
	Path                 string
	StatusMin, StatusMax int
	Timeout, Interval    time.Duration
}

// WaitForPort waits until the port is ready, dialling it inside the
// sandbox (the agent shares its network namespace) on 127.0.0.1 and ::1.
// It returns the HTTP status in HTTP mode.
func (p *Proc) WaitForPort(ctx context.Context, c PortCheck) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	// Counted like a follower: it holds a request open.
	p.m.mu.Lock()
	if p.m.readers >= maxFollowers {
		p.m.mu.Unlock()
		return 0, ErrLimit
	}
	p.m.readers++
	p.m.mu.Unlock()
	defer func() { p.m.mu.Lock(); p.m.readers--; p.m.mu.Unlock() }()
	port := strconv.Itoa(c.Port)
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil, ResponseHeaderTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for {
		select {
		case <-p.done:
			return 0, ErrExitedBeforeReady
		default:
		}
		for _, host := range []string{"127.0.0.1", "::1"} {
			addr := net.JoinHostPort(host, port)
			if !c.HTTP {
				d := net.Dialer{Timeout: min(time.Second, c.Interval*5)}
				conn, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					conn.Close()
					return 0, nil
				}
				continue
			}
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr+c.Path, nil)
			if err != nil {
				rcancel()
				return 0, fmt.Errorf("building the request: %w", err)
			}
			req.Host = "localhost:" + port
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				rcancel()
				if resp.StatusCode >= c.StatusMin && resp.StatusCode <= c.StatusMax {
					return resp.StatusCode, nil
				}
				continue
			}
			rcancel()
		}
		t := time.NewTimer(c.Interval)
		select {
		case <-t.C:
		case <-p.done:
			t.Stop()
			return 0, ErrExitedBeforeReady
		case <-ctx.Done():
			t.Stop()
			if context.Cause(ctx) == context.DeadlineExceeded {
				return 0, ErrTimeout
			}
			return 0, ctx.Err()
		}
	}
}

// ParseSignal reads a signal as "SIGTERM", "TERM", "term" or "15".
func ParseSignal(s string) (int, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, n >= 1 && n <= 64
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	n := signalNum(name)
	return n, n != 0
}
