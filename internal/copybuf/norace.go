//go:build !race

package copybuf

// RaceDetector: see race.go.
const RaceDetector = false
