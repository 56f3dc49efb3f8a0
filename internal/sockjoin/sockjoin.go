package sockjoin

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Joiner holds the map of joined sockets and the program that forwards
// their bytes.
type Joiner struct {
	// socks is the SOCKHASH of joined sockets, keyed by socket cookie.
	socks *ebpf.Map
	// peers maps a joined socket's cookie to its peer's.
	peers *ebpf.Map
	prog  *ebpf.Program

	mu     sync.Mutex
	closed bool
}

// New loads the program and its maps for at most maxPairs joined pairs.
func New(maxPairs int) (*Joiner, error) {
	if maxPairs < 1 {
		return nil, fmt.Errorf("sockjoin: maxPairs %d", maxPairs)
	}
	socks, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "sandboxd_socks", Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: uint32(2 * maxPairs),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the socket map: %w", err)
	}
	peers, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "sandboxd_peers", Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: uint32(2 * maxPairs),
	})
	if err != nil {
		socks.Close()
		return nil, fmt.Errorf("creating the peer map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "sandboxd_join", Type: ebpf.SkSKB, AttachType: ebpf.AttachSkSKBVerdict,
		License: "GPL", Instructions: program(socks.FD(), peers.FD()),
	})
	if err != nil {
		socks.Close()
		peers.Close()
		return nil, fmt.Errorf("loading the join program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: socks.FD(), Program: prog, Attach: ebpf.AttachSkSKBVerdict,
	}); err != nil {
		prog.Close()
		socks.Close()
		peers.Close()
		return nil, fmt.Errorf("attaching the join program: %w", err)
	}
	return &Joiner{socks: socks, peers: peers, prog: prog}, nil
}

// program is the verdict program run on every buffer a joined socket
// receives: it looks up the socket's peer by the socket's cookie and
// redirects the buffer to the peer's egress; a socket without a peer keeps
// its bytes (SK_PASS), for its owner to read.
func program(socks, peers int) asm.Instructions {
	const skPass = 1
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, peers),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	}
}

// Close unloads the program and drops the maps; joined sockets then keep
// their bytes.
func (j *Joiner) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	return errors.Join(j.prog.Close(), j.socks.Close(), j.peers.Close())
}

// Pair is two joined sockets.
type Pair struct {
	j    *Joiner
	a, b uint64 // cookies
	once sync.Once
}

// Join joins a and b: from now on what either receives is sent out on the
// other. The caller keeps both connections and closes them; call
// Pair.Unjoin first (closing a socket also takes it out of the map).
// Bytes already received and not read stay with their socket.
func (j *Joiner) Join(a, b *net.TCPConn) (*Pair, error) {
	var p *Pair
	var joinErr error
	err := control(b, func(fb int) {
		joinErr = control(a, func(fa int) { p, joinErr = j.join(fa, fb) })
	})
	return p, errors.Join(err, joinErr)
}

func (j *Joiner) join(fa, fb int) (*Pair, error) {
	ca, err := unix.GetsockoptUint64(fa, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return nil, fmt.Errorf("reading a socket cookie: %w", err)
	}
	cb, err := unix.GetsockoptUint64(fb, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return nil, fmt.Errorf("reading a socket cookie: %w", err)
	}
	p := &Pair{j: j, a: ca, b: cb}
	// The sockets first, without peers (their bytes stay with them),
	// then the peers: a socket's bytes are redirected only once its
	// peer is in the map.
	if err := j.socks.Update(cb, uint64(fb), ebpf.UpdateNoExist); err != nil {
		return nil, fmt.Errorf("adding a socket to the map: %w", err)
	}
	if err := j.socks.Update(ca, uint64(fa), ebpf.UpdateNoExist); err != nil {
		j.socks.Delete(cb)
		return nil, fmt.Errorf("adding a socket to the map: %w", err)
	}
	for _, kv := range [][2]uint64{{cb, ca}, {ca, cb}} {
		if err := j.peers.Update(kv[0], kv[1], ebpf.UpdateNoExist); err != nil {
			p.Unjoin()
			return nil, fmt.Errorf("joining sockets: %w", err)
		}
	}
	return p, nil
}

// Unjoin takes both sockets out of the map.
func (p *Pair) Unjoin() {
	p.once.Do(func() {
		for _, c := range []uint64{p.a, p.b} {
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
