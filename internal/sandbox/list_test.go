package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// listFixture is a real registry and manager holding n sandboxes of each
// of the tenants "acme" and "other" (rows only: none runs), served by the
// real API server. Every third sandbox is running, every second has the
// label team=ml.
type listFixture struct {
	srv      http.Handler
	acme     string // acme's key
	other    string
	adminKey string
}

func newListFixture(t testing.TB, n int) *listFixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	for _, tn := range []string{"acme", "other"} {
		for i := range n {
			cfg := sandbox.Config{Image: "host", Labels: map[string]string{"n": fmt.Sprint(i)}}
			if i%2 == 0 {
				cfg.Labels["team"] = "ml"
			}
			status := sandbox.StatusSleeping
			if i%3 == 0 {
				status = sandbox.StatusRunning
			}
			data, _ := json.Marshal(cfg)
			err := st.Insert(ctx, store.Sandbox{ID: tenant.Scope(tn, fmt.Sprintf("sb-%05d", i)), Key: fmt.Sprintf("%s%06d", tn[:2], i),
				Status: string(status), Image: "host", Runtime: "crun", Config: data, NetSlot: -1,
				CreatedAt: now, LastUsedAt: now, StatusChangedAt: now})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	rows, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := tenant.OpenKeys(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	m := sandbox.New(sandbox.Options{Store: st, Log: log, Quotas: keys.QuotaOf})
	if err := m.LoadRowsForTest(rows); err != nil {
		t.Fatal(err)
	}
	f := &listFixture{adminKey: "admin-token"}
	_, f.acme, _ = keys.Create(ctx, "acme", false, tenant.Quota{})
	_, f.other, _ = keys.Create(ctx, "other", false, tenant.Quota{})
	f.srv = httpapi.New(httpapi.Options{Manager: m, Keys: keys, Token: f.adminKey, Log: log})
	return f
}

func (f *listFixture) list(t testing.TB, key string, q url.Values) (api.SandboxList, int) {
	req := httptest.NewRequest("GET", "/v1/sandboxes?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	var out api.SandboxList
	if rec.Code == 200 {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
	}
	return out, rec.Code
}

// TestListPagesAndFilters walks every page of one tenant's list with and
// without filters, through the real API server and registry.
func TestListPagesAndFilters(t *testing.T) {
	const n = 1000
	f := newListFixture(t, n)
	for _, tt := range []struct {
		name string
		q    url.Values
		want int
	}{
		{"all", url.Values{}, n},
		{"label", url.Values{"label": {"team=ml"}}, n / 2},
		{"status", url.Values{"status": {"running"}}, (n + 2) / 3},
		{"label and status", url.Values{"label": {"team=ml"}, "status": {"running"}}, (n + 5) / 6},
		{"two labels", url.Values{"label": {"team=ml", "n=10"}}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			q := tt.q
			q.Set("limit", "97")
			last := ""
			for pages := 0; ; pages++ {
				page, code := f.list(t, f.acme, q)
				if code != 200 || pages > n {
					t.Fatalf("page %d: %d", pages, code)
				}
				for _, sb := range page.Sandboxes {
					if sb.Tenant != "acme" || seen[sb.ID] || sb.ID <= last {
						t.Fatalf("page %d has %s/%s (last %s)", pages, sb.Tenant, sb.ID, last)
					}
					seen[sb.ID], last = true, sb.ID
				}
				if page.NextPageToken == "" {
					break
				}
				q.Set("pageToken", page.NextPageToken)
			}
			if len(seen) != tt.want {
				t.Errorf("%d sandboxes over all pages, want %d", len(seen), tt.want)
			}
		})
	}
	// The admin sees both tenants; ?tenant= one.
	if page, _ := f.list(t, f.adminKey, url.Values{}); len(page.Sandboxes) != api.MaxListLimit || page.NextPageToken == "" {
		t.Errorf("admin's first page: %d, next %q", len(page.Sandboxes), page.NextPageToken)
	}
	if page, _ := f.list(t, f.adminKey, url.Values{"tenant": {"other"}, "limit": {"5"}}); len(page.Sandboxes) != 5 || page.Sandboxes[0].Tenant != "other" {
		t.Errorf("admin's ?tenant=other: %+v", page.Sandboxes)
	}
	// A page token only marks a position: another tenant's does not open
	// its list.
	other, _ := f.list(t, f.other, url.Values{"limit": {"1"}})
	page, _ := f.list(t, f.acme, url.Values{"pageToken": {other.NextPageToken}})
	for _, sb := range page.Sandboxes {
		if sb.Tenant != "acme" {
			t.Errorf("acme with other's token lists %s/%s", sb.Tenant, sb.ID)
		}
	}
	for _, q := range []url.Values{{"limit": {"0"}}, {"limit": {"1001"}}, {"limit": {"x"}}, {"status": {"gone"}},
		{"label": {"novalue"}}, {"pageToken": {"nope"}}, {"tenant": {"other"}}} {
		if _, code := f.list(t, f.acme, q); code != 400 && code != 403 {
			t.Errorf("%v: %d", q, code)
		}
	}
}

// BenchmarkListFirstPage lists the first page (100) of a tenant with
// 10 000 sandboxes, on a daemon holding another tenant's 10 000 too,
// through the real API server: authentication, scoping, the manager's
// page and JSON.
func BenchmarkListFirstPage(b *testing.B) {
	f := newListFixture(b, 10000)
	q := url.Values{"limit": {"100"}}
	for _, bm := range []struct {
		name string
		q    url.Values
	}{
		{"all", q},
		{"label", url.Values{"limit": {"100"}, "label": {"team=ml"}}},
		{"status", url.Values{"limit": {"100"}, "status": {"running"}}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				page, code := f.list(b, f.acme, bm.q)
				if code != 200 || len(page.Sandboxes) != 100 || page.NextPageToken == "" {
					b.Fatalf("%d: %d sandboxes", code, len(page.Sandboxes))
				}
			}
		})
	}
}
