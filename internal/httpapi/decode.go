package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// maxJSONBody bounds the JSON bodies the daemon itself decodes.
const maxJSONBody = 1 << 20

// DefaultBodyTimeout bounds the time to read a body the daemon reads
// whole (JSON), when Options.BodyTimeout is zero.
const DefaultBodyTimeout = 60 * time.Second

// decodeJSON reads one JSON value of at most limit bytes into v, within
// the body timeout. An empty body decodes as {} when allowEmpty. Unknown
// fields are refused, so a misspelt option is an error rather than
// silently ignored.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64, allowEmpty bool) *api.Error {
	data, err := s.readBody(w, r, limit+1)
	if int64(len(data)) > limit {
		return api.Errorf(api.CodeRequestTooLarge, "request body is larger than %d bytes", limit)
	}
	if err != nil {
		if e := bodyTimeoutError(err, s.bodyTimeout()); e != nil {
			return e
		}
		return api.Errorf(api.CodeInvalidJSON, "reading request body: %v", err)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		if allowEmpty {
			return nil
		}
		return api.Errorf(api.CodeInvalidJSON, "request body is empty; a JSON object is required")
	}
	return unmarshalStrict(data, v)
}

// readBody reads r's body up to limit bytes, within the body timeout. Without a bound, a client holding a token could keep any
// number of connections, each with its goroutine and buffers, by sending
// its body a byte at a time. Streaming routes (raw files, archives, image
// uploads, previews) do not come here: their bodies are as long as they
// are.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(s.bodyTimeout())) != nil {
		return readAll(r.Body, limit, r.ContentLength) // not a network connection
	}
	data, err := readAll(r.Body, limit, r.ContentLength)
	if err == nil && int64(len(data)) < limit {
		// The whole body is read: lift the deadline, because the server
		// reads the same connection in the background while the handler
		// works (to see a client leave), and a deadline passing then would
		// cancel the call. Otherwise it stays: after an answer to a body
		// that was too slow or too large, the server would read the rest
		// of it (to reuse the connection) at the client's pace.
		rc.SetReadDeadline(time.Time{})
	}
	return data, err
}

// readAll reads body to its end or to limit bytes, into a slice made for
// size bytes when size (a Content-Length) is known and under limit: an
// exec's body is under 100 bytes, and io.ReadAll starts with 512
// (bench/results/scale.txt).
func readAll(body io.Reader, limit, size int64) ([]byte, error) {
	if size <= 0 || size >= limit {
		return io.ReadAll(io.LimitReader(body, limit))
	}
	data := make([]byte, 0, size+1) // +1: room to read the end
	for {
		n, err := body.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if errors.Is(err, io.EOF) {
			return data, nil
		}
		if err != nil {
			return data, err
		}
		if len(data) == cap(data) {
			// Longer than said: read on as io.ReadAll would, to limit.
			rest, err := io.ReadAll(io.LimitReader(body, limit-int64(len(data))))
			return append(data, rest...), err
		}
	}
}

// liftBodyDeadline lifts the body timeout, for a body that readBody found
// too large to buffer and that streams on instead.
func liftBodyDeadline(w http.ResponseWriter) {
	http.NewResponseController(w).SetReadDeadline(time.Time{})
}

func (s *Server) bodyTimeout() time.Duration {
	if s.opts.BodyTimeout > 0 {
		return s.opts.BodyTimeout
	}
	return DefaultBodyTimeout
}

// bodyTimeoutError is the answer to a body that did not arrive within
// limit, or nil if err is something else.
func bodyTimeoutError(err error, limit time.Duration) *api.Error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return api.Errorf(api.CodeRequestTimeout, "the request body did not arrive within %s", limit)
}

func unmarshalStrict(data []byte, v any) *api.Error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &syntaxErr):
			return api.Errorf(api.CodeInvalidJSON, "malformed JSON at byte %d: %s", syntaxErr.Offset, syntaxErr.Error())
		case errors.Is(err, io.ErrUnexpectedEOF):
			return api.Errorf(api.CodeInvalidJSON, "malformed JSON: unexpected end of input")
		case errors.As(err, &typeErr):
			return api.Errorf(api.CodeValidationFailed, "field %q: expected %s", typeErr.Field, typeErr.Type)
		}
		// What is left are well-formed values of the wrong shape, such as
		// an unknown field (encoding/json has no typed error for that).
		return api.Errorf(api.CodeValidationFailed, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return api.Errorf(api.CodeInvalidJSON, "request body has data after the JSON value")
	}
	return nil
}
