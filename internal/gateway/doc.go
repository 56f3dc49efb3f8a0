// Package gateway is a cluster's stateless front door (docs/cluster.md):
// it authenticates callers with the nodes' token or the cluster's API keys
// (never telling a node who the caller is: it forwards the credentials),
// places new sandboxes on the least loaded node that fits by claiming
// their ID in the cluster's directory, and forwards every call about a
// sandbox, streams and WebSockets included, to the node it is placed on,
// without buffering.
//
// It holds no state of its own beyond caches that any replica can rebuild
// from the directory; it never runs a sandbox, and it never answers a call
// about a sandbox from anything but the sandbox's node (except
// NODE_UNAVAILABLE when that node is gone).
package gateway
