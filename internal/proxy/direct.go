package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/copybuf"
	"github.com/sandboxd/sandboxd/internal/httpconn"
)

// The direct path serves the commonest preview request, a GET or HEAD
// without a body and without an upgrade, in the handler's own goroutine:
// it takes an idle connection to the service from the proxy's own pool
// (per sandbox port), writes the request, reads the answer and copies it
// to the client. http.Transport hands every request to two goroutines of
// its connection (one writes, one reads) and back, and on a loaded host
// those wake-ups, not the proxy's own work, were most of what a small
// answer cost (BenchmarkPreview). Everything else (bodies, which may
// stream both ways at once; upgrades; other methods, which may not be
// re-sent on a fresh connection) takes httputil.ReverseProxy and the
// transport.

// directEligible reports whether r can take the direct path.
func directEligible(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		r.ContentLength == 0 && len(r.TransferEncoding) == 0 &&
		r.Header.Get("Upgrade") == "" && r.ProtoMajor == 1
}

// upstream is one keep-alive connection to a service.
type upstream = httpconn.Conn

// serveDirect forwards r (directEligible) as req says, on a pooled
// connection or a new one. A pooled connection that breaks before any
// answer (the service closed it while idle) is replaced once: GET and
// HEAD may be sent twice.
func (p *Proxy) serveDirect(w http.ResponseWriter, r *http.Request, req Request, onError func(http.ResponseWriter, *http.Request, error)) {
	key := upstreamHost(req.SandboxID, req.Port)
	out := p.outgoing(r, req)
	out.Close = false
	for attempt := 0; ; attempt++ {
		u := p.pool.Get(key, time.Now())
		reused := u != nil
		if u == nil {
			conn, err := p.dial(r.Context(), req.SandboxID, req.Port)
			if err != nil {
				p.fail(w, r, &DialError{Err: err}, onError)
				return
			}
			u = httpconn.New(conn)
		}
		resp, err := p.roundTrip(r.Context(), u, out)
		if err != nil {
			u.Conn.Close()
			if reused && attempt == 0 && r.Context().Err() == nil && httpconn.IsConnReset(err) {
				continue
			}
			p.fail(w, r, err, onError)
			return
		}
		if req.Hold != nil && p.tryJoin(w, r, req, resp, u, onError) {
			return
		}
		if p.copyResponse(w, r, resp, u) && !resp.Close && !r.Close {
			p.pool.Put(key, u, time.Now())
		} else {
			u.Conn.Close()
		}
		return
	}
}

// outgoing is r as it goes on to the service req names: without hop and
// forwarding headers, rewritten as req says, and without a User-Agent Go
// would add. The direct path and a diverted joined connection send the
// same.
func (p *Proxy) outgoing(r *http.Request, req Request) *http.Request {
	out := r.Clone(r.Context())
	out.Header = r.Header.Clone()
	removeHopHeaders(out.Header)
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		out.Header.Del(h)
	}
	p.rewrite(&httputil.ProxyRequest{In: r, Out: out}, req)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // no Go default
	}
	return out
}

// roundTrip writes out on u and reads the response headers, within the
// header timeout and the header size limit; it gives up when the client
// goes away.
func (p *Proxy) roundTrip(ctx context.Context, u *upstream, out *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { u.Conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := u.Send(out); err != nil {
		return nil, err
	}
	u.Conn.SetReadDeadline(time.Now().Add(p.limits.HeaderTimeout))
	resp, err := u.ReadResponse(out, p.limits.MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	if !stop() {
		resp.Body.Close()
		return nil, context.Cause(ctx)
	}
	u.Conn.SetReadDeadline(time.Time{})
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		return nil, errors.New("the service switched protocols on a request that asked for no upgrade")
	}
	return resp, nil
}

// copyResponse sends resp to the client, flushing as it comes when its
// length is unknown (event streams), and reports whether the upstream
// connection is ready for another request.
func (p *Proxy) copyResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, u *upstream) bool {
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	stop := context.AfterFunc(r.Context(), func() { u.Conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var dst io.Writer = w
	if resp.ContentLength < 0 {
		dst = flushWriter{w: w, rc: http.NewResponseController(w)}
	}
	buf := copybuf.Default.Get()
	_, err := io.CopyBuffer(dst, onlyReader{resp.Body}, buf)
	copybuf.Default.Put(buf)
	if !stop() {
		// The client went away: the connection's deadline is past.
		return false
	}
	if err != nil {
		if r.Context().Err() == nil {
			p.log.Debug("copying a preview response", "err", err)
		}
		// The client gets a cut answer, as from the transport.
		panic(http.ErrAbortHandler)
	}
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
	return true
}

// onlyReader hides WriterTo/ReaderFrom so that CopyBuffer uses buf.
type onlyReader struct{ io.Reader }

type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error, onError func(http.ResponseWriter, *http.Request, error)) {
	if r.Context().Err() != nil {
		panic(http.ErrAbortHandler)
	}
	onError(w, r, err)
}

// hopHeaders are the hop-by-hop headers (RFC 9110 section 7.6.1), which a
// proxy never forwards.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}
