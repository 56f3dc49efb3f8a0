// Package httpapi is the daemon's HTTP edge: authentication, request
// decoding and validation, the mapping of domain errors to stable codes and
// HTTP statuses, the /v1 routes, and the forwarding of in-sandbox calls to
// each sandbox's agent. It is the only daemon package that sees HTTP types
// and wire types together; domain packages never see either.
package httpapi
