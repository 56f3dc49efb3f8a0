package bench

import (
	"testing"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestMain removes what the tests built for this process once they are
// over (see testdaemon.Main).
func TestMain(m *testing.M) { testdaemon.Main(m) }
