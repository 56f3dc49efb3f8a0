package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrLost: the sandbox's files vanished behind the daemon's back (status
// lost); it can only be destroyed.
var ErrLost = errors.New("sandbox lost")

// A sandbox is lost when what it keeps between starts is gone: its
// directory under the state directory (made with its registry row), or,
// once it has booted (etc.written), its writable layer. Starting it again
// would boot an empty disk under its name, as if nothing had happened;
// lost says so instead, and destroy is the way out. The check runs at
// recovery and before every start of a sandbox that is not running.

// filesGone says what of b's files is missing, or "" if nothing is. b.mu
// is held (or b is not shared yet).
func (m *Manager) filesGone(b *box) string {
	p := m.paths(b.rec.Key)
	if _, err := os.Stat(p.dir); errors.Is(err, fs.ErrNotExist) {
		return "its files vanished (the sandbox's state directory is gone)"
	}
	if _, err := os.Stat(p.etcWritten); err != nil {
		return "" // never booted: there is no disk to lose yet
	}
	layer := p.upper
	if b.cfg.Limits.DiskBytes > 0 {
		layer = p.diskImage
	}
	if _, err := os.Stat(layer); errors.Is(err, fs.ErrNotExist) {
		return "its disk vanished (the sandbox's writable layer is gone)"
	}
	return ""
}

// checkLost marks b lost if its files are gone, and then returns ErrLost.
// b.mu is held.
func (m *Manager) checkLost(ctx context.Context, b *box) error {
	why := m.filesGone(b)
	if why == "" {
		return nil
	}
	if err := m.teardown(ctx, b); err != nil {
		m.log.Warn("cleaning up a lost sandbox", "sandbox", b.id, "err", err)
	}
	m.log.Error("sandbox lost", "sandbox", b.id, "key", b.rec.Key, "why", why)
	if err := m.changeStatus(ctx, b, StatusLost, why); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	m.emit(b, EventFailed) // with status lost and the reason
	return fmt.Errorf("%w: sandbox %s: %s; destroy it", ErrLost, b.id, why)
}
