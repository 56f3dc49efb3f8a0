package agent

// runeHolder cuts a stream's output into chunks that never end inside a
// UTF-8 character: an incomplete trailing sequence (at most 3 bytes) is
// held back until the next chunk of the same stream, or the end. Streams
// are numbered 1 (stdout) and 2 (stderr), as session.Stream and
// interp.Stream are.
type runeHolder struct {
	held    [3][]byte
	scratch []byte
}

// next returns what of p, after what was held, can be sent now; it may be
// empty. The result is valid until the next call.
func (h *runeHolder) next(stream int, p []byte) []byte {
	data := p
	if held := h.held[stream]; len(held) > 0 {
		h.scratch = append(append(h.scratch[:0], held...), p...)
		data = h.scratch
	}
	cut := len(data) - partialRuneLen(data)
	h.held[stream] = append(h.held[stream][:0], data[cut:]...)
	return data[:cut]
}

// rest returns and forgets what is held back for stream, as it is.
func (h *runeHolder) rest(stream int) []byte {
	p := h.held[stream]
	h.held[stream] = nil
	return p
}
