package session

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

// The test binary doubles as the agent binary: sessions re-execute
// /proc/self/exe as the spawn wrapper.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spawn.Arg {
		spawn.Main(os.Args[2:])
	}
	// As the agent starts: under nohup, or with signals blocked, the
	// programs the tests start would inherit them.
	if err := spawn.StartWithDefaultSignals(); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

var testReaper *reaper.Reaper

// sharedReaper starts the process-wide reaper once: there may be only one
// waiter on this process's children.
func sharedReaper(t testing.TB) *reaper.Reaper {
	t.Helper()
	if testReaper == nil {
		r, err := reaper.New(slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		go r.Run(context.Background())
		testReaper = r
	}
	return testReaper
}
