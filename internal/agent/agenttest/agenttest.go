// Package agenttest is what the tests of the agent's packages share: their
// test binary doubles as the spawn wrapper (children execute
// /proc/self/exe spawn ...) and starts as the agent does, and one reaper
// waits for the children of the whole test process. It is for tests only.
package agenttest

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

// Main is a TestMain for tests that start programs as the agent does: it
// runs the spawn wrapper when the binary was executed as one, starts as
// the agent starts (under nohup, or with signals blocked, the programs
// the tests start would inherit them: spawn.StartWithDefaultSignals), and
// runs the tests. It never returns.
func Main(m *testing.M) { MainWith(m, nil) }

// MainWith is Main with a step of the package's own, run after the
// start-up and before the tests: another mode of the test binary (which
// exits), or a check that must run before any test starts the shared
// reaper (which would take the status of a child that exec.Cmd waits
// for).
func MainWith(m *testing.M, before func()) {
	MainAround(m, func() func() {
		if before != nil {
			before()
		}
		return nil
	})
}

// MainAround is MainWith whose step returns what to do after the tests
// (remove a file it made), or nil.
func MainAround(m *testing.M, around func() (after func())) {
	if len(os.Args) > 1 && os.Args[1] == spawn.Arg {
		spawn.Main(os.Args[2:]) // never returns
	}
	if err := spawn.StartWithDefaultSignals(); err != nil {
		panic(err)
	}
	var after func()
	if around != nil {
		after = around()
	}
	code := m.Run()
	if after != nil {
		after()
	}
	os.Exit(code)
}

var (
	reaperOnce sync.Once
	theReaper  *reaper.Reaper
	reaperErr  error
)

// Reaper returns the test process's one reaper, started on first use:
// there may be only one waiter for a process's children, and a second
// wait4(-1) loop would steal the statuses of the first one's.
func Reaper(t testing.TB) *reaper.Reaper {
	t.Helper()
	reaperOnce.Do(func() {
		theReaper, reaperErr = reaper.New(slog.New(slog.DiscardHandler))
		if reaperErr == nil {
			go theReaper.Run(context.Background())
		}
	})
	if reaperErr != nil {
		t.Fatal(reaperErr)
	}
	return theReaper
}
