package agent

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/process"
)

// writeLogs answers GET .../logs as api.ProcessLogs, streaming each log
// from disk in chunks: a log is up to api.MaxLogBytes per stream, and the
// agent's memory is a few tens of MiB when user code takes the rest.
//
// Both streams are read twice: once to tell whether they are valid UTF-8
// (then they are JSON strings) or not (then both are base64), once to
// write them.
func (s *server) writeLogs(w http.ResponseWriter, p *process.Proc) {
	valid := true
	for _, st := range []process.Stream{process.Stdout, process.Stderr} {
		ok, err := scanLog(p, st, newUTF8Check().write)
		if err != nil {
			s.log.Error("reading process logs", "process", p.ID(), "err", err)
			writeError(w, api.Errorf(api.CodeInternal, "internal error in the sandbox agent"))
			return
		}
		valid = valid && ok
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	defer bw.Flush()
	id, _ := json.Marshal(p.ID())
	bw.WriteString(`{"id":` + string(id))
	for _, st := range []process.Stream{process.Stdout, process.Stderr} {
		bw.WriteString(`,"` + st.String() + `":"`)
		if valid {
			// One scratch buffer, reused: a log is read in hundreds of
			// chunks, and garbage is memory the agent may not have.
			var scratch []byte
			held := 0
			scanLog(p, st, func(chunk []byte) bool {
				scratch = append(scratch[:held], chunk...)
				cut := len(scratch) - partialRuneLen(scratch)
				writeJSONStringBody(bw, scratch[:cut])
				held = copy(scratch, scratch[cut:])
				return true
			})
			writeJSONStringBody(bw, scratch[:held])
		} else {
			enc := base64.NewEncoder(base64.StdEncoding, bw)
			scanLog(p, st, func(chunk []byte) bool { enc.Write(chunk); return true })
			enc.Close()
		}
		bw.WriteString(`"`)
	}
	if !valid {
		bw.WriteString(`,"encoding":"base64"`)
	}
	if p.Info().Truncated {
		bw.WriteString(`,"truncated":true`)
	}
	bw.WriteString("}\n")
}

// scanLog passes the stored log of one stream to f chunk by chunk, and
// reports whether f returned true for every chunk.
func scanLog(p *process.Proc, st process.Stream, f func([]byte) bool) (bool, error) {
	r, err := p.LogReader(st)
	if err != nil {
		return false, err
	}
	defer r.Close()
	buf := make([]byte, 32<<10)
	ok := true
	for {
		n, err := r.Read(buf)
		if n > 0 && ok {
			ok = f(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			return ok, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// utf8Check validates UTF-8 across chunk boundaries, with one reused
// buffer.
type utf8Check struct {
	scratch []byte
	held    int
}

func newUTF8Check() *utf8Check { return &utf8Check{} }

func (c *utf8Check) write(chunk []byte) bool {
	c.scratch = append(c.scratch[:c.held], chunk...)
	cut := len(c.scratch) - partialRuneLen(c.scratch)
	if !utf8.Valid(c.scratch[:cut]) {
		return false
	}
	c.held = copy(c.scratch, c.scratch[cut:])
	return true
}

const hexDigits = "0123456789abcdef"

// writeJSONStringBody writes s, valid UTF-8, escaped as the inside of a
// JSON string, without allocating.
func writeJSONStringBody(w *bufio.Writer, s []byte) {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		w.Write(s[start:i])
		switch c {
		case '"', '\\':
			w.WriteByte('\\')
			w.WriteByte(c)
		case '\n':
			w.WriteString(`\n`)
		case '\r':
			w.WriteString(`\r`)
		case '\t':
			w.WriteString(`\t`)
		default:
			w.WriteString(`\u00`)
			w.WriteByte(hexDigits[c>>4])
			w.WriteByte(hexDigits[c&0xf])
		}
		start = i + 1
	}
	w.Write(s[start:])
}
