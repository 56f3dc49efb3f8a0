package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TestSandboxListIsWrittenAsTheWireType: the list written a row at a time
// is the api.SandboxList json.Marshal would write, give or take
// whitespace, with the next page's token after the last row when there
// are more, for an empty page, one row and several.
func TestSandboxListIsWrittenAsTheWireType(t *testing.T) {
	at := time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC)
	infos := []sandbox.Info{
		{ID: "a", Status: sandbox.StatusRunning, Image: "host", Runtime: "crun", CreatedAt: at, LastUsedAt: at,
			IdleDeadline: at.Add(time.Hour), Config: sandbox.Config{Labels: map[string]string{"k": "v <&>"}}},
		{ID: "acme/b", Status: sandbox.StatusSleeping, Image: "acme/py", Runtime: "gvisor", StatusReason: "idle for 10m0s"},
		{ID: "c", Status: sandbox.StatusStopped, Address: "10.0.0.2", HostUIDBase: 100000},
	}
	for _, tc := range []struct {
		name  string
		infos []sandbox.Info
		more  bool
	}{
		{"empty", nil, false},
		{"one", infos[:1], false},
		{"several with more", infos, true},
		{"several, last page", infos, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := writeSandboxList(rec, func(each func(sandbox.Info)) bool {
				for _, inf := range tc.infos {
					each(inf)
				}
				return tc.more
			})
			if err != nil {
				t.Fatal(err)
			}
			want := api.SandboxList{Sandboxes: []api.Sandbox{}}
			for _, inf := range tc.infos {
				want.Sandboxes = append(want.Sandboxes, toWire(inf))
			}
			if tc.more {
				want.NextPageToken = encodePageToken(tc.infos[len(tc.infos)-1].ID)
			}
			wantJSON, _ := json.Marshal(want)
			var got bytes.Buffer
			if err := json.Compact(&got, rec.Body.Bytes()); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, rec.Body.Bytes())
			}
			if diff := cmp.Diff(string(wantJSON), got.String()); diff != "" {
				t.Errorf("list (-json.Marshal +written):\n%s", diff)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" || rec.Code != 200 {
				t.Errorf("status %d, Content-Type %q", rec.Code, ct)
			}
		})
	}
}
