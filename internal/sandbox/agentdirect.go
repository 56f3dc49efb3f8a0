package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/httpconn"
)

// The calls to an agent that can be sent whole before the answer is
// read (no body, or a small one of known length; no upgrade) are made in
// the caller's goroutine on a connection of the link's own pool
// (package httpconn): the write, the headers and the body's reads, up to
// its end, which puts the connection back. http.Transport passes each
// call to its connection's writing goroutine, the answer back from its
// reading one, and the body's end to that one again; on this PVM guest
// those wake-ups were a good part of the daemon's own 0.43 ms on every
// forwarded call (bench/results/gvisor.txt). Streamed bodies, which may
// go both ways at once, and upgrades keep the transport.

// maxAgentDirectBody is the largest request body a direct call sends.
// Written before the answer is read, it must fit the socket's buffer, so
// that an agent that answers without reading it cannot leave the write
// waiting.
const maxAgentDirectBody = 64 << 10

// agentDirect reports whether req can be sent directly.
func agentDirect(req *http.Request) bool {
	noBody := req.Body == nil || req.Body == http.NoBody
	return req.Method != http.MethodConnect && len(req.TransferEncoding) == 0 && len(req.Trailer) == 0 &&
		req.Header.Get("Upgrade") == "" && !strings.EqualFold(req.Header.Get("Connection"), "upgrade") &&
		(noBody || req.ContentLength > 0 && req.ContentLength <= maxAgentDirectBody)
}

// roundTripDirect sends req (agentDirect) to host's agent on a pooled
// connection or a new one. A pooled connection found closed before it
// took the request (the agent closed it while idle) is replaced once.
// The caller's context cancels a wait for the answer, or a read of its
// body, by putting the connection's deadline in the past; such a
// connection is never used again.
func (c *agentConns) roundTripDirect(req *http.Request, host string) (*http.Response, error) {
	body, err := readDirectBody(req)
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		conn := c.direct.Get(host, time.Now())
		reused := conn != nil
		if conn == nil {
			nc, err := c.dial(ctx, "unix", host)
			if err != nil {
				return nil, err
			}
			conn = httpconn.New(nc)
		}
		resp, sent, err := c.exchange(ctx, conn, withBody(req, body), host)
		if err == nil {
			return resp, nil
		}
		conn.Conn.Close()
		if reused && attempt == 0 && ctx.Err() == nil && resendable(req, sent, err) {
			continue
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
}

// readDirectBody reads req's body (of known length) into memory, so that
// it can be sent again on another connection.
func readDirectBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	body := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(req.Body, body); err != nil {
		return nil, err
	}
	return body, nil
}

// withBody is req sending body (a copy: a RoundTripper leaves the
// caller's request as it was), or req itself when it has none.
func withBody(req *http.Request, body []byte) *http.Request {
	if body == nil {
		return req
	}
	out := *req
	out.Body = io.NopCloser(bytes.NewReader(body))
	return &out
}

// resendable reports whether a call that failed with err on a reused
// connection can be sent again: it never left (the agent had closed the
// connection), or it got no byte of an answer and is a GET or HEAD, which
// http.Transport also sends again.
func resendable(req *http.Request, sent bool, err error) bool {
	if !sent {
		return httpconn.IsConnReset(err)
	}
	return errors.Is(err, io.EOF) && (req.Method == http.MethodGet || req.Method == http.MethodHead)
}

// exchange writes req on conn and reads the answer's headers; the body
// it returns reads the rest and puts conn back into the pool at its end.
// sent says whether the request was written.
func (c *agentConns) exchange(ctx context.Context, conn *httpconn.Conn, req *http.Request, host string) (*http.Response, bool, error) {
	stop := context.AfterFunc(ctx, func() { conn.Conn.SetDeadline(time.Unix(1, 0)) })
	if err := conn.Send(req); err != nil {
		stop()
		return nil, false, err
	}
	resp, err := conn.ReadResponse(req, maxAgentHeaderBytes)
	if err != nil {
		stop()
		return nil, true, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop()
		resp.Body.Close()
		return nil, true, errors.New("the agent switched protocols on a call that asked for no upgrade")
	}
	b := &directBody{body: resp.Body, conn: conn, stop: stop, ctx: ctx,
		reusable: !resp.Close && !req.Close, put: func() { c.direct.Put(host, conn, time.Now()) }}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, true, nil
	}
	resp.Body = b
	return resp, true, nil
}

// directBody is a direct call's answer body. Read to its end, it puts the
// connection back (unless the answer said it closes); closed before,
// it closes the connection.
type directBody struct {
	body     io.ReadCloser
	conn     *httpconn.Conn
	stop     func() bool
	ctx      context.Context
	reusable bool
	put      func()

	mu   sync.Mutex
	done bool
}

func (b *directBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		b.finish(true)
		return n, err
	}
	b.finish(false)
	if b.ctx.Err() != nil {
		err = context.Cause(b.ctx)
	}
	return n, err
}

func (b *directBody) Close() error {
	b.finish(false)
	return nil
}

// finish ends the call once: the connection goes back to the pool when
// the body was read to its end, the answer allows it and the caller's
// context did not put its deadline in the past; otherwise it is closed.
func (b *directBody) finish(atEnd bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if b.stop() && atEnd && b.reusable {
		b.put()
		return
	}
	b.conn.Conn.Close()
}
