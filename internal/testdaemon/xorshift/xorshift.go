// Package xorshift is the byte stream that testsrv's /big sends, for the
// tests that download it to check what they got byte for byte: the same
// bytes every time, incompressible, and without a short period in which a
// repeated or lost segment of a download could hide. It is for tests only.
package xorshift

// Stream is the bytes of Marsaglia's xorshift32 from the state 1, one
// byte (the low one) per step.
type Stream struct{ x uint32 }

// New returns the stream at its start.
func New() *Stream { return &Stream{x: 1} }

// Read fills p with the stream's next bytes. It never fails and never
// ends.
func (s *Stream) Read(p []byte) (int, error) {
	x := s.x
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	s.x = x
	return len(p), nil
}
