package agent

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
)

// A full disk met while starting a process (its log files) or saving the
// agent's state is NO_SPACE, not an internal error.
func TestDiskFullIsNoSpace(t *testing.T) {
	s := &server{}
	for _, err := range []error{
		&os.PathError{Op: "open", Path: "/var/lib/sandboxd-agent/logs/p.stdout", Err: unix.ENOSPC},
		fmt.Errorf("writing state: %w", &os.PathError{Op: "write", Path: "state.json.tmp", Err: unix.EDQUOT}),
	} {
		if e := s.apiError(err); e.Code != api.CodeNoSpace {
			t.Errorf("apiError(%v) = %s, want NO_SPACE", err, e.Code)
		}
	}
}
