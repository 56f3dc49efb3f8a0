//go:build race

package copybuf

// RaceDetector reports whether the binary was built with the race
// detector. Its sync.Pool drops a random quarter of what it is given back,
// on purpose (to catch code that goes on using what it returned), so a
// path that borrows its buffers still allocates: LargeAllocations cannot
// tell borrowing from making then.
const RaceDetector = true
