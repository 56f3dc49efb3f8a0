// Package transpile is the protocol between the agent's code interpreter
// and its TypeScript helper (`sandbox-transpile`, package helper): a
// request is the code of one cell and its language, a reply the
// JavaScript to run or the syntax error to report. Both travel as frames,
// a 4-byte big-endian length and then JSON, on the helper's stdin and
// stdout, one request at a time.
//
// Why a helper and not a library: esbuild, the transpiler, is 4 MB of the
// agent's binary and about a millisecond of package initialisers and
// 120 KB of heap at every agent start, paid by every sandbox's cold start
// for the few that ever run a TypeScript cell. The helper starts on the
// first cell that needs it instead.
//
// This package must never import esbuild (the agent imports it); package
// helper does.
package transpile

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Arg is the helper's sub-command: `sandbox-transpile serve` reads
// requests on stdin and writes replies on stdout until stdin ends.
const Arg = "serve"

// MaxFrame bounds a frame either way: a cell's code is at most 1 MiB
// (api.MaxCodeBytes), JSON-escaped at most six times as long, and its
// JavaScript about as long again.
const MaxFrame = 8 << 20

// Language is what a cell is written in.
type Language string

const (
	TypeScript Language = "typescript"
	JavaScript Language = "javascript"
)

// Request is one cell to transpile.
type Request struct {
	Language Language `json:"language"`
	Code     string   `json:"code"`
}

// Reply is a transpiled cell: Code, or Error for code that does not parse.
type Reply struct {
	Code  string       `json:"code"`
	Error *SyntaxError `json:"error,omitempty"`
}

// SyntaxError is code that did not parse, as the interpreter reports an
// error raised by user code.
type SyntaxError struct {
	Name      string   `json:"name"`
	Value     string   `json:"value"`
	Traceback []string `json:"traceback"`
}

// ErrFrameTooLarge is a frame over MaxFrame.
var ErrFrameTooLarge = errors.New("transpile: frame too large")

// WriteFrame writes v as one frame.
func WriteFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > MaxFrame {
		return ErrFrameTooLarge
	}
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	_, err = w.Write(append(out, body...))
	return err
}

// ReadFrame reads one frame into v. io.EOF: the stream ended between
// frames.
func ReadFrame(r io.Reader, v any) error {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > MaxFrame {
		return ErrFrameTooLarge
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("transpile: reading a frame: %w", err)
	}
	return json.Unmarshal(body, v)
}

// HasModuleSyntax reports whether a line starts with import or export: a
// cheap test that may be wrong (a line of a template literal, say), which
// only costs a second transform. The agent sends the helper only
// JavaScript for which it is true.
func HasModuleSyntax(code string) bool {
	for line := range strings.Lines(code) {
		t := strings.TrimLeft(line, " \t")
		if strings.HasPrefix(t, "import ") || strings.HasPrefix(t, "import{") || strings.HasPrefix(t, "export ") {
			return true
		}
	}
	return false
}
