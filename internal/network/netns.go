package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// onNetnsThread runs fn on a new goroutine locked to its OS thread, after
// enter has moved that thread into another network namespace, and moves the
// thread back afterwards. If enter fails, fn does not run. If the thread cannot
// be moved back, it stays locked: the Go runtime destroys a locked thread when
// its goroutine exits, so nothing else ever runs in the other namespace. A
// fresh goroutine (rather than the caller's) means a failed restore can never
// strand the caller itself in the sandbox's namespace. A panic in fn is
// re-raised in the caller, where its recover (net/http's, say) can see it.
func onNetnsThread(enter func() error, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		res := result{err: errors.New("function in network namespace called runtime.Goexit")}
		defer func() { done <- res }()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("opening current network namespace: %w", err)
			return
		}
		defer orig.Close()
		// setns(2) and unshare(2) either switch the namespace or fail without
		// changing it, so a failed enter leaves the thread where it was.
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			res.err = err
			return
		}
		defer func() { // after fn, however it ended
			if r := recover(); r != nil {
				res.panicked, res.value = true, r
			}
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
				// Deliberately no UnlockOSThread: see above.
				res.err = errors.Join(res.err, fmt.Errorf("restoring network namespace: %w", err))
				return
			}
			runtime.UnlockOSThread()
		}()
		res.err = fn()
	}()
	res := <-done
	if res.panicked {
		panic(res.value)
	}
	return res.err
}

// setnsTo returns an enter func for onNetnsThread that joins the namespace
// behind the open file f.
func setnsTo(f *os.File) func() error {
	return func() error {
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns %s: %w", f.Name(), err)
		}
		return nil
	}
}

// isNetnsMount reports whether path has a network namespace mounted on it.
// A leftover plain file (a crash between creating the file and mounting) is
// not one.
func isNetnsMount(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// loopbackIndex is the ifindex of lo in every network namespace.
const loopbackIndex = 1

// configureNetns runs on a thread inside a sandbox's namespace. It sets the
// namespace's sysctls, brings lo up and returns a netlink handle whose socket
// is bound to the namespace (a netlink socket talks to the namespace it was
// created in, whichever thread uses it later).
func configureNetns() (*netlink.Handle, error) {
	// IPv6 is off in sandboxes: the filter only speaks IPv4, and an IPv6
	// link-local address would be a way around it between sandboxes. "all"
	// also switches off lo's ::1; "default" covers eth0, created later.
	for _, p := range []string{"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"} {
		if err := writeSysctl(p, "1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err // ErrNotExist: the kernel has no IPv6 at all
		}
	}
	// ICMP echo sockets for every group, so ping works without CAP_NET_RAW.
	if err := writeSysctl("net/ipv4/ping_group_range", "0 2147483647"); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: loopbackIndex, Name: "lo"}}
	if err := h.LinkSetUp(lo); err != nil {
		h.Close()
		return nil, fmt.Errorf("setting lo up: %w", err)
	}
	return h, nil
}

// writeSysctl writes value to /proc/sys/<name> in the calling thread's network
// namespace (for net/ entries).
func writeSysctl(name, value string) error {
	f, err := os.OpenFile(filepath.Join("/proc/sys", name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
	return nil
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", name, err)
	}
	return string(b), nil
}

// netns is an open sandbox namespace: the file (for IFLA_NET_NS_FD) and a
// netlink handle inside it.
type netns struct {
	file *os.File
	nl   *netlink.Handle
}

func (n *netns) close() {
	if n.nl != nil {
		n.nl.Close()
	}
	if n.file != nil {
		n.file.Close()
	}
}

// ensureNetns opens the namespace mounted at path, or creates and mounts a new
// one, and (re)applies its settings either way. Undo steps for what it created
// go on undo.
func ensureNetns(path string, undo *cleanup) (*netns, error) {
	mounted, err := isNetnsMount(path)
	if err != nil {
		return nil, err
	}
	n := &netns{}
	if mounted {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("opening netns: %w", err)
		}
		n.file = f
		err = onNetnsThread(setnsTo(f), func() (err error) {
			n.nl, err = configureNetns()
			return err
		})
		if err != nil {
			n.close()
			return nil, fmt.Errorf("configuring netns: %w", err)
		}
		return n, nil
	}
	if n.nl, err = mountNewNetns(path, undo); err != nil {
		return nil, err
	}
	if n.file, err = os.Open(path); err != nil {
		n.close()
		return nil, fmt.Errorf("opening netns: %w", err)
	}
	return n, nil
}

// mountNewNetns creates a network namespace and bind-mounts it on path, like
// `ip netns add`, and configures it on the same thread.
func mountNewNetns(path string, undo *cleanup) (*netlink.Handle, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating netns dir: %w", err)
	}
	// A plain file left by a crash before the mount is reused.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	switch {
	case err == nil:
		f.Close()
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("creating netns file: %w", err)
	}
	undo.push(func() error { return removeIfExists(path) })

	unshare := func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return nil
	}
	var (
		h       *netlink.Handle
		mounted bool
	)
	err = onNetnsThread(unshare, func() error {
		// The thread's namespace dies when the thread moves back unless the
		// mount holds it.
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting netns: %w", err)
		}
		mounted = true
		var err error
		h, err = configureNetns()
		return err
	})
	if mounted {
		undo.push(func() error { return unmountIfMounted(path) })
	}
	if err != nil {
		if h != nil {
			h.Close()
		}
		return nil, fmt.Errorf("creating netns: %w", err)
	}
	return h, nil
}

// removeNetns unmounts and removes a namespace file; missing is fine.
func removeNetns(path string) error {
	return errors.Join(unmountIfMounted(path), removeIfExists(path))
}

func unmountIfMounted(path string) error {
	// MNT_DETACH: a process that still has the file open (a runtime in the
	// middle of setns) must not make Destroy fail; the namespace itself lives on
	// until its last user is gone.
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil // EINVAL: not a mount point
	}
	return fmt.Errorf("unmounting %s: %w", path, err)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// DoNetns runs fn on an OS thread inside the network namespace mounted at
// netnsPath, and returns its error. Sockets fn creates stay in that namespace.
// fn must not start goroutines that expect to be in the namespace (they run on
// other threads, in the host's), and it should return quickly: it holds an OS
// thread.
func DoNetns(netnsPath string, fn func() error) error {
	f, err := os.Open(netnsPath)
	if err != nil {
		return fmt.Errorf("opening netns: %w", err)
	}
	defer f.Close()
	return onNetnsThread(setnsTo(f), fn)
}

// DialContext connects to address (an IP literal and port, e.g.
// "127.0.0.1:8080") from inside the network namespace mounted at netnsPath:
// the preview proxy uses it to reach a port that a sandbox listens on, even on
// its own loopback. network is "tcp", "tcp4" or "tcp6".
//
// Only the socket is created inside the namespace, on a locked thread that
// returns to the host's namespace before connecting; a socket stays in the
// namespace it was created in. Host names are refused: resolving them would
// happen in the host's namespace, with the host's resolver.
func DialContext(ctx context.Context, netnsPath, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s in netns: need an IP address and port: %w", address, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	var (
		family int
		sa     unix.Sockaddr
	)
	switch {
	case ap.Addr().Is4() && (network == "tcp" || network == "tcp4"):
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	case ap.Addr().Is6() && (network == "tcp" || network == "tcp6"):
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	default:
		return nil, fmt.Errorf("dial %s %s in netns: unsupported network or address family", network, address)
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}

	fd := -1
	err = DoNetns(netnsPath, func() error {
		var err error
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, opErr(err)
	}
	// A non-blocking descriptor makes os.NewFile register it with the runtime's
	// poller, so waiting for the connect honours deadlines without a thread.
	f := os.NewFile(uintptr(fd), "netns-tcp:"+address)
	defer f.Close()
	if err := connect(ctx, f, sa); err != nil {
		return nil, opErr(err)
	}
	c, err := net.FileConn(f) // dups the descriptor; f's copy is closed above
	if err != nil {
		return nil, opErr(err)
	}
	return c, nil
}

// connect does a non-blocking connect(2) on f, waiting for it on the poller
// the way the net package does.
func connect(ctx context.Context, f *os.File, sa unix.Sockaddr) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var connErr error
	if err := rc.Control(func(fd uintptr) { connErr = unix.Connect(int(fd), sa) }); err != nil {
		return err
	}
	switch {
	case connErr == nil:
		return nil
	case !errors.Is(connErr, unix.EINPROGRESS) && !errors.Is(connErr, unix.EINTR):
		return os.NewSyscallError("connect", connErr)
	}

	// Only the context bounds the wait (a deadline of its own could fire a
	// moment before ctx.Err() is set, and the caller would see a timeout
	// that is not the context's).
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	// RawWrite forgets readiness seen before it started, so the state is
	// checked before the first wait too: a loopback connect is often done by
	// now.
	err = rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			connErr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch e := unix.Errno(v); e {
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		case 0:
			// No error yet also means "still connecting"; only a peer name
			// proves the connection is up.
			if _, err := unix.Getpeername(int(fd)); err == nil {
				connErr = nil
				return true
			}
			return false
		default:
			connErr = os.NewSyscallError("connect", e)
			return true
		}
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return err
	}
	return connErr
}
