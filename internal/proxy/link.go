package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Names of the preview credential in a link's query and in the cookie the
// link sets.
const (
	LinkParam  = "sandboxd_link"
	CookieName = "sandboxd_preview"
)

// maxCredential bounds a credential read from a request.
const maxCredential = 128

// Signer makes and checks the credentials of signed preview links: a
// credential names its expiry and carries an HMAC-SHA256 over the sandbox
// ID, the port, the port's current token and the expiry. Unexposing a port
// (which changes its token when it is exposed again) therefore voids every
// link to it, as does destroying the sandbox. The key is the daemon's and
// survives restarts, so links do too.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer with key (at least 32 random bytes).
func NewSigner(key []byte) *Signer { return &Signer{key: append([]byte(nil), key...)} }

// Sign returns a credential for a, valid until expires (whole seconds).
func (s *Signer) Sign(a Address, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return "v1." + exp + "." + base64.RawURLEncoding.EncodeToString(s.mac(a, exp))
}

// Verify reports whether cred is a credential for a that has not expired
// at now, and returns its expiry.
func (s *Signer) Verify(cred string, a Address, now time.Time) (time.Time, bool) {
	if len(cred) > maxCredential {
		return time.Time{}, false
	}
	rest, ok := strings.CutPrefix(cred, "v1.")
	if !ok {
		return time.Time{}, false
	}
	exp, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return time.Time{}, false
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || unix <= 0 || strconv.FormatInt(unix, 10) != exp {
		return time.Time{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(a, exp)) {
		return time.Time{}, false
	}
	expires := time.Unix(unix, 0)
	if !now.Before(expires) {
		return time.Time{}, false
	}
	return expires, true
}

func (s *Signer) mac(a Address, exp string) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte("sandboxd preview link\x00" + a.SandboxID + "\x00" + strconv.Itoa(a.Port) + "\x00" + a.Token + "\x00" + exp))
	return h.Sum(nil)
}
