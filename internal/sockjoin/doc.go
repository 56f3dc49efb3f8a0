// Package sockjoin joins pairs of TCP sockets in the kernel: once two
// sockets are joined, the bytes that arrive on one are sent out on the
// other by a BPF program (a SOCKHASH map with an SK_SKB verdict program:
// bpf_sk_redirect_hash), so the process that holds them is never woken for
// them. The preview proxy joins a client's connection to the service's
// after the connection's first request is authorised. A client's bytes go
// on only while each buffer is whole HTTP/1.1 requests that need nothing
// of the daemon (scan.go); from the first that is not, they stay on the
// client's socket for the daemon to read.
//
// It owns the BPF maps and program and nothing else: it never reads or
// writes the sockets it joins, and never decides what may be joined. The
// map and program live as long as the Joiner's file descriptors (no pinned
// objects, nothing host-wide), and New fails where the kernel or the
// process's capabilities do not allow them, so that callers fall back to
// copying bytes themselves.
package sockjoin
