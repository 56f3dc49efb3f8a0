package session

import (
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
)

// The test binary doubles as the agent binary: sessions re-execute
// /proc/self/exe as the spawn wrapper.
func TestMain(m *testing.M) { agenttest.Main(m) }
