// Package proxy owns preview URLs: the exposed ports of each sandbox and
// their tokens (Registry, kept in the registry database so that they
// survive restarts), the preview host name format
// {port}-{sandboxId}-{token}.{domain} (ParseHost, Address.Host), signed
// expiring links for private ports (Signer), and the HTTP reverse proxy
// that carries preview traffic, WebSocket upgrades included, to a port
// inside a sandbox (Proxy).
//
// It never opens a connection itself: the caller hands Proxy a dial
// function that connects inside the sandbox's network namespace (the host
// cannot reach sandboxes otherwise, by design). It knows nothing of the
// API's wire types or error codes; internal/httpapi classifies its errors.
//
// Every preview request is hostile input. A host that does not parse, a
// sandbox that does not exist, a port that is not exposed and a wrong
// token all look the same to the caller (ErrNotFound), and tokens are
// compared in constant time. The API token, when a request carries it to
// reach a private port, and the preview cookie are removed before the
// request reaches the sandbox.
package proxy
