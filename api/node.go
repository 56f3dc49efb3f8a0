package api

import "time"

// Codes of a cluster (docs/cluster.md), answered by its gateway.
const (
	// CodeNodeUnavailable: the node the sandbox is placed on does not
	// answer (its Lease expired, or it refused the connection); retry
	// after the Retry-After header's seconds.
	CodeNodeUnavailable Code = "NODE_UNAVAILABLE"
	// CodeNodeNotFound: no node of that name is registered.
	CodeNodeNotFound Code = "NODE_NOT_FOUND"
	// CodeClusterUnavailable: the gateway cannot reach the cluster's
	// state (the Kubernetes API is unreachable, slow or failing); retry
	// after the Retry-After header's seconds.
	CodeClusterUnavailable Code = "CLUSTER_UNAVAILABLE"
	// CodeSandboxMoving: a node's answer for a sandbox that a drain is
	// moving to another node, or has moved there (details.node); retry
	// after the Retry-After header's seconds, through the gateway.
	CodeSandboxMoving Code = "SANDBOX_MOVING"
	// CodeNotSupportedOnGateway: the route is served by a node, not by a
	// cluster's gateway (image builds: build on a node, import through
	// the gateway).
	CodeNotSupportedOnGateway Code = "NOT_SUPPORTED_ON_GATEWAY"
)

func init() {
	RegisterStatus(CodeNodeUnavailable, 503)
	RegisterStatus(CodeNodeNotFound, 404)
	RegisterStatus(CodeClusterUnavailable, 503)
	RegisterStatus(CodeSandboxMoving, 503)
	RegisterStatus(CodeNotSupportedOnGateway, 501)
}

// Node states.
const (
	// NodeReady: its Lease is current and it takes new sandboxes.
	NodeReady = "ready"
	// NodeCordoned: its Lease is current, its sandboxes answer, and no
	// new sandbox is placed on it.
	NodeCordoned = "cordoned"
	// NodeUnavailable: its Lease expired; its sandboxes answer
	// NODE_UNAVAILABLE until it renews it.
	NodeUnavailable = "unavailable"
)

// Node is one sandboxd host of a cluster, as GET /v1/nodes lists it.
type Node struct {
	Name string `json:"name"`
	// URL is where the gateway reaches the node's API.
	URL string `json:"url"`
	// State is ready, cordoned or unavailable.
	State string `json:"state"`
	// Cordoned is set by `sandbox node drain` and cleared by uncordon; an
	// unavailable node may be cordoned too.
	Cordoned bool `json:"cordoned"`
	// Running and Total count the node's sandboxes (running; in any status)
	// as of its last heartbeat.
	Running int `json:"running"`
	Total   int `json:"total"`
	// MaxRunning is the node's --max-running (0: no limit but memory).
	MaxRunning int `json:"maxRunning,omitempty"`
	// MemoryBudgetBytes is the node's --memory-budget (0: none);
	// MemoryUsedBytes the sum of its running sandboxes' memory limits.
	MemoryBudgetBytes int64 `json:"memoryBudgetBytes,omitempty"`
	MemoryUsedBytes   int64 `json:"memoryUsedBytes"`
	// Labels are the node's --node-label flags, what a create's
	// nodeSelector matches.
	Labels map[string]string `json:"labels,omitempty"`
	// HeartbeatAt is when the node last renewed its Lease.
	HeartbeatAt time.Time `json:"heartbeatAt"`
}

// NodeList is the answer of GET /v1/nodes, ordered by name.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// DrainResult is the answer of POST /v1/nodes/{name}/drain.
type DrainResult struct {
	Node Node `json:"node"`
	// Stopped are the IDs of the sandboxes the drain stopped (running or
	// paused ones, before their move).
	Stopped []string `json:"stopped"`
	// Moved are the sandboxes the drain moved, with their files, and the
	// node each is on now.
	Moved []DrainMove `json:"moved"`
	// Failed maps the IDs of sandboxes that could not be stopped or
	// moved to why; they stay on the drained node. A drain run again
	// tries them again.
	Failed map[string]string `json:"failed,omitempty"`
}

// DrainMove is one sandbox a drain moved.
type DrainMove struct {
	ID string `json:"id"`
	// Node is where it is now.
	Node string `json:"node"`
}
