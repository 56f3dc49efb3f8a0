// Package network owns the host side of sandbox networking: one named network
// namespace per sandbox (a file bind-mounted under Config.NetnsDir that the OCI
// runtime joins), the veth link and addresses of a sandbox in internet mode, and
// one nftables table (inet family, Config.Table) that enforces the egress policy
// of every sandbox on the host. It also dials into a sandbox's namespace for the
// preview proxy (DialContext) and runs code there (Manager.Do).
//
// It must never change anything it does not own: other nftables tables, iptables,
// interfaces without its prefix, namespaces outside NetnsDir. The one host-wide
// setting it changes is net.ipv4.ip_forward, which routing needs. It must never
// leave an OS thread that other goroutines can run on inside a sandbox's
// namespace, and it never starts a process in one (a child inherits the
// namespace of the thread that forks it).
//
// # Policy
//
// Setup installs the table (see ruleset in nft.go). For traffic that arrives
// on a sandbox interface (Config.InterfacePrefix + key):
//
//   - IPv6 is dropped, and so is any packet whose source address does not route
//     back through the interface it came in on (anti-spoofing, see below).
//   - To the host itself (any host address, including the gateway and the
//     daemon's API port): dropped, except replies (established, related), DNS to
//     Config.DNS, and (sandbox address . destination) pairs in the allow_host
//     set (CreateOptions.AllowHostCIDRs, a separate and explicit choice).
//   - Forwarded: replies and DNS to Config.DNS are accepted; then pairs in the
//     allow set (CreateOptions.AllowCIDRs, with Config.Subnet clipped out);
//     then anything to another sandbox, to Config.Subnet, to Config.Blocked
//     (by default the private and special ranges 10/8, 172.16/12, 192.168/16,
//     100.64/10, 169.254/16, 127/8, 0/8, 224/4, 240/4) or to the host's own
//     networks (its interfaces' subnets and its gateways, listed by Setup) is
//     dropped; the rest (the public internet) is accepted and masqueraded.
//   - With Config.DNSPort set, a sandbox's DNS to Config.DNS is redirected to
//     the daemon's forwarder (internal/egress) and DNS anywhere else is
//     dropped; then each sandbox's Egress applies in the forward chain, in
//     this order: its denyCidrs (deny set), its allowCidrs (allow set), the
//     blocked ranges, addresses DNS answers closed (dns_deny) or opened
//     (dns_allow, both with timeouts from the TTL, filled through Resolved),
//     and default_deny. What a policy drops goes through the denied chain,
//     which counts it per sandbox (counted set). TCP 80/443 to an address
//     in the dns sets is redirected to the name checker (Config.CheckPort).
//     SetPolicy replaces a running sandbox's policy in one transaction and
//     deletes the conntrack entries of what the new one denies (egress.go).
//   - New connections into a sandbox (forwarded from elsewhere, another
//     sandbox included, or from the host itself) are dropped: inbound traffic
//     reaches a sandbox only through the preview proxy, which dials inside the
//     namespace. The ingress rule runs before the sender's egress rules,
//     because an accept there ends the forward chain.
//
// An accept in this table does not override a drop in another one: every base
// chain on a hook must accept a packet. A host with other firewalls (Docker sets
// the iptables FORWARD policy to drop; firewalld and ufw have their own forward
// rules) will drop sandbox traffic this package allows unless the operator lets
// Config.Subnet through there too. Setup does not touch them.
//
// # Why it is built the way it is
//
// Namespace switches happen on a fresh goroutine locked to its OS thread
// (onNetnsThread). setns(2) and unshare(2) change only the calling thread, and
// the Go scheduler would otherwise run unrelated goroutines on it: a socket, an
// exec'd child or a /proc/sys write made there would land in the sandbox. If the
// thread cannot be moved back, it stays locked, and the runtime destroys a
// locked thread when its goroutine exits, so no other goroutine ever runs in the
// wrong namespace. Every thread that is not locked is in the host namespace;
// that is why plain exec.Command("nft") and /proc/sys writes are correct here.
//
// A named namespace is a bind mount of /proc/<tid>/ns/net onto a file, as `ip
// netns add` does; the mount keeps the namespace alive with no process in it. We
// do not make NetnsDir a shared mount point the way iproute2 does: since Linux
// 3.18, unlinking a file removes the mounts on it in every other mount namespace
// too, so a copy of the mount held by a mount namespace cloned in between (a
// container being set up) cannot pin a destroyed sandbox's namespace.
//
// net.ipv4.conf.*.rp_filter takes the maximum of "all" and the interface, and
// systemd's defaults set "all" to 2 (loose), so strict rp_filter on the host veth
// cannot be relied on alone. The ruleset repeats the check with `fib saddr . iif
// oif missing drop` at the raw priority, before conntrack: a sandbox can only
// send from the address routed to its own veth, which is what makes the
// (sandbox address . destination) allow set safe.
//
// Files under /proc/sys/net are resolved against the network namespace of the
// thread that opens them, so the per-namespace sysctls (ping_group_range,
// disable_ipv6) are written on the locked thread inside the namespace.
package network
