// Package egress enforces the names of a sandbox's egress policy, beside the
// addresses internal/network's nftables table enforces: a DNS forwarder that
// every internet-mode sandbox's DNS is redirected to, and a checker of TLS
// SNI and HTTP Host on ports 80 and 443 of addresses that names opened or
// closed.
//
// The forwarder answers names the policy denies with NXDOMAIN and forwards
// the rest to the daemon's upstream servers; before it answers, it hands the
// A records of the answer to the network manager (Policies.Resolved), which
// opens (dns_allow) or closes (dns_deny) exactly those addresses for the
// answer's TTL. The table redirects a sandbox's TCP connections to ports 80
// and 443 of such addresses to the checker, which reads the first bytes (a
// TLS ClientHello or an HTTP request head), decides by the name they carry,
// and then splices the connection to its original destination, dialled
// from the host.
//
// It must never answer or relay for anyone but a sandbox (sources are
// checked against the sandbox addresses the network manager knows), never
// forward a name a default-deny policy does not allow (no DNS tunnel), never
// send a query anywhere but the configured upstreams, and bound what a
// sandbox can make it hold: queries and connections in flight, bytes read
// before a decision, and time.
package egress
