package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// A drain moves each sandbox of the drained node (docs/cluster.md,
// "Moving sandboxes"). The sandbox is live on exactly one node at every
// step, the one its directory placement names:
//
//  1. hold on the source: nothing starts or destroys it there any more
//     (calls answer SANDBOX_MOVING, 503 with Retry-After);
//  2. a copy on the target that an earlier, unfinished move left is
//     destroyed (it is not placed there, so nothing reaches it);
//  3. move-in on the target: the target pulls the sandbox's
//     configuration and files from the source (node to node, with the
//     cluster's token, streamed, bounded by its free disk, checked
//     against a SHA-256 trailer) and makes the sandbox, stopped;
//  4. the placement flips to the target, with optimistic concurrency;
//  5. finish on the source: its copy is destroyed, and calls that reach
//     it there (a gateway's placement cached from before the flip)
//     answer SANDBOX_MOVING for a while instead of creating it again.
//
// A failure before 4 undoes 3 (the target's copy is destroyed) and 1.
// A gateway that dies between steps leaves the placement on the source
// up to 4 and on the target from 4 on, the files on that node in both
// cases; a drain run again finishes the job: a held sandbox is moved
// again, and one whose placement already names another node has its
// source copy finished.

// moveTimeout bounds one move's transfer.
const moveTimeout = 30 * time.Minute

// moveStepTimeout bounds the other steps of a move.
const moveStepTimeout = time.Minute

// movePath is the node's route of a move step (kubenode.MovePrefix) for
// tenant t's sandbox id ("" is the admin namespace).
func movePath(t, id, step string) string {
	p := "/v1/cluster/sandboxes/" + url.PathEscape(id) + "/" + step
	if t != "" {
		p += "?tenant=" + url.QueryEscape(t)
	}
	return p
}

// drained is what happened to one sandbox of a drain.
type drained struct {
	stopped bool
	to      string
	err     error
}

// drainOne stops (if it runs) and moves one sandbox of node n.
func (s *Server) drainOne(ctx context.Context, n Node, sb listed) drained {
	t := sb.Tenant
	if t == tenant.Default {
		t = ""
	}
	scoped := tenant.Scope(t, sb.ID)
	placed, err := s.opts.Directory.Placement(ctx, scoped)
	switch {
	case errors.Is(err, ErrNotPlaced):
		return drained{err: errors.New("not placed in the cluster (made on the node directly); left alone")}
	case err != nil:
		return drained{err: fmt.Errorf("reading its placement: %w", err)}
	case placed != n.Name:
		// An earlier move flipped the placement but did not finish.
		if err := s.finishMove(ctx, n, t, sb.ID, placed); err != nil {
			return drained{err: err}
		}
		return drained{to: placed}
	}
	var res drained
	switch sb.Status {
	case api.StatusRunning, api.StatusPaused, api.StatusCreating:
		if err := s.stopOn(ctx, n, sb); err != nil {
			return drained{err: fmt.Errorf("stopping it: %w", err)}
		}
		res.stopped = true
	}
	to, err := s.place.chooseNode(ctx, sb.Limits.MemoryBytes, nil)
	if errors.Is(err, errNoFit) {
		res.err = errors.New("no other node is ready, uncordoned and has room for it")
		return res
	}
	if err != nil {
		res.err = err
		return res
	}
	res.err = s.move(ctx, t, sb.ID, n, to)
	if res.err == nil {
		res.to = to.Name
	}
	return res
}

// move moves tenant t's stopped sandbox id from node from to node to
// (steps in the comment above).
func (s *Server) move(ctx context.Context, t, id string, from, to Node) error {
	step := func(ctx context.Context, n Node, method, path string, in any) error {
		ctx, cancel := context.WithTimeout(ctx, moveStepTimeout)
		defer cancel()
		return s.callNodeWith(ctx, n, method, path, t, in, nil)
	}
	release := func() {
		if err := step(ctx, from, http.MethodDelete, movePath(t, id, "hold"), nil); err != nil {
			s.log.ErrorContext(ctx, "releasing the hold of a move that failed; a drain run again releases it", "sandbox", id, "node", from.Name, "err", err)
		}
	}
	dropTargetCopy := func() error {
		err := step(ctx, to, http.MethodDelete, "/v1/sandboxes/"+url.PathEscape(id), nil)
		if hasCode(err, api.CodeSandboxNotFound) {
			return nil
		}
		return err
	}
	if err := step(ctx, from, http.MethodPost, movePath(t, id, "hold"), map[string]string{"node": to.Name}); err != nil {
		return fmt.Errorf("holding it on %s: %w", from.Name, err)
	}
	if err := dropTargetCopy(); err != nil {
		release()
		return fmt.Errorf("removing an unplaced copy of it from %s: %w", to.Name, err)
	}
	mctx, cancel := context.WithTimeout(ctx, moveTimeout)
	err := s.callNodeWith(mctx, to, http.MethodPost, movePath(t, id, "move-in"), t, map[string]string{"from": from.Name}, nil)
	cancel()
	if err != nil {
		if derr := dropTargetCopy(); derr != nil {
			s.log.ErrorContext(ctx, "removing the copy of a move that failed", "sandbox", id, "node", to.Name, "err", derr)
		}
		release()
		return fmt.Errorf("copying it to %s: %w", to.Name, err)
	}
	scoped := tenant.Scope(t, id)
	if err := s.opts.Directory.Move(ctx, scoped, from.Name, to.Name); err != nil {
		if derr := dropTargetCopy(); derr != nil {
			s.log.ErrorContext(ctx, "removing the copy of a move that failed", "sandbox", id, "node", to.Name, "err", derr)
		}
		release()
		return fmt.Errorf("placing it on %s: %w", to.Name, err)
	}
	s.place.remember(scoped, to.Name)
	if err := step(ctx, from, http.MethodPost, movePath(t, id, "finish"), nil); err != nil {
		// Moved all the same: the copy left on the source is held (it
		// answers SANDBOX_MOVING) and not placed; a drain run again
		// removes it.
		s.log.ErrorContext(ctx, "removing a moved sandbox's old copy; a drain run again removes it", "sandbox", id, "node", from.Name, "err", err)
	}
	s.log.InfoContext(ctx, "sandbox moved", "sandbox", id, "from", from.Name, "to", to.Name)
	return nil
}

// finishMove removes from node n the copy of tenant t's sandbox id,
// which the directory places on node placed: a move that flipped its
// placement and stopped before its last step.
func (s *Server) finishMove(ctx context.Context, n Node, t, id, placed string) error {
	ctx, cancel := context.WithTimeout(ctx, moveStepTimeout)
	defer cancel()
	if err := s.callNodeWith(ctx, n, http.MethodPost, movePath(t, id, "hold"), t, map[string]string{"node": placed}, nil); err != nil {
		return fmt.Errorf("it is placed on %s; holding its old copy here: %w", placed, err)
	}
	if err := s.callNodeWith(ctx, n, http.MethodPost, movePath(t, id, "finish"), t, nil, nil); err != nil {
		return fmt.Errorf("it is placed on %s; removing its old copy here: %w", placed, err)
	}
	return nil
}

// hasCode reports whether err is a node's API error with code.
func hasCode(err error, code api.Code) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Code == code
}
