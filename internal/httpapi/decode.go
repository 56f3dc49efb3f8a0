package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/sandboxd/sandboxd/api"
)

// maxJSONBody bounds the JSON bodies the daemon itself decodes.
const maxJSONBody = 1 << 20

// decodeJSON reads one JSON value of at most limit bytes into v. An empty
// body decodes as {} when allowEmpty. Unknown fields are refused, so a
// misspelt option is an error rather than silently ignored.
func decodeJSON(r *http.Request, v any, limit int64, allowEmpty bool) *api.Error {
	body := http.MaxBytesReader(nil, r.Body, limit)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return api.Errorf(api.CodeRequestTooLarge, "request body is larger than %d bytes", limit)
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
