package agentapi

import (
	"context"
	"net/http"
	"testing"
)

type recordingTransport struct{ reqs []*http.Request }

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.reqs = append(t.reqs, r)
	return &http.Response{StatusCode: http.StatusAccepted, Body: http.NoBody, Header: http.Header{}}, nil
}

// A suspend carries a name the agent was not told yet, and only then.
func TestSuspendCarriesAPendingName(t *testing.T) {
	rt := &recordingTransport{}
	c := NewClient(rt)
	if err := c.Suspend(context.Background(), "user-123"); err != nil {
		t.Fatal(err)
	}
	if err := c.Suspend(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if got := rt.reqs[0].Header.Get(NameHeader); got != "user-123" {
		t.Errorf("first suspend: %s = %q, want user-123", NameHeader, got)
	}
	if got, ok := rt.reqs[1].Header[NameHeader]; ok {
		t.Errorf("second suspend: %s = %q, want none", NameHeader, got)
	}
	if rt.reqs[0].URL.Path != PathSuspend {
		t.Errorf("path %s, want %s", rt.reqs[0].URL.Path, PathSuspend)
	}
}
