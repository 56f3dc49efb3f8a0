package e2b

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/httpserve"
)

// The Connect protocol (connectrpc.com, protocol version 1) with the JSON
// codec, as E2B's SDKs speak it to envd: unary calls are a JSON body
// answered by a JSON body; server streams are length-prefixed envelopes
// (flag byte, 4-byte big-endian length, JSON) ended by one envelope with
// flagEndStream carrying {} or {"error": ...}. Written by hand (about the
// size of a generated codec's glue) so the daemon takes no protobuf
// dependency; only the JSON mapping of the messages below is spoken.

const (
	flagEndStream = 0x02
	flagCompress  = 0x01
	// maxRPCMessage bounds one request message (SendInput carries stdin).
	maxRPCMessage = 8 << 20
)

// Connect error codes (the subset the SDK tells apart).
const (
	codeCanceled           = "canceled"
	codeInvalidArgument    = "invalid_argument"
	codeDeadlineExceeded   = "deadline_exceeded"
	codeNotFound           = "not_found"
	codeAlreadyExists      = "already_exists"
	codePermissionDenied   = "permission_denied"
	codeResourceExhausted  = "resource_exhausted"
	codeFailedPrecondition = "failed_precondition"
	codeUnimplemented      = "unimplemented"
	codeInternal           = "internal"
	codeUnavailable        = "unavailable"
	codeUnauthenticated    = "unauthenticated"
)

// rpcError is a Connect error: a code and a message.
type rpcError struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

func (e *rpcError) Error() string { return e.Code + ": " + e.Message }

func rpcErrorf(code, format string, args ...any) *rpcError {
	return &rpcError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// httpStatusOf is the HTTP status of a unary error, as the Connect
// protocol maps codes.
func httpStatusOf(code string) int {
	switch code {
	case codeCanceled:
		return 499
	case codeInvalidArgument, codeFailedPrecondition:
		return http.StatusBadRequest
	case codeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case codeNotFound:
		return http.StatusNotFound
	case codeAlreadyExists:
		return http.StatusConflict
	case codePermissionDenied:
		return http.StatusForbidden
	case codeResourceExhausted:
		return http.StatusTooManyRequests
	case codeUnimplemented:
		return http.StatusNotImplemented
	case codeUnavailable:
		return http.StatusServiceUnavailable
	case codeUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// toRPCError classifies an error of the daemon's API (or of this layer)
// as a Connect error; this is the one place sandboxd codes meet Connect's.
func toRPCError(err error) *rpcError {
	var re *rpcError
	if errors.As(err, &re) {
		return re
	}
	var ae *api.Error
	if !errors.As(err, &ae) {
		return &rpcError{Code: codeInternal, Message: err.Error()}
	}
	code := codeInternal
	switch ae.Code {
	case api.CodeFileNotFound, api.CodeSandboxNotFound, api.CodeProcessNotFound, api.CodeSessionNotFound, api.CodeTerminalNotFound:
		code = codeNotFound
	case api.CodeValidationFailed, api.CodeInvalidJSON, api.CodeNotDirectory, api.CodeIsDirectory, api.CodeNameTooLong, api.CodeRequestTooLarge:
		code = codeInvalidArgument
	case api.CodeFileExists, api.CodeProcessExists:
		code = codeAlreadyExists
	case api.CodePermissionDenied:
		code = codePermissionDenied
	case api.CodeResourceExhausted, api.CodeNoSpace, api.CodeCapacityExceeded:
		code = codeResourceExhausted
	case api.CodeSandboxUnavailable, api.CodeSandboxFailed:
		code = codeUnavailable
	case api.CodeCommandTimeout, api.CodeProcessStdinTimeout:
		code = codeDeadlineExceeded
	case api.CodeProcessNotRunning:
		code = codeFailedPrecondition
	case api.CodeUnauthorized:
		code = codeUnauthenticated
	}
	return &rpcError{Code: code, Message: ae.Message}
}

// writeUnaryError answers a unary call with err.
func writeUnaryError(w http.ResponseWriter, err error) {
	re := toRPCError(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatusOf(re.Code))
	_ = json.NewEncoder(w).Encode(re)
}

// writeUnary answers a unary call with msg.
func writeUnary(w http.ResponseWriter, msg any) {
	b, err := json.Marshal(msg)
	if err != nil {
		writeUnaryError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// readUnary decodes the request message of a unary call, read within the
// body timeout.
func (s *Server) readUnary(w http.ResponseWriter, r *http.Request, msg any) error {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		return rpcErrorf(codeInvalidArgument, "unary calls take Content-Type application/json (the Connect JSON codec), not %q", ct)
	}
	b, err := s.readBody(w, r, maxRPCMessage+1)
	if err != nil {
		return s.readError(err, "reading the request")
	}
	return decodeMessage(b, msg)
}

// readBody reads r's body to its end or to limit bytes within the body
// timeout (httpserve.ReadBody): without a bound, a caller holding a key
// could keep any number of connections by sending bodies a byte at a
// time. /files uploads do not come here: their bodies are as long as
// they are.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	return httpserve.ReadBody(w, r, limit, s.bodyTimeout())
}

// readError is the RPC error of a request message that could not be
// read: deadline_exceeded for one that did not arrive in time.
func (s *Server) readError(err error, what string) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return rpcErrorf(codeDeadlineExceeded, "%s: the request message did not arrive within %s", what, s.bodyTimeout())
	}
	return rpcErrorf(codeInvalidArgument, "%s: %v", what, err)
}

func (s *Server) bodyTimeout() time.Duration {
	if s.opts.BodyTimeout > 0 {
		return s.opts.BodyTimeout
	}
	return httpserve.DefaultBodyTimeout
}

func decodeMessage(b []byte, msg any) error {
	if len(b) > maxRPCMessage {
		return rpcErrorf(codeResourceExhausted, "request message over %d bytes", maxRPCMessage)
	}
	if len(b) == 0 {
		return nil // proto3 JSON: an empty message may be sent as nothing
	}
	if err := json.Unmarshal(b, msg); err != nil {
		return rpcErrorf(codeInvalidArgument, "request message is not valid JSON for this method: %v", err)
	}
	return nil
}

// readStreamRequest decodes the one enveloped request message of a
// server-streaming call, read within the body timeout.
func (s *Server) readStreamRequest(w http.ResponseWriter, r *http.Request, msg any) error {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/connect+json" {
		return rpcErrorf(codeInvalidArgument, "streaming calls take Content-Type application/connect+json, not %q", ct)
	}
	rc := http.NewResponseController(w)
	timed := rc.SetReadDeadline(time.Now().Add(s.bodyTimeout())) == nil
	var hdr [5]byte
	if _, err := io.ReadFull(r.Body, hdr[:]); err != nil {
		return s.readError(err, "reading the request envelope")
	}
	if hdr[0]&flagCompress != 0 {
		return rpcErrorf(codeUnimplemented, "compressed request messages are not supported")
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxRPCMessage {
		return rpcErrorf(codeResourceExhausted, "request message of %d bytes; at most %d", n, maxRPCMessage)
	}
	// The length is the client's word: memory grows with the bytes that
	// come, not with what the envelope claims (an 8 MiB buffer per call
	// for a 5-byte header sent by a caller that then stalls).
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(n)))
	if err == nil && len(b) < int(n) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return s.readError(err, "reading the request message")
	}
	if timed {
		rc.SetReadDeadline(time.Time{}) // as in readBody
	}
	return decodeMessage(b, msg)
}

// readStreamCall reads a streaming call's request into msg and returns its
// Connect-Timeout-Ms deadline (0 for none).
func (s *Server) readStreamCall(w http.ResponseWriter, r *http.Request, msg any) (time.Duration, error) {
	if err := s.readStreamRequest(w, r, msg); err != nil {
		return 0, err
	}
	return deadlineOf(r)
}

// deadlineOf reads Connect-Timeout-Ms: 0 when absent.
func deadlineOf(r *http.Request) (time.Duration, error) {
	v := r.Header.Get("Connect-Timeout-Ms")
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 || len(v) > 10 {
		return 0, rpcErrorf(codeInvalidArgument, "Connect-Timeout-Ms %q is not a positive number of at most 10 digits", v)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// streamWriter writes the answer of a server-streaming call. Its methods
// may be called from several goroutines (a keepalive ticker beside the
// pump).
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu    sync.Mutex
	ended bool
}

func newStreamWriter(w http.ResponseWriter) *streamWriter {
	w.Header().Set("Content-Type", "application/connect+json")
	w.WriteHeader(http.StatusOK)
	return &streamWriter{w: w, rc: http.NewResponseController(w)}
}

func (s *streamWriter) envelope(flag byte, msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.write(flag, b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// write writes one envelope, unflushed; the caller holds mu.
func (s *streamWriter) write(flag byte, b []byte) error {
	if s.ended {
		return io.ErrClosedPipe
	}
	if flag == flagEndStream {
		s.ended = true
	}
	var hdr [5]byte
	hdr[0] = flag
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(b)))
	if _, err := s.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := s.w.Write(b)
	return err
}

// send writes one response message.
func (s *streamWriter) send(msg any) error { return s.envelope(0, msg) }

// end writes the end-of-stream message: success when err is nil.
func (s *streamWriter) end(err error) {
	if err == nil {
		_ = s.envelope(flagEndStream, struct{}{})
		return
	}
	_ = s.envelope(flagEndStream, struct {
		Error *rpcError `json:"error"`
	}{toRPCError(err)})
}

// finish writes a last message and the successful end of the stream
// without flushing them, for a handler that returns right after: net/http
// then sends both with the response's end in one write, and the SDK
// reads one chunk where it read three (each a turn of its web streams).
func (s *streamWriter) finish(last any) {
	b, err := json.Marshal(last)
	if err != nil {
		s.end(err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.write(0, b) == nil {
		_ = s.write(flagEndStream, []byte("{}"))
	}
}

// close ends the writer as its handler returns: a write from another
// goroutine after it (a timer's end of a watch at its deadline) writes
// nothing, and one in progress ends before close returns, so that nothing
// touches the ResponseWriter after ServeHTTP returned.
func (s *streamWriter) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
}

// writeStreamError answers a streaming call that fails before it starts:
// the error goes in the end-of-stream message, the only place the SDK
// reads it from.
func writeStreamError(w http.ResponseWriter, err error) {
	newStreamWriter(w).end(err)
}
