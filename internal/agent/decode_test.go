package agent

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// FuzzDecodeExec feeds arbitrary bodies to the exec decoder and checks that
// it either refuses them with a 4xx request code or returns a command that
// keeps every invariant the session layer relies on.
func FuzzDecodeExec(f *testing.F) {
	for _, seed := range []string{
		`{"command":"echo hi"}`,
		`{"command":"cat","stdin":"aGk=","stdinEncoding":"base64","timeout":1000}`,
		`{"command":"env","env":{"A":"1","B_2":"x'y"},"cwd":"/tmp","sessionId":"default"}`,
		`{"command":"x","env":{"A;B":"1"}}`,
		`{"command":"x\u0000"}`,
		`{"command":"x","timeout":-5}`,
		`{"command":"x","stdinEncoding":"utf-16"}`,
		`{"command":"x"} trailing`,
		`{"command":"x","timout":5}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		call, aerr := decodeExec(bytes.NewReader(body))
		if aerr != nil {
			if aerr.Code != api.CodeInvalidJSON && aerr.Code != api.CodeValidationFailed {
				t.Fatalf("code %s for a bad body", aerr.Code)
			}
			if aerr.Code.HTTPStatus() != 400 || aerr.Message == "" {
				t.Fatalf("error %+v", aerr)
			}
			return
		}
		cmd := call.cmd
		switch {
		case !session.ValidID(call.sessionID):
			t.Fatalf("session ID %q passed", call.sessionID)
		case strings.TrimSpace(cmd.Text) == "" || strings.IndexByte(cmd.Text, 0) >= 0 || len(cmd.Text) > api.MaxCommandBytes:
			t.Fatalf("command %q passed", cmd.Text)
		case len(cmd.Env) > api.MaxEnvVars:
			t.Fatalf("%d env vars passed", len(cmd.Env))
		case cmd.Timeout < 0 || cmd.Timeout > api.MaxTimeout:
			t.Fatalf("timeout %s passed", cmd.Timeout)
		case len(cmd.Stdin) > api.MaxStdinBytes:
			t.Fatalf("%d bytes of stdin passed", len(cmd.Stdin))
		case strings.IndexByte(cmd.Cwd, 0) >= 0:
			t.Fatalf("cwd %q passed", cmd.Cwd)
		case cmd.Timeout%time.Millisecond != 0:
			t.Fatalf("timeout %s is not whole milliseconds", cmd.Timeout)
		}
		for k, v := range cmd.Env {
			if !session.ValidEnvName(k) || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("env %q=%q passed", k, v)
			}
		}
	})
}

// TestDecodeExecRefusesUnknownFields: a misspelt option is an error, not a
// command run without it (docs/api.md: unknown fields are refused).
func TestDecodeExecRefusesUnknownFields(t *testing.T) {
	for _, body := range []string{
		`{"command":"sleep 100","timout":1000}`,
		`{"command":"id","user":"root"}`,
		`{"command":"id","env":{"A":"1"},"workdir":"/tmp"}`,
	} {
		_, aerr := decodeExec(strings.NewReader(body))
		if aerr == nil || aerr.Code != api.CodeValidationFailed || !strings.Contains(aerr.Message, "unknown field") {
			t.Errorf("%s: %v, want VALIDATION_FAILED naming the unknown field", body, aerr)
		}
	}
	if _, aerr := decodeExec(strings.NewReader(`{"command":"id","sessionId":"default","timeout":5}`)); aerr != nil {
		t.Errorf("known fields refused: %v", aerr)
	}
}

func TestPartialRuneLen(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 0},
		{"a\xe2", 1},
		{"a\xe2\x82", 2},
		{"a\xe2\x82\xac", 0},
		{"\xf0\x9f\x98", 3},
		{"\xf0\x9f\x98\x80", 0},
		{"a\x82", 0},  // stray continuation byte: invalid, not partial
		{"a\xe2A", 0}, // broken sequence: invalid, not partial
		{"\xff", 0},   // never valid
		{"\x82\x82\x82\x82", 0},
	}
	for _, tt := range tests {
		if got := partialRuneLen([]byte(tt.in)); got != tt.want {
			t.Errorf("partialRuneLen(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestBufferedEncoding(t *testing.T) {
	tests := []struct {
		name           string
		stdout, stderr string
		limit          int
		wantOut        string
		wantEnc        string
	}{
		{"text", "héllo", "", 100, "héllo", api.EncodingUTF8},
		{"binary stderr makes both base64", "ok", "\xff", 100, "b2s=", api.EncodingBase64},
		{"cut inside a character stays text", "ab€", "", 4, "ab", api.EncodingUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &bufferedOutput{limit: tt.limit}
			b.Write(session.Stdout, []byte(tt.stdout))
			b.Write(session.Stderr, []byte(tt.stderr))
			out, _, enc := b.encode()
			if out != tt.wantOut || enc != tt.wantEnc {
				t.Errorf("encode = %q %q, want %q %q", out, enc, tt.wantOut, tt.wantEnc)
			}
		})
	}
}
