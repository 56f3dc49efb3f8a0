package e2e

import (
	"errors"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// sizedPattern is a patternReader whose length the SDK sends ahead
// (Content-Length), as curl does for a file.
type sizedPattern struct{ *patternReader }

func (s sizedPattern) Len() int { return int(s.size - s.off) }

// TestFullDiskIsNoSpace: once a sandbox's disk quota is full, every call
// that needs the disk says NO_SPACE: raw uploads however large, with or
// without a length (never SANDBOX_UNAVAILABLE: the agent stops writing but
// still reads the body, so the answer is not lost to a broken
// connection); starting a process (never INTERNAL_ERROR); creating a
// session (never 201 for a session whose state was not saved: it is not
// created). Once space is freed, all of it works again.
func TestFullDiskIsNoSpace(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("disk-full", client.WithLimits(api.Limits{DiskBytes: 64 << 20}))
	ctx := ctxT(t, 5*time.Minute)
	// Fill every block: one large file, then small ones until none fits.
	run(t, sb, "head -c 100000000 /dev/zero > /workspace/fill 2>/dev/null; i=0; while echo x 2>/dev/null > /workspace/f$i; do i=$((i+1)); done; true")

	for i, size := range []int64{8 << 20, 200 << 20, 200 << 20, 1 << 30} {
		body := newPatternReader(size)
		var err error
		if i%2 == 0 {
			_, err = sb.Upload(ctx, "/workspace/up", sizedPattern{body})
		} else {
			_, err = sb.Upload(ctx, "/workspace/up", body)
		}
		if codeOf(err) != api.CodeNoSpace {
			t.Errorf("upload %d (%d MiB, sized %v) into a full disk: %v, want NO_SPACE", i, size>>20, i%2 == 0, err)
		}
	}
	if _, err := sb.StartProcess(ctx, "sleep 100"); codeOf(err) != api.CodeNoSpace {
		t.Errorf("starting a process on a full disk: %v, want NO_SPACE", err)
	}
	if procs, err := sb.ListProcesses(ctx); err != nil || len(procs) != 0 {
		t.Errorf("processes after the refused start: %+v %v, want none", procs, err)
	}
	if _, err := sb.CreateSession(ctx, client.WithSessionID("unsaved")); codeOf(err) != api.CodeNoSpace {
		t.Errorf("creating a session on a full disk: %v, want NO_SPACE", err)
	}
	if _, err := sb.GetSession(ctx, "unsaved"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the refused session exists: %v", err)
	}

	run(t, sb, "rm -f /workspace/fill /workspace/f*")
	if _, err := sb.Upload(ctx, "/workspace/up", sizedPattern{newPatternReader(8 << 20)}); err != nil {
		t.Errorf("upload after freeing space: %v", err)
	}
	p, err := sb.StartProcess(ctx, "echo started")
	if err != nil {
		t.Fatalf("starting a process after freeing space: %v", err)
	}
	if code, err := p.WaitForExit(ctx, time.Minute); err != nil || code != 0 {
		t.Errorf("waiting for it: %d %v", code, err)
	}
	if _, err := sb.CreateSession(ctx, client.WithSessionID("saved")); err != nil {
		t.Errorf("creating a session after freeing space: %v", err)
	}
}
