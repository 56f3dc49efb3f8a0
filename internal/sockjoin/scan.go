package sockjoin

// The scan of a client's buffers. A joined client's bytes are sent on to
// the service only while each buffer the kernel hands the verdict program
// is whole HTTP/1.1 requests that need nothing of the daemon: the program
// runs every byte of the buffer through a byte automaton built here (a
// table of next states in a BPF array map), and a buffer that does not end
// in the automaton's start state (the end of a request), or that passed a
// Host other than the first request's, is kept on the client's socket with
// every later one, for the daemon to read (Pair.Diverted).
//
// A buffer is forwarded only when it is one or more requests, each
// complete and each of this form (anything else is diverted):
//
//   - a request line `METHOD /origin-form-target HTTP/1.1`: a method of
//     token characters, a target of visible ASCII that starts with '/'
//     (no absolute URL, which names a host of its own), and a query with
//     no '%' and no "sandboxd" in any case (the signed-link parameter,
//     also percent-encoded, is the daemon's);
//   - header lines `name: value` ending in CRLF (a bare CR or LF, a line
//     folded onto the next, a name with anything but token characters, a
//     control character in a value: diverted), exactly one of them Host,
//     whose value is byte for byte the first request's (its hash:
//     hostHash);
//   - none of the headers the ordinary path rewrites, strips or reads:
//     Authorization (the API token or a tenant's key), Proxy-*,
//     X-Forwarded*, Forwarded, a Cookie whose value holds "sandboxd" (the
//     preview cookie), and none that give a request a body or turn the
//     connection into another protocol (Content-Length,
//     Transfer-Encoding, Upgrade), so that a request's end is the blank
//     line and the next byte starts the next request. Names match in any
//     case, with '_' for '-' (as CGI-style servers read them).
//
// The automaton has no memory across buffers: a request split across two
// buffers leaves the first in the middle of a request, which diverts it,
// so a header cannot be split to pass the scan.

// Entries of the table: the next state in the low bits, and flags that
// feed the Host check.
const (
	// flagHostByte: the byte is part of a Host value (h = h*K + byte).
	flagHostByte = 1 << 15
	// flagHostEnd: a Host value ended (mismatch |= h ^ want; h = 0).
	flagHostEnd = 1 << 14
	stateMask   = 0x1ff
	maxStates   = stateMask + 1
	// tableSize is the table's entries: a state and a byte.
	tableSize = maxStates * 256
)

// The automaton's fixed states.
const (
	stDivert = 0 // absorbing: the buffer goes to the daemon
	stStart  = 1 // the start of a request, and a complete buffer's end
)

// maxScan bounds the buffers the program scans: a longer one goes to the
// daemon. The verifier walks the scan loop once per byte.
const maxScan = 4096

type automaton struct {
	n     int
	table []uint16
}

func (a *automaton) state() int {
	if a.n == maxStates {
		panic("sockjoin: too many scan states")
	}
	a.n++
	return a.n - 1
}

func (a *automaton) set(from int, c byte, to int, flags uint16) {
	a.table[from<<8|int(c)] = uint16(to) | flags
}

// each calls f for every byte in the set.
func each(set func(byte) bool, f func(c byte)) {
	for c := 0; c < 256; c++ {
		if set(byte(c)) {
			f(byte(c))
		}
	}
}

func isToken(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func isVisible(c byte) bool { return 0x21 <= c && c <= 0x7e }

// isValueByte reports whether c may be in a header value.
func isValueByte(c byte) bool { return c == '\t' || 0x20 <= c && c <= 0x7e || c >= 0x80 }

// spellings are the bytes that match c of a lower-case name: its cases,
// and '_' for '-'.
func spellings(c byte) []byte {
	switch {
	case 'a' <= c && c <= 'z':
		return []byte{c, c - 'a' + 'A'}
	case c == '-':
		return []byte{'-', '_'}
	}
	return []byte{c}
}

// substring builds states states[0..len(pat)-1] that track how much of
// pat (lower case, no letter repeating its first) the bytes of set have
// just spelt; spelling all of it diverts.
func (a *automaton) substring(states []int, pat string, set func(byte) bool) {
	for k, s := range states {
		each(set, func(c byte) {
			next := states[0]
			for _, sp := range spellings(pat[0]) {
				if c == sp {
					next = states[1]
				}
			}
			for _, sp := range spellings(pat[k]) {
				if c == sp {
					if k+1 == len(pat) {
						next = stDivert
					} else {
						next = states[k+1]
					}
				}
			}
			a.set(s, c, next, 0)
		})
	}
}

type nameAction int

const (
	actDivert nameAction = iota
	actHost
	actCookie
)

// sensitive are the header names the scan acts on (lower case); a prefix
// diverts any name that starts with it.
var sensitive = []struct {
	name   string
	act    nameAction
	prefix bool
}{
	{"authorization", actDivert, false},
	{"proxy-", actDivert, true},
	{"x-forwarded", actDivert, true},
	{"forwarded", actDivert, false},
	{"content-length", actDivert, false},
	{"transfer-encoding", actDivert, false},
	{"upgrade", actDivert, false},
	{"host", actHost, false},
	{"cookie", actCookie, false},
}

// buildScan returns the automaton's table.
func buildScan() []uint16 {
	a := &automaton{table: make([]uint16, tableSize)}
	if a.state() != stDivert || a.state() != stStart {
		panic("sockjoin: scan states out of order")
	}
	method, target, path := a.state(), a.state(), a.state()
	query := make([]int, len("sandboxd"))
	for i := range query {
		query[i] = a.state()
	}
	const version = "HTTP/1.1"
	ver := make([]int, len(version)+1)
	for i := range ver {
		ver[i] = a.state()
	}
	lineCR := a.state()

	each(isToken, func(c byte) { a.set(stStart, c, method, 0); a.set(method, c, method, 0) })
	a.set(method, ' ', target, 0)
	a.set(target, '/', path, 0)
	each(isVisible, func(c byte) { a.set(path, c, path, 0) })
	a.set(path, '?', query[0], 0)
	a.set(path, ' ', ver[0], 0)
	a.substring(query, "sandboxd", isVisible)
	for _, q := range query {
		a.set(q, '%', stDivert, 0)
		a.set(q, ' ', ver[0], 0)
	}
	for i := range len(version) {
		a.set(ver[i], version[i], ver[i+1], 0)
	}
	a.set(ver[len(version)], '\r', lineCR, 0)

	// The header section, twice: before and after its Host line.
	var lines [2]int
	hostOWS, hostValue := a.state(), a.state()
	var hostCR int
	for seen := 1; seen >= 0; seen-- {
		line, endCR, name, value, cr := a.state(), a.state(), a.state(), a.state(), a.state()
		lines[seen] = line
		if seen == 1 {
			hostCR = cr
		}
		cookie := make([]int, len("sandboxd"))
		for i := range cookie {
			cookie[i] = a.state()
		}
		a.set(line, '\r', endCR, 0)
		if seen == 1 {
			a.set(endCR, '\n', stStart, 0)
		}
		each(isToken, func(c byte) { a.set(line, c, name, 0); a.set(name, c, name, 0) })
		a.set(name, ':', value, 0)
		each(isValueByte, func(c byte) { a.set(value, c, value, 0) })
		a.set(value, '\r', cr, 0)
		a.set(cr, '\n', line, 0)
		a.substring(cookie, "sandboxd", isValueByte)
		for _, s := range cookie {
			a.set(s, '\r', cr, 0)
		}
		// The trie of sensitive names, from the line's start.
		type edge struct {
			from int
			c    byte
		}
		children := map[edge]int{}
		for _, sn := range sensitive {
			node := line
			for i := 0; i < len(sn.name); i++ {
				c := sn.name[i]
				if sn.prefix && i == len(sn.name)-1 {
					for _, sp := range spellings(c) {
						a.set(node, sp, stDivert, 0)
					}
					break
				}
				next, ok := children[edge{node, c}]
				if !ok {
					next = a.state()
					children[edge{node, c}] = next
					// A name that leaves the trie is another name.
					each(isToken, func(c byte) { a.set(next, c, name, 0) })
					a.set(next, ':', value, 0)
				}
				for _, sp := range spellings(c) {
					a.set(node, sp, next, 0)
				}
				node = next
			}
			if sn.prefix {
				continue
			}
			switch {
			case sn.act == actDivert:
				a.set(node, ':', stDivert, 0)
			case sn.act == actHost && seen == 0:
				a.set(node, ':', hostOWS, 0)
			case sn.act == actHost:
				a.set(node, ':', stDivert, 0) // a second Host
			case sn.act == actCookie:
				a.set(node, ':', cookie[0], 0)
			}
		}
	}
	a.set(lineCR, '\n', lines[0], 0)
	a.set(hostOWS, ' ', hostOWS, 0)
	a.set(hostOWS, '\t', hostOWS, 0)
	each(isVisible, func(c byte) {
		a.set(hostOWS, c, hostValue, flagHostByte)
		a.set(hostValue, c, hostValue, flagHostByte)
	})
	a.set(hostValue, '\r', hostCR, flagHostEnd)
	return a.table
}

// hostHash is the hash the program computes of a Host value, with
// multiplier k (sign-extended, as the program's immediate is).
func hostHash(k int32, host string) uint64 {
	var h uint64
	for i := 0; i < len(host); i++ {
		h = h*uint64(int64(k)) + uint64(host[i])
	}
	return h
}

// scan runs the automaton over buf as the program does: whether the
// program would send buf on (for tests of the table without a kernel).
func scan(table []uint16, k int32, want uint64, buf []byte) bool {
	if len(buf) == 0 {
		return true
	}
	if len(buf) > maxScan {
		return false
	}
	state, h, bad := uint64(stStart), uint64(0), uint64(0)
	for _, c := range buf {
		e := uint64(table[(state<<8|uint64(c))&(tableSize-1)])
		if e&flagHostByte != 0 {
			h = h*uint64(int64(k)) + uint64(c)
		}
		if e&flagHostEnd != 0 {
			bad |= h ^ want
			h = 0
		}
		state = e & stateMask
	}
	return state == stStart && bad == 0
}
