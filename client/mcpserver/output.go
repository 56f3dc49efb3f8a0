package mcpserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/client"
)

// capture keeps a bounded view of one output stream: all of it while it
// fits in limit bytes, else its first quarter and its last three quarters
// (the end of a log is where errors are). The moment a stream outgrows the
// view, everything is also written to a file in the sandbox (the spool),
// so the full output stays reachable with read_file or exec.
type capture struct {
	ctx   context.Context
	sb    *client.Sandbox
	name  string // "stdout", "stderr"
	tag   string // the call's spool file prefix
	limit int

	head  []byte // all output while it fits; then its first limit/4 bytes
	tail  []byte // the last limit-limit/4 bytes (after overflow), with slack
	total int64
	spool *spool
}

func newCapture(ctx context.Context, sb *client.Sandbox, tag, name string, limit int) *capture {
	return &capture{ctx: ctx, sb: sb, tag: tag, name: name, limit: limit}
}

// newTag names the spool files of one call, e.g. "exec-1f3a9c0d".
func newTag(tool string) string {
	var b [4]byte
	rand.Read(b[:])
	return tool + "-" + hex.EncodeToString(b[:])
}

func (c *capture) write(p []byte) {
	c.total += int64(len(p))
	if c.spool == nil && len(c.head)+len(p) <= c.limit {
		c.head = append(c.head, p...)
		return
	}
	if c.spool == nil {
		// Overflow: everything so far goes to the spool, and the view
		// becomes head and tail.
		c.spool = startSpool(c.ctx, c.sb, spoolDir+"/"+c.tag+"."+c.name)
		all := append(c.head, p...)
		c.spool.write(all)
		keep := c.limit / 4
		c.tail = append([]byte(nil), all[keep:]...)
		c.head = all[:keep:keep]
		c.trimTail()
		return
	}
	c.spool.write(p)
	c.tail = append(c.tail, p...)
	c.trimTail()
}

// trimTail keeps the tail within twice its size, so appending stays cheap.
func (c *capture) trimTail() {
	if tailMax := c.limit - c.limit/4; len(c.tail) > 2*tailMax {
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-tailMax:]...)
	}
}

// finish ends the spool, if any, and returns the view: the output as text
// (cut output with a note in the middle) and, when cut, the note for the
// end of the result.
func (c *capture) finish() (text, note string) {
	if c.spool == nil {
		return string(c.head), ""
	}
	tailMax := c.limit - c.limit/4
	tail := c.tail
	if len(tail) > tailMax {
		tail = tail[len(tail)-tailMax:]
	}
	omitted := c.total - int64(len(c.head)) - int64(len(tail))
	head, tailText := trimRunes(c.head, false), trimRunes(tail, true)
	text = head + fmt.Sprintf("\n[... %d bytes of %s omitted ...]\n", omitted, c.name) + tailText
	if err := c.spool.close(); err != nil {
		_, msg := errorOf(err)
		return text, fmt.Sprintf("%s was %d bytes and is cut in the middle; writing all of it to %s failed: %s", c.name, c.total, c.spool.path, msg)
	}
	return text, fmt.Sprintf("%s was %d bytes and is cut in the middle; all of it is in %s in the sandbox (read_file with offset and length, or exec grep/tail/head)", c.name, c.total, c.spool.path)
}

// path returns the spool file, or "" when the output fitted.
func (c *capture) path() string {
	if c.spool == nil {
		return ""
	}
	return c.spool.path
}

// trimRunes drops the partial UTF-8 character a cut leaves at the start
// (fromStart) or end of b.
func trimRunes(b []byte, fromStart bool) string {
	for i := 0; i < utf8.UTFMax-1 && len(b) > 0; i++ {
		if fromStart {
			if utf8.RuneStart(b[0]) {
				break
			}
			b = b[1:]
		} else {
			r, size := utf8.DecodeLastRune(b)
			if r != utf8.RuneError || size != 1 {
				break
			}
			b = b[:len(b)-1]
		}
	}
	return string(b)
}

// spool streams output into a file of the sandbox through one upload that
// lasts as long as the output does. Its goroutine ends when close is
// called (or the call's context ends).
type spool struct {
	path   string
	pw     *io.PipeWriter
	done   chan struct{}
	err    error // set before done closes
	failed bool  // a write failed: the upload gave up
}

func startSpool(ctx context.Context, sb *client.Sandbox, path string) *spool {
	pr, pw := io.Pipe()
	sp := &spool{path: path, pw: pw, done: make(chan struct{})}
	go func() {
		defer close(sp.done)
		_, sp.err = sb.Upload(ctx, path, pr, client.CreateParents())
		pr.CloseWithError(fmt.Errorf("upload of %s ended", path))
	}()
	return sp
}

func (sp *spool) write(p []byte) {
	if sp.failed {
		return
	}
	if _, err := sp.pw.Write(p); err != nil {
		sp.failed = true
	}
}

func (sp *spool) close() error {
	sp.pw.Close()
	<-sp.done
	return sp.err
}

// progress sends output as progress notifications, if the client asked
// for them (a progress token in the call), up to maxProgressBytes a call.
type progress struct {
	ctx   context.Context
	req   *mcp.CallToolRequest
	token any
	count float64
	sent  int
}

func newProgress(ctx context.Context, req *mcp.CallToolRequest) *progress {
	p := &progress{ctx: ctx, req: req}
	if req != nil && req.Params != nil && req.Session != nil {
		p.token = req.Params.GetProgressToken()
	}
	return p
}

// output notifies one chunk of a stream; the notification's _meta says
// which stream. Chunks are split so no notification is huge. A client
// that went away is not an error here: the call's context ends then.
func (p *progress) output(stream string, data []byte) {
	if p.token == nil || len(data) == 0 {
		return
	}
	if p.sent >= maxProgressBytes {
		return
	}
	for len(data) > 0 {
		n := min(len(data), maxProgressChunk)
		for n < len(data) && n > 0 && !utf8.RuneStart(data[n]) {
			n--
		}
		if n == 0 {
			n = min(len(data), maxProgressChunk)
		}
		msg := strings.ToValidUTF8(string(data[:n]), "\uFFFD")
		data = data[n:]
		p.sent += n
		if p.sent >= maxProgressBytes {
			msg += fmt.Sprintf("\n[output beyond %d bytes is not streamed; the result has the rest]\n", maxProgressBytes)
			data = nil
		}
		p.notify(msg, map[string]any{"stream": stream})
	}
}

// status notifies a line of status, e.g. that a sandbox is being made.
func (p *progress) status(msg string) {
	if p.token != nil {
		p.notify(msg, nil)
	}
}

func (p *progress) notify(msg string, meta map[string]any) {
	p.count++
	_ = p.req.Session.NotifyProgress(p.ctx, &mcp.ProgressNotificationParams{
		ProgressToken: p.token, Progress: p.count, Message: msg, Meta: meta,
	})
}
