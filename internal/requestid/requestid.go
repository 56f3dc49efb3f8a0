// Package requestid gives every API request an ID, returned to the caller in
// the X-Request-Id header, passed on to the sandbox's agent in the same
// header, and added to every log line written with the request's context,
// by the daemon and by the agent alike. A caller's own ID is kept when it is
// well formed, so a client can follow its request through both logs.
//
// It imports only the standard library: the agent links it.
package requestid

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
)

// Header carries the ID in requests and responses.
const Header = "X-Request-Id"

// MaxLen bounds a caller's ID.
const MaxLen = 128

// LogKey is the attribute log lines carry the ID in.
const LogKey = "request_id"

type ctxKey struct{}

// New returns a fresh random ID (16 hex digits). An ID only tells
// requests apart in the logs; it guards nothing. It comes from the Go
// runtime's generator (ChaCha8, seeded by the system at start), which
// makes no system call: crypto/rand makes one per ID where the kernel
// has no vDSO getrandom, as in gVisor, and that call through
// syscall.Syscall wakes the runtime's monitor thread, which then polls
// every 20 us while the agent works (see internal/agent's rawConn): on
// every call sent to a gVisor agent without an ID (its health, the
// daemon's own calls).
func New() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// Valid says whether a caller's ID may be used as given: 1 to MaxLen
// characters from letters, digits and "-_.:", so it cannot forge a log line
// or a header.
func Valid(id string) bool {
	if id == "" || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// From returns the ID ctx carries, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// Middleware gives each request an ID (the caller's if Valid, else a new
// one), sets it on the request's header (so a proxied request passes it on),
// on the response's header and in the request's context.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(Header)
		if !Valid(id) {
			id = New()
		}
		r.Header.Set(Header, id)
		w.Header().Set(Header, id)
		next.ServeHTTP(w, r.WithContext(With(r.Context(), id)))
	})
}

// Handler wraps a log handler so that every record logged with a context
// that carries an ID gets a request_id attribute.
func Handler(h slog.Handler) slog.Handler { return handler{h} }

type handler struct{ slog.Handler }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if id := From(ctx); id != "" {
		r.AddAttrs(slog.String(LogKey, id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return handler{h.Handler.WithAttrs(attrs)}
}

func (h handler) WithGroup(name string) slog.Handler { return handler{h.Handler.WithGroup(name)} }
