package sockjoin

import (
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The floor of a design this package does not use, for BenchmarkRoundTrip
// only: the service's own socket in the socket map with an SK_MSG program,
// so that what the service sends goes out on the client's joined socket
// from the service's own sendmsg (bpf_msg_redirect_hash), with no kworker
// and no loopback hop through the daemon's socket to the service. A real
// daemon would have to take the service's socket out of the sandbox's
// process (pidfd_getfd) to do this; the benchmark holds both ends itself.

// msgRedirect is an SK_MSG verdict program: a message sent on a socket
// whose local port is in ports goes out on the socket of the cookie
// there, in socks.
func msgRedirect(socks, ports int) asm.Instructions {
	const (
		skPass       = 1
		msgLocalPort = 64 // sk_msg_md.local_port
	)
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, msgLocalPort, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, ports),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMsgRedirectHash.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	}
}

// joinWithMsg joins front to back as Join does, and also sends what
// service sends straight out on front.
func joinWithMsg(b *testing.B, front, back, service *net.TCPConn) func() {
	j, err := New(4)
	if err != nil {
		b.Fatal(err)
	}
	ports, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		b.Fatal(err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SkMsg, AttachType: ebpf.AttachSkMsgVerdict,
		License: "GPL", Instructions: msgRedirect(j.socks.FD(), ports.FD())})
	if err != nil {
		b.Fatal(err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: j.socks.FD(), Program: prog, Attach: ebpf.AttachSkMsgVerdict}); err != nil {
		b.Fatal(err)
	}
	p, err := j.Join(front, back, testHost)
	if err != nil {
		b.Fatal(err)
	}
	control(service, func(fd int) {
		err = j.socks.Update(cookieOf(fd), uint64(fd), ebpf.UpdateNoExist)
	})
	if err != nil {
		b.Fatal(err)
	}
	port := uint32(service.LocalAddr().(*net.TCPAddr).Port)
	if err := ports.Update(port, p.client, ebpf.UpdateAny); err != nil {
		b.Fatal(err)
	}
	return func() {
		// The answers went by SK_MSG: the daemon's socket to the
		// service received none of them.
		control(back, func(fd int) {
			if info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err != nil || info.Bytes_received != 0 {
				b.Errorf("back received %d bytes (%v): the SK_MSG redirect did not take", info.Bytes_received, err)
			}
		})
		p.Unjoin()
		prog.Close()
		ports.Close()
		j.Close()
	}
}

func cookieOf(fd int) uint64 {
	c, _ := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	return c
}
