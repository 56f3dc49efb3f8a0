package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/store"
)

// Moving a sandbox to another node of a cluster (docs/cluster.md, "Moving
// sandboxes"): on the node it leaves, HoldForMove stops any start of it,
// CopyForMove copies its writable layer for the transfer, and FinishMove
// destroys it once the cluster names the other node; ReleaseMove undoes a
// hold when the move failed. On the node it joins, MoveIn makes it from
// its configuration and that layer, stopped.

// ErrMoving: the sandbox is held for a move to another node, or has moved
// there; a call through the cluster's gateway reaches it on its new node.
var ErrMoving = errors.New("sandbox is moving to another node")

// MovingError is ErrMoving with the node the sandbox moves to.
type MovingError struct {
	ID, Node string
	// Moved: the move is done (this node has no copy any more).
	Moved bool
}

func (e *MovingError) Error() string {
	if e.Moved {
		return fmt.Sprintf("sandbox %s has moved to node %s; retry through the cluster's gateway", e.ID, e.Node)
	}
	return fmt.Sprintf("sandbox %s is being moved to node %s; retry in a few seconds", e.ID, e.Node)
}

func (e *MovingError) Is(target error) bool { return target == ErrMoving }

// movedTTL is how long a node refuses calls for a sandbox that moved
// away: longer than any gateway believes a cached placement, so that no
// late call creates the ID here again meanwhile.
const movedTTL = 10 * time.Minute

// maxMoved bounds the remembered moves.
const maxMoved = 100_000

// moves remembers the sandboxes that moved away from this node.
type moves struct {
	mu    sync.Mutex
	moved map[string]movedAway
}

type movedAway struct {
	node string
	at   time.Time
}

func (mv *moves) add(id, node string, now time.Time) {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	if mv.moved == nil {
		mv.moved = map[string]movedAway{}
	}
	if len(mv.moved) >= maxMoved {
		for k, v := range mv.moved {
			if now.Sub(v.at) >= movedTTL {
				delete(mv.moved, k)
			}
		}
	}
	if len(mv.moved) < maxMoved {
		mv.moved[id] = movedAway{node: node, at: now}
	}
}

// check returns the error of a call that would create id here while it
// is known to have moved away.
func (mv *moves) check(id string, now time.Time) error {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	a, ok := mv.moved[id]
	if !ok {
		return nil
	}
	if now.Sub(a.at) >= movedTTL {
		delete(mv.moved, id)
		return nil
	}
	return &MovingError{ID: id, Node: a.node, Moved: true}
}

func (mv *moves) forget(id string) {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	delete(mv.moved, id)
}

// movable are the statuses a sandbox can leave its node in: its files on
// disk, no container.
var movable = []Status{StatusStopped, StatusSleeping, StatusFailed}

// HoldForMove holds the sandbox id for a move to node: until FinishMove
// or ReleaseMove nothing starts it (calls answer ErrMoving) and it cannot
// be destroyed. It must be stopped, sleeping or failed, and have no disk
// quota (whose files live in an image only mounted while it runs).
func (m *Manager) HoldForMove(ctx context.Context, id, node string) (Info, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	if err := requireStatus(b, "move", movable...); err != nil {
		return Info{}, err
	}
	if b.cfg.Limits.DiskBytes > 0 {
		return Info{}, fmt.Errorf("%w: sandbox %s has a disk quota, whose files cannot be moved yet", ErrUnsupported, id)
	}
	if m.opts.Snapshots == nil {
		return Info{}, fmt.Errorf("%w: this daemon keeps no snapshot store to copy files in", ErrUnsupported)
	}
	b.moving = node
	return b.info(), nil
}

// ReleaseMove ends a hold whose move did not happen.
func (m *Manager) ReleaseMove(id string) error {
	b, err := m.lockExisting(id)
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
	b.moving = ""
	return nil
}

// CopyForMove copies the writable layer of the held sandbox id, owners
// 0-based as in a snapshot's layer, and returns its configuration and
// the copy (the caller discards it).
func (m *Manager) CopyForMove(ctx context.Context, id string) (Info, *snapshot.Copy, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, nil, err
	}
	defer b.mu.Unlock()
	if b.moving == "" {
		return Info{}, nil, fmt.Errorf("%w: sandbox %s is not held for a move", ErrConflict, id)
	}
	p := m.paths(b.rec.Key)
	if _, err := os.Stat(p.upper); errors.Is(err, os.ErrNotExist) {
		// Never started: no writable layer yet.
		if err := os.MkdirAll(p.upper, 0o755); err != nil {
			return Info{}, nil, err
		}
	}
	cp, err := m.opts.Snapshots.CopyLayer(ctx, p.upper)
	if err != nil {
		return Info{}, nil, err
	}
	if ids := b.hostIDs(); ids != nil {
		if err := cp.ShiftOwners(ids.Base); err != nil {
			cp.Discard()
			return Info{}, nil, err
		}
	}
	return b.info(), cp, nil
}

// FinishMove destroys the held sandbox id, which now lives on its
// hold's node, and refuses calls that would make it here again for a
// while (movedTTL).
func (m *Manager) FinishMove(ctx context.Context, id string) error {
	b, err := m.lockExisting(id)
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
	node := b.moving
	if node == "" {
		return fmt.Errorf("%w: sandbox %s is not held for a move", ErrConflict, id)
	}
	m.moves.add(id, node, m.now())
	if err := m.destroyLocked(ctx, b); err != nil {
		return err
	}
	m.log.Info("sandbox moved away", "sandbox", id, "node", node)
	return nil
}

// MoveIn makes the sandbox id, stopped, from the configuration it had on
// its old node and its writable layer in the directory layer (owners
// 0-based; made with NewMoveDir), which it takes. The image must be here
// by its digest (ErrImageNotFound), and a fork's snapshot layer too.
func (m *Manager) MoveIn(ctx context.Context, id string, cfg Config, createdAt time.Time, layer string) (Info, error) {
	m.moves.forget(id)
	m.mu.Lock()
	if m.boxes[id] != nil {
		m.mu.Unlock()
		return Info{}, fmt.Errorf("%w: sandbox %s already exists on this node", ErrConflict, id)
	}
	b := &box{id: id}
	b.mu.Lock()
	m.addBoxLocked(b)
	m.mu.Unlock()
	inf, err := m.moveInLocked(ctx, b, cfg, createdAt, layer)
	if err != nil {
		if b.rec.ID != "" {
			m.removeFiles(b.rec.Key)
			m.opts.Store.Delete(context.WithoutCancel(ctx), id)
		}
		b.netSlot.Store(0)
		b.uidBase.Store(0)
		m.dropPlaceholder(b)
		b.mu.Unlock()
		return Info{}, err
	}
	b.mu.Unlock()
	return inf, nil
}

func (m *Manager) moveInLocked(ctx context.Context, b *box, cfg Config, createdAt time.Time, layer string) (Info, error) {
	cfg, err := m.opts.Policy.Resolve(cfg)
	if err != nil {
		return Info{}, err
	}
	if cfg.Limits.DiskBytes > 0 {
		return Info{}, fmt.Errorf("%w: a sandbox with a disk quota cannot be moved yet", ErrUnsupported)
	}
	if _, err := m.opts.Images.Resolve(ctx, imageRef(cfg)); err != nil {
		return Info{}, fmt.Errorf("image %s (%s) of sandbox %s: %w", cfg.Image, cfg.ImageDigest, b.id, err)
	}
	if cfg.SnapshotLayer != "" {
		if _, err := os.Stat(m.opts.Snapshots.LayerPath(cfg.SnapshotLayer)); err != nil {
			return Info{}, fmt.Errorf("%w: sandbox %s was forked from snapshot %s, whose layer this node lacks", snapshot.ErrNotFound, b.id, cfg.Snapshot)
		}
	}
	if err := m.checkVolumesExist(cfg.Volumes); err != nil {
		return Info{}, err
	}
	if err := m.checkTotal(); err != nil {
		return Info{}, err
	}
	if err := m.checkCount(b); err != nil {
		return Info{}, err
	}
	slot := -1
	if cfg.Network.Mode == NetworkInternet {
		if slot, err = m.allocateSlot(b); err != nil {
			return Info{}, err
		}
	}
	uidBase, err := m.allocateIDs(b, cfg.Runtime)
	if err != nil {
		return Info{}, err
	}
	if cfg.Runtime != RuntimeGVisor {
		if err := snapshot.OwnTree(layer, uidBase); err != nil {
			return Info{}, err
		}
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return Info{}, err
	}
	now := m.now().UTC()
	if createdAt.IsZero() || createdAt.After(now) {
		createdAt = now
	}
	rec := store.Sandbox{
		ID: b.id, Key: newKey(), Status: string(StatusStopped), StatusReason: "moved from another node",
		Image: cfg.Image, Runtime: cfg.Runtime, Config: data, NetSlot: slot,
		CreatedAt: createdAt.UTC(), LastUsedAt: now, StatusChangedAt: now, HostUIDBase: uidBase,
	}
	p := m.paths(rec.Key)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return Info{}, err
	}
	// The transfer carries what is below the layer's root; the root (the
	// sandbox's /) is the mode a new upper directory gets, and its
	// owner is set at mount (rootfs.Overlay).
	if err := os.Chmod(layer, 0o755); err != nil {
		return Info{}, err
	}
	if err := os.Rename(layer, p.upper); err != nil {
		os.RemoveAll(p.dir)
		return Info{}, fmt.Errorf("installing the moved files: %w", err)
	}
	if err := m.opts.Store.Insert(ctx, rec); err != nil {
		os.RemoveAll(p.dir)
		return Info{}, fmt.Errorf("recording sandbox %s: %w", b.id, err)
	}
	b.rec = rec
	b.status.Store(StatusStopped)
	b.setConfig(cfg)
	b.lastUsed.Store(now.UnixNano())
	b.flushedAt.Store(now.UnixNano())
	m.log.Info("sandbox moved in", "sandbox", b.id, "key", rec.Key, "image", cfg.Image)
	m.emit(b, EventCreated)
	return b.info(), nil
}

// NewMoveDir makes an empty directory for MoveIn's layer, on the file
// system MoveIn renames it from.
func (m *Manager) NewMoveDir() (string, error) {
	if m.opts.Snapshots == nil {
		return "", fmt.Errorf("%w: this daemon keeps no snapshot store to receive files in", ErrUnsupported)
	}
	return m.opts.Snapshots.TempDir("move-in-")
}
