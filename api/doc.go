// Package api holds the wire types of sandboxd's public HTTP API: request and
// response bodies, stream events and error codes. It is shared by the daemon,
// the in-sandbox agent and the Go SDK, and must never import anything from
// internal/ or any package that needs the daemon's dependencies.
//
// Conventions: JSON field names are camelCase; durations on the wire are
// integer milliseconds (fields ending in "Ms" are not used: the unit is
// documented on each field); times are RFC 3339 with nanoseconds in UTC.
// Clients must ignore fields they do not know.
package api
