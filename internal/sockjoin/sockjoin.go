package sockjoin

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Joiner holds the map of joined sockets and the program that forwards
// their bytes.
type Joiner struct {
	// socks is the SOCKHASH of joined sockets, keyed by socket cookie.
	socks *ebpf.Map
	// peers maps a joined socket's cookie to its peer value.
	peers *ebpf.Map
	// table is the scan's automaton (scan.go).
	table *ebpf.Map
	// events carries the cookies of clients whose bytes the program
	// started to keep (Pair.Diverted).
	events *ebpf.Map
	prog   *ebpf.Program
	reader *ringbuf.Reader
	// k is the multiplier of the Host hash, chosen at random per Joiner.
	k int32

	// mu guards closed; map operations hold it for reading, so that none
	// uses a map Close closed.
	mu     sync.RWMutex
	closed bool
}

var errClosed = errors.New("sockjoin: the joiner is closed")

// A peer value (the peers map's value) as the program sees it.
const (
	peerCookie     = 0  // the peer's socket cookie
	peerWant       = 8  // a client's: the hash of its first request's Host
	peerRedirected = 16 // a client's: bytes the program sent on to the peer
	peerFlags      = 24
	peerSize       = 32
)

// Peer flags.
const (
	flagScan     = 1 // a client: scan its buffers
	flagDiverted = 2 // a client whose buffers stay with it
)

// New loads the program and its maps for at most maxPairs joined pairs.
func New(maxPairs int) (*Joiner, error) {
	if maxPairs < 1 {
		return nil, fmt.Errorf("sockjoin: maxPairs %d", maxPairs)
	}
	j := &Joiner{}
	if err := j.load(maxPairs); err != nil {
		j.closeAll()
		return nil, err
	}
	return j, nil
}

func (j *Joiner) load(maxPairs int) error {
	var err error
	j.socks, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "sandboxd_socks", Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: uint32(2 * maxPairs),
	})
	if err != nil {
		return fmt.Errorf("creating the socket map: %w", err)
	}
	j.peers, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "sandboxd_peers", Type: ebpf.Hash, KeySize: 8, ValueSize: peerSize, MaxEntries: uint32(2 * maxPairs),
	})
	if err != nil {
		return fmt.Errorf("creating the peer map: %w", err)
	}
	j.table, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "sandboxd_scan", Type: ebpf.Array, KeySize: 4, ValueSize: 2 * tableSize, MaxEntries: 1,
	})
	if err != nil {
		return fmt.Errorf("creating the scan map: %w", err)
	}
	table := buildScan()
	raw := make([]byte, 2*len(table))
	for i, e := range table {
		binary.NativeEndian.PutUint16(raw[2*i:], e)
	}
	if err := j.table.Update(uint32(0), raw, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("filling the scan map: %w", err)
	}
	j.events, err = ebpf.NewMap(&ebpf.MapSpec{Name: "sandboxd_divert", Type: ebpf.RingBuf, MaxEntries: 64 << 10})
	if err != nil {
		return fmt.Errorf("creating the ring buffer: %w", err)
	}
	var kb [4]byte
	rand.Read(kb[:])
	j.k = int32(binary.LittleEndian.Uint32(kb[:]) | 1)
	j.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "sandboxd_join", Type: ebpf.SkSKB, AttachType: ebpf.AttachSkSKBVerdict,
		License: "GPL", Instructions: program(j.socks.FD(), j.peers.FD(), j.table.FD(), j.events.FD(), j.k),
	})
	if err != nil {
		return fmt.Errorf("loading the join program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: j.socks.FD(), Program: j.prog, Attach: ebpf.AttachSkSKBVerdict,
	}); err != nil {
		return fmt.Errorf("attaching the join program: %w", err)
	}
	j.reader, err = ringbuf.NewReader(j.events)
	if err != nil {
		return fmt.Errorf("reading the ring buffer: %w", err)
	}
	return nil
}

// program is the verdict program run on every buffer a joined socket
// receives. It looks up the socket's peer value by the socket's cookie: a
// socket without one keeps its bytes (SK_PASS), for its owner to read; a
// service's buffers are redirected to its client's egress; a client's
// buffers are scanned (scan.go) and redirected to its service's egress
// while they pass, and from the first that does not, kept on the client's
// socket (flagDiverted) and the client's cookie sent to the daemon
// through the ring buffer. An empty buffer, a stream's end, is dropped:
// the socket's receive side is shut already.
func program(socks, peers, table, events int, k int32) asm.Instructions {
	const (
		skDrop      = 0
		skPass      = 1
		ctxLen      = 0  // __sk_buff.len
		ctxData     = 76 // __sk_buff.data
		ctxDataEnd  = 80 // __sk_buff.data_end
		fpCookie    = -8
		fpKey       = -16
		fpSkb       = -24
		fpPeer      = -32
		fpWant      = -40
		indexMask   = tableSize - 1
		stateStart  = stStart
		hostByteBit = 15
		hostEndBit  = 14
	)
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// An empty buffer is an end of stream (a FIN). The TCP stack has
		// marked the socket's receive side shut already, which is all its
		// owner needs to see the end and pass it on: the buffer itself is
		// dropped. Redirected, it reached the peer's egress as a send of
		// no bytes, which the kernel takes for a broken pipe: the peer got
		// EPIPE (EPOLLERR), and the proxy took a stream's end for a
		// failure. Passed, it waits in the socket's queue behind bytes
		// redirected to it that wait for room (an answer the client reads
		// slowly), and the kernel takes its delivery of no bytes for the
		// same broken pipe, drops the rest of the answer, and the
		// connection stalls.
		asm.LoadMem(asm.R8, asm.R6, ctxLen, asm.Word),
		asm.JEq.Imm(asm.R8, 0, "drop"),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, fpCookie, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, peers),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpCookie),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R7, peerFlags, asm.DWord),
		asm.JSet.Imm(asm.R1, flagDiverted, "pass"),
		asm.JSet.Imm(asm.R1, flagScan, "scan"),
		asm.Ja.Label("redirect"),

		// A client's buffer: make its bytes linear, then run them
		// through the automaton.
		asm.LoadMem(asm.R8, asm.R6, ctxLen, asm.Word).WithSymbol("scan"),
		asm.JGT.Imm(asm.R8, maxScan, "divert"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.FnSkbPullData.Call(),
		asm.JNE.Imm(asm.R0, 0, "divert"),
		asm.StoreImm(asm.RFP, fpKey, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, table),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "divert"),
		asm.Mov.Reg(asm.R3, asm.R0), // r3: the table
		asm.StoreMem(asm.RFP, fpSkb, asm.R6, asm.DWord),
		asm.StoreMem(asm.RFP, fpPeer, asm.R7, asm.DWord),
		asm.LoadMem(asm.R0, asm.R7, peerWant, asm.DWord),
		asm.StoreMem(asm.RFP, fpWant, asm.R0, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, ctxData, asm.Word),    // r1: the next byte
		asm.LoadMem(asm.R2, asm.R6, ctxDataEnd, asm.Word), // r2: the end
		asm.Mov.Imm(asm.R4, stateStart),                   // r4: the state
		asm.Mov.Imm(asm.R5, 0),                            // r5: bytes scanned
		asm.Mov.Imm(asm.R8, 0),                            // r8: the Host hash
		asm.Mov.Imm(asm.R9, 0),                            // r9: Host mismatches

		// The loop. Each conditional jump goes on with the loop and falls
		// through to its end, so that the verifier walks the short way
		// first and keeps one pending branch, not one per byte.
		asm.JLT.Imm(asm.R5, maxScan, "more").WithSymbol("loop"),
		asm.Ja.Label("toolong"),
		asm.Mov.Reg(asm.R7, asm.R1).WithSymbol("more"),
		asm.Add.Imm(asm.R7, 1),
		asm.JLE.Reg(asm.R7, asm.R2, "byte"),
		asm.Ja.Label("done"),
		asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte).WithSymbol("byte"), // r0: c
		asm.Mov.Reg(asm.R6, asm.R4),
		asm.LSh.Imm(asm.R6, 8),
		asm.Or.Reg(asm.R6, asm.R0),
		asm.And.Imm(asm.R6, indexMask),
		asm.LSh.Imm(asm.R6, 1),
		asm.Mov.Reg(asm.R7, asm.R3),
		asm.Add.Reg(asm.R7, asm.R6),
		asm.LoadMem(asm.R6, asm.R7, 0, asm.Half), // r6: the entry
		// h = host byte ? h*k + c : h
		asm.Mov.Reg(asm.R7, asm.R8),
		asm.Mul.Imm(asm.R7, k),
		asm.Add.Reg(asm.R0, asm.R7),
		asm.Xor.Reg(asm.R0, asm.R8),
		asm.Mov.Reg(asm.R7, asm.R6),
		asm.RSh.Imm(asm.R7, hostByteBit),
		asm.And.Imm(asm.R7, 1),
		asm.Mul.Imm(asm.R7, -1),
		asm.And.Reg(asm.R0, asm.R7),
		asm.Xor.Reg(asm.R8, asm.R0),
		// host end: bad |= h ^ want; h = 0
		asm.LoadMem(asm.R0, asm.RFP, fpWant, asm.DWord),
		asm.Xor.Reg(asm.R0, asm.R8),
		asm.Mov.Reg(asm.R7, asm.R6),
		asm.RSh.Imm(asm.R7, hostEndBit),
		asm.And.Imm(asm.R7, 1),
		asm.Mul.Imm(asm.R7, -1),
		asm.And.Reg(asm.R0, asm.R7),
		asm.Or.Reg(asm.R9, asm.R0),
		asm.Xor.Imm(asm.R7, -1),
		asm.And.Reg(asm.R8, asm.R7),
		asm.And.Imm(asm.R6, stateMask),
		asm.Mov.Reg(asm.R4, asm.R6),
		asm.Add.Imm(asm.R1, 1),
		asm.Add.Imm(asm.R5, 1),
		asm.Ja.Label("loop"),

		// The whole buffer was scanned: it goes on if it ended at the end
		// of a request and every Host was the first request's.
		asm.LoadMem(asm.R6, asm.RFP, fpSkb, asm.DWord).WithSymbol("done"),
		asm.LoadMem(asm.R7, asm.RFP, fpPeer, asm.DWord),
		asm.JNE.Imm(asm.R4, stateStart, "divert"),
		asm.JNE.Imm(asm.R9, 0, "divert"),
		asm.LoadMem(asm.R1, asm.R6, ctxLen, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, peerRedirected, asm.DWord),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.StoreMem(asm.R7, peerRedirected, asm.R2, asm.DWord),

		asm.LoadMem(asm.R1, asm.R7, peerCookie, asm.DWord).WithSymbol("redirect"),
		asm.StoreMem(asm.RFP, fpKey, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, fpKey),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.Return(),

		asm.LoadMem(asm.R7, asm.RFP, fpPeer, asm.DWord).WithSymbol("toolong"),
		asm.LoadMem(asm.R1, asm.R7, peerFlags, asm.DWord).WithSymbol("divert"),
		asm.Or.Imm(asm.R1, flagDiverted),
		asm.StoreMem(asm.R7, peerFlags, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, events),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpCookie),
		asm.Mov.Imm(asm.R3, 8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),

		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),

		asm.Mov.Imm(asm.R0, skDrop).WithSymbol("drop"),
		asm.Return(),
	}
}

func (j *Joiner) closeAll() error {
	var errs []error
	if j.reader != nil {
		errs = append(errs, j.reader.Close())
	}
	for _, c := range []interface{ Close() error }{j.prog, j.events, j.table, j.peers, j.socks} {
		if c != nil && !isNilCloser(c) {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

func isNilCloser(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *ebpf.Program:
		return v == nil
	case *ebpf.Map:
		return v == nil
	}
	return false
}

// Close unloads the program and drops the maps; joined sockets then keep
// their bytes, and NextDiverted returns an error.
func (j *Joiner) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	return j.closeAll()
}

// NextDiverted waits for the next client whose buffers the program
// started to keep, and returns its socket cookie (Pair.Client). It
// returns an error once the Joiner is closed.
func (j *Joiner) NextDiverted() (uint64, error) {
	for {
		rec, err := j.reader.Read()
		if err != nil {
			return 0, err
		}
		if len(rec.RawSample) >= 8 {
			return binary.NativeEndian.Uint64(rec.RawSample), nil
		}
	}
}

// Pair is two joined sockets.
type Pair struct {
	j               *Joiner
	client, service uint64 // cookies
	once            sync.Once
}

// Join joins client to service: from now on what service receives is
// sent out on client, and what client receives is sent out on service
// while it is whole requests that need nothing of the daemon (scan.go),
// each with host as its Host; from the first buffer that is not, client
// keeps what it receives, for its owner to read (Pair.Diverted,
// Joiner.NextDiverted). The caller keeps both connections and closes
// them; call Pair.Unjoin first (closing a socket also takes it out of the
// map). Bytes already received and not read stay with their socket.
func (j *Joiner) Join(client, service *net.TCPConn, host string) (*Pair, error) {
	var p *Pair
	var joinErr error
	err := control(service, func(fs int) {
		joinErr = control(client, func(fc int) { p, joinErr = j.join(fc, fs, host) })
	})
	return p, errors.Join(err, joinErr)
}

func peerValue(cookie, want, flags uint64) []byte {
	v := make([]byte, peerSize)
	binary.NativeEndian.PutUint64(v[peerCookie:], cookie)
	binary.NativeEndian.PutUint64(v[peerWant:], want)
	binary.NativeEndian.PutUint64(v[peerFlags:], flags)
	return v
}

func (j *Joiner) join(fc, fs int, host string) (*Pair, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return nil, errClosed
	}
	cc, err := unix.GetsockoptUint64(fc, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return nil, fmt.Errorf("reading a socket cookie: %w", err)
	}
	cs, err := unix.GetsockoptUint64(fs, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return nil, fmt.Errorf("reading a socket cookie: %w", err)
	}
	p := &Pair{j: j, client: cc, service: cs}
	// The sockets first, without peers (their bytes stay with them),
	// then the peers: a socket's bytes are redirected only once its
	// peer is in the map.
	if err := j.socks.Update(cs, uint64(fs), ebpf.UpdateNoExist); err != nil {
		return nil, fmt.Errorf("adding a socket to the map: %w", err)
	}
	if err := j.socks.Update(cc, uint64(fc), ebpf.UpdateNoExist); err != nil {
		j.socks.Delete(cs)
		return nil, fmt.Errorf("adding a socket to the map: %w", err)
	}
	if err := j.peers.Update(cs, peerValue(cc, 0, 0), ebpf.UpdateNoExist); err != nil {
		p.unjoin()
		return nil, fmt.Errorf("joining sockets: %w", err)
	}
	if err := j.peers.Update(cc, peerValue(cs, hostHash(j.k, host), flagScan), ebpf.UpdateNoExist); err != nil {
		p.unjoin()
		return nil, fmt.Errorf("joining sockets: %w", err)
	}
	return p, nil
}

// Client returns the client socket's cookie, as NextDiverted reports it.
func (p *Pair) Client() uint64 { return p.client }

// Diverted reports whether the program keeps the client's bytes on its
// socket, and how many of the client's bytes it sent to the service
// before it stopped (all of them, once diverted).
func (p *Pair) Diverted() (diverted bool, redirected uint64, err error) {
	p.j.mu.RLock()
	defer p.j.mu.RUnlock()
	if p.j.closed {
		return false, 0, errClosed
	}
	v := make([]byte, peerSize)
	if err := p.j.peers.Lookup(p.client, &v); err != nil {
		return false, 0, err
	}
	flags := binary.NativeEndian.Uint64(v[peerFlags:])
	return flags&flagDiverted != 0, binary.NativeEndian.Uint64(v[peerRedirected:]), nil
}

// Unjoin takes both sockets out of the map.
func (p *Pair) Unjoin() {
	p.j.mu.RLock()
	defer p.j.mu.RUnlock()
	if !p.j.closed {
		p.unjoin()
	}
}

func (p *Pair) unjoin() {
	p.once.Do(func() {
		for _, c := range []uint64{p.client, p.service} {
			p.j.peers.Delete(c)
			p.j.socks.Delete(c)
		}
	})
}

func control(c *net.TCPConn, f func(fd int)) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}
