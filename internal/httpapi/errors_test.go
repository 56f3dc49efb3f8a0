package httpapi

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TestFailuresAreLoggedByWhoseFaultTheyAre: a full host or a moving
// sandbox is a warning, a bug an error, a caller's mistake debug (without
// its cause, which may quote what the caller sent); the level follows the
// code wherever the failure came from.
func TestFailuresAreLoggedByWhoseFaultTheyAre(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("creating demo: %w", sandbox.ErrCapacity), "level=WARN"},
		{&sandbox.MovingError{Node: "n2"}, "level=WARN"},
		{api.Errorf(api.CodeNodeUnavailable, "node n1 is unavailable"), "level=WARN"},
		{api.Errorf(api.CodeBucketUnreachable, "no answer"), "level=WARN"},
		{fmt.Errorf("starting demo: %w", sandbox.ErrFailed), "level=ERROR"},
		{fmt.Errorf("a bug"), "level=ERROR"},
		{fmt.Errorf("demo: %w", sandbox.ErrNotFound), "level=DEBUG"},
		{api.Errorf(api.CodeQuotaExceeded, "quota maxSandboxes"), "level=DEBUG"},
	} {
		var buf bytes.Buffer
		s := New(Options{Token: "s3cret", Log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		s.writeError(httptest.NewRecorder(), httptest.NewRequest("PUT", "/v1/sandboxes/demo", nil), tc.err)
		line := buf.String()
		if !strings.Contains(line, tc.want) {
			t.Errorf("%v: logged %q, want %s", tc.err, line, tc.want)
		}
		if tc.want == "level=DEBUG" && strings.Contains(line, "err=") {
			t.Errorf("%v: a caller's mistake is logged with its cause: %q", tc.err, line)
		}
	}
}
