// Package e2e holds the end-to-end tests: each starts the real sandboxd
// binary on throwaway state (internal/testdaemon), drives it only through
// the public Go SDK (and the CLI where the CLI is the subject), and runs
// real sandboxes. They need root and skip without it.
package e2e
