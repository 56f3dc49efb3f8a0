package interp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// maxFrame bounds one frame from a driver. The drivers cut every
// representation at 16 MiB, so a larger frame means the protocol is broken
// (or user code wrote to the driver's pipe) and the interpreter is killed.
const maxFrame = 64 << 20

// frame is one message from a driver. Only the fields of its type are set.
type frame struct {
	Type string `json:"type"`
	// ready
	Version string `json:"version,omitempty"`
	// fatal
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message,omitempty"`
	// result
	Data      map[string]json.RawMessage `json:"data,omitempty"`
	Main      bool                       `json:"main,omitempty"`
	Truncated bool                       `json:"truncated,omitempty"`
	// error
	Name      string   `json:"name,omitempty"`
	Value     string   `json:"value,omitempty"`
	Traceback []string `json:"traceback,omitempty"`
	// done
	ExecutionCount int `json:"executionCount,omitempty"`
}

// request is one message to a driver.
type request struct {
	Type string            `json:"type"`
	Code string            `json:"code,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
}

// encodeRequest frames a request.
func encodeRequest(r request) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...), nil
}

var errFrameTooLarge = errors.New("frame too large")

// frameReader splits a byte stream into frames.
type frameReader struct {
	buf []byte
}

// add appends data and returns every complete frame.
func (fr *frameReader) add(data []byte) ([]frame, error) {
	fr.buf = append(fr.buf, data...)
	var out []frame
	for len(fr.buf) >= 4 {
		n := binary.BigEndian.Uint32(fr.buf)
		if n > maxFrame {
			return out, errFrameTooLarge
		}
		if len(fr.buf) < 4+int(n) {
			break
		}
		var f frame
		if err := json.Unmarshal(fr.buf[4:4+n], &f); err != nil {
			return out, fmt.Errorf("decoding frame: %w", err)
		}
		out = append(out, f)
		fr.buf = fr.buf[4+n:]
	}
	if len(fr.buf) == 0 {
		fr.buf = nil // drop a large consumed buffer
	}
	return out, nil
}

// result converts a result frame. JSON values stay raw JSON; everything
// else must be a string.
func (f *frame) result() Result {
	r := Result{Data: make(map[string]string, len(f.Data)), Main: f.Main, Truncated: f.Truncated}
	for mime, raw := range f.Data {
		if mime == "application/json" {
			r.Data[mime] = string(raw)
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			r.Data[mime] = s
		}
	}
	return r
}
