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
	"github.com/sandboxd/sandboxd/internal/httpserve"
)

// maxJSONBody bounds the JSON bodies the daemon itself decodes.
const maxJSONBody = 1 << 20

// DefaultBodyTimeout bounds the time to read a body the daemon reads
// whole (JSON), when Options.BodyTimeout is zero.
const DefaultBodyTimeout = httpserve.DefaultBodyTimeout

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

// readBody reads r's body up to limit bytes, within the body timeout
// (httpserve.ReadBody).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	return httpserve.ReadBody(w, r, limit, s.bodyTimeout())
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
