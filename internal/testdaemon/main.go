package testdaemon

import (
	"os"
	"path/filepath"
	"testing"
)

// Main runs a test binary's tests, then removes the binaries BinDir and
// BuildTestServer built for them: copies of this process's own (sandboxd
// and the CLI, agent and helpers: about 70 MB; testsrv 6 MB) that no
// other process uses, and that were otherwise left in the temporary
// directory by every test process (85 testsrv copies in /tmp after a day
// of test runs). Call it from TestMain. A process killed before its end
// (a test timeout) still leaves them.
func Main(m *testing.M) {
	code := m.Run()
	removeBuilt()
	os.Exit(code)
}

// removeBuilt removes what BinDir and BuildTestServer built, once every
// test is over.
func removeBuilt() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if testsrvPath != "" {
		os.RemoveAll(filepath.Dir(testsrvPath))
	}
}
