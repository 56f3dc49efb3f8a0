package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// tenantClient creates the API key name on d and returns a client that
// uses it.
func tenantClient(t *testing.T, d *testdaemon.Daemon, req api.KeyCreateRequest) (*client.Client, string) {
	t.Helper()
	k, err := d.Client.CreateKey(ctxT(t, time.Minute), req)
	if err != nil {
		t.Fatalf("creating key %s: %v", req.Name, err)
	}
	if k.Name != req.Name || !strings.HasPrefix(k.Key, "sbx_") {
		t.Fatalf("created key %+v", k)
	}
	c, err := client.New(d.URL, client.WithToken(k.Key))
	if err != nil {
		t.Fatal(err)
	}
	return c, k.Key
}

func wantCode(t *testing.T, what string, err error, code api.Code) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Errorf("%s: got %v, want %s", what, err, code)
	}
}

// TestTenantsCannotReachEachOther gives two tenants a sandbox of the same
// ID and tenant A one more, and has B try every route family on A's.
func TestTenantsCannotReachEachOther(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 5*time.Minute)
	ca, keyA := tenantClient(t, d, api.KeyCreateRequest{Name: "team-a"})
	cb, keyB := tenantClient(t, d, api.KeyCreateRequest{Name: "team-b"})

	// B listens for lifecycle events before A does anything.
	evB, err := cb.Events(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer evB.Close()

	aDemo, bDemo := ca.Sandbox("demo"), cb.Sandbox("demo")
	run(t, aDemo, "echo team-a > /workspace/owner")
	run(t, bDemo, "echo team-b > /workspace/owner")
	only := ca.Sandbox("a-only")
	run(t, only, "echo secret > /workspace/secret")

	t.Run("same ID, different sandboxes", func(t *testing.T) {
		if got := trim(run(t, aDemo, "cat /workspace/owner; hostname")); got != "team-a\ndemo" {
			t.Errorf("A's demo: %q", got)
		}
		if got := trim(run(t, bDemo, "cat /workspace/owner; hostname")); got != "team-b\ndemo" {
			t.Errorf("B's demo: %q", got)
		}
		ia, err := aDemo.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ib, err := bDemo.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ia.ID != "demo" || ia.Tenant != "team-a" || ib.Tenant != "team-b" || ia.CreatedAt.Equal(ib.CreatedAt) && ia.Network.Address == ib.Network.Address {
			t.Errorf("infos: A %+v, B %+v", ia, ib)
		}
	})

	t.Run("list", func(t *testing.T) {
		for _, tc := range []struct {
			c    *client.Client
			want string
		}{{ca, "a-only,demo"}, {cb, "demo"}} {
			list, err := tc.c.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, sb := range list {
				ids = append(ids, sb.ID)
			}
			if got := strings.Join(ids, ","); got != tc.want {
				t.Errorf("list: %s, want %s", got, tc.want)
			}
		}
		// The admin sees both tenants, with the tenant.
		all, err := d.Client.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, sb := range all {
			got = append(got, sb.Tenant+"/"+sb.ID)
		}
		if strings.Join(got, ",") != "team-a/a-only,team-a/demo,team-b/demo" {
			t.Errorf("admin list: %v", got)
		}
		onlyB, err := d.Client.ListAll(ctx, client.ListOptions{Tenant: "team-b"})
		if err != nil || len(onlyB) != 1 || onlyB[0].Tenant != "team-b" {
			t.Errorf("admin list of team-b: %+v %v", onlyB, err)
		}
	})

	t.Run("read-only routes answer 404", func(t *testing.T) {
		other := cb.Sandbox("a-only")
		_, err := other.Info(ctx)
		wantCode(t, "info", err, api.CodeSandboxNotFound)
		_, err = other.Stop(ctx)
		wantCode(t, "stop", err, api.CodeSandboxNotFound)
		_, err = other.Restart(ctx)
		wantCode(t, "restart", err, api.CodeSandboxNotFound)
		keep := true
		_, err = other.Update(ctx, nil, &keep)
		wantCode(t, "update", err, api.CodeSandboxNotFound)
		wantCode(t, "destroy", other.Destroy(ctx), api.CodeSandboxNotFound)
		if _, err := only.Info(ctx); err != nil {
			t.Errorf("A's sandbox after B's attempts: %v", err)
		}
	})

	t.Run("exec and files reach the caller's own sandbox", func(t *testing.T) {
		// The forwarding routes (exec, files, processes, sessions, code,
		// terminals) take the same scoped ID: B's exec in "demo" runs in
		// B's demo, and nothing of A's is visible.
		if code, out := exitOf(t, bDemo, "cat /workspace/secret"); code == 0 {
			t.Errorf("B read A's file: %s", out)
		}
		f, err := bDemo.ReadFile(ctx, "/workspace/owner")
		if err != nil || trim(string(f.Content)) != "team-b" {
			t.Errorf("B's file: %+v %v", f, err)
		}
	})

	t.Run("expose and preview", func(t *testing.T) {
		testdaemon.StartTestServer(t, aDemo, "0.0.0.0:8080")
		pa, err := aDemo.ExposePort(ctx, 8080, client.Private())
		if err != nil {
			t.Fatal(err)
		}
		if list, err := bDemo.ExposedPorts(ctx); err != nil || len(list) != 0 {
			t.Errorf("B's demo lists ports %+v %v", list, err)
		}
		c := previewClient(d)
		for _, tc := range []struct {
			key  string
			want int
		}{{keyA, 200}, {keyB, 401}, {"", 401}, {d.Token, 200}} {
			h := http.Header{}
			if tc.key != "" {
				h.Set("Authorization", "Bearer "+tc.key)
			}
			status, body, _ := get(t, c, pa.URL+"echo/", h)
			if status != tc.want {
				t.Errorf("A's private preview with key %.8s: %d, want %d", tc.key, status, tc.want)
			}
			if status == 200 && (!strings.Contains(body, `"hostname":"demo"`) || strings.Contains(body, "sbx_") || strings.Contains(body, d.Token)) {
				t.Errorf("preview body: %s", body)
			}
		}
		// B's demo exposing the same port gets another preview host, and
		// cannot choose A's token to collide with A's.
		testdaemon.StartTestServer(t, bDemo, "0.0.0.0:8080")
		_, err = bDemo.ExposePort(ctx, 8080, client.WithPreviewToken(pa.Token))
		wantCode(t, "B exposing with A's token", err, api.CodeValidationFailed)
		pb, err := bDemo.ExposePort(ctx, 8080, client.Private())
		if err != nil {
			t.Fatal(err)
		}
		if pb.URL == pa.URL {
			t.Fatalf("same preview URL for both tenants' demo: %s", pb.URL)
		}
		h := http.Header{"Authorization": {"Bearer " + keyB}}
		if status, body, _ := get(t, c, pb.URL+"echo/", h); status != 200 {
			t.Errorf("B's own preview: %d %s", status, body)
		}
	})

	t.Run("snapshots and forks", func(t *testing.T) {
		snap, err := only.Snapshot(ctx, "ready", client.SnapshotOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if snap.Name != "ready" || snap.Sandbox != "a-only" || snap.Tenant != "team-a" {
			t.Errorf("A's snapshot: %+v", snap)
		}
		_, err = cb.Sandbox("a-only").Snapshot(ctx, "mine", client.SnapshotOptions{})
		wantCode(t, "B snapshots A's sandbox", err, api.CodeSandboxNotFound)
		if list, err := cb.ListSnapshots(ctx); err != nil || len(list) != 0 {
			t.Errorf("B lists snapshots %+v %v", list, err)
		}
		_, err = cb.Snapshot(ctx, "ready")
		wantCode(t, "B inspects A's snapshot", err, api.CodeSnapshotNotFound)
		wantCode(t, "B removes A's snapshot", cb.RemoveSnapshot(ctx, "ready"), api.CodeSnapshotNotFound)
		_, err = cb.Sandbox("fork", client.WithFromSnapshot("ready")).Ensure(ctx)
		wantCode(t, "B forks A's snapshot", err, api.CodeSnapshotNotFound)
		_, err = cb.Sandbox("fork", client.WithFromSnapshot("team-a.-ready")).Ensure(ctx)
		wantCode(t, "B names A's snapshot as stored", err, api.CodeInvalidSnapshotName)
		// A forks its own; the admin sees the snapshot with its tenant.
		fork := ca.Sandbox("a-fork", client.WithFromSnapshot("ready"))
		if got := trim(run(t, fork, "cat /workspace/secret")); got != "secret" {
			t.Errorf("A's fork: %q", got)
		}
		all, err := d.Client.ListSnapshots(ctx)
		if err != nil || len(all) != 1 || all[0].Tenant != "team-a" || all[0].Name != "ready" {
			t.Errorf("admin's snapshots: %+v %v", all, err)
		}
		if err := fork.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ca.RemoveSnapshot(ctx, "ready"); err != nil {
			t.Error(err)
		}
	})

	t.Run("mounts and secrets", func(t *testing.T) {
		aws := map[string]string{"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
		if err := ca.SetSecret(ctx, "aws", aws); err != nil {
			t.Fatal(err)
		}
		if list, err := cb.Secrets(ctx); err != nil || len(list) != 0 {
			t.Errorf("B lists secrets %+v %v", list, err)
		}
		wantCode(t, "B removes A's secret", cb.RemoveSecret(ctx, "aws"), api.CodeSecretNotFound)
		_, err := bDemo.MountBucket(ctx, "bucket", "/mnt/b", client.MountOptions{Endpoint: "http://127.0.0.1:1", Secret: "aws"})
		wantCode(t, "B mounts with A's secret", err, api.CodeSecretNotFound)
		_, err = cb.Sandbox("a-only").Mounts(ctx)
		wantCode(t, "B lists A's mounts", err, api.CodeSandboxNotFound)
		wantCode(t, "B unmounts in A's sandbox", cb.Sandbox("a-only").UnmountBucket(ctx, "/mnt/x"), api.CodeSandboxNotFound)
		if list, err := ca.Secrets(ctx); err != nil || len(list) != 1 || list[0].Name != "aws" {
			t.Errorf("A's secrets %+v %v", list, err)
		}
		if err := ca.RemoveSecret(ctx, "aws"); err != nil {
			t.Error(err)
		}
	})

	t.Run("a tenant's bucket mount cannot make the host reach what only the host reaches", func(t *testing.T) {
		creds := &api.BucketCredentials{AccessKeyID: "a", SecretAccessKey: "b"}
		info, err := bDemo.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		endpoints := []string{"http://127.0.0.1:7070", "http://localhost:9000", "http://[::1]:9000",
			"http://169.254.169.254", "http://0.0.0.0:9000"}
		if info.Network.Address != "" { // another sandbox
			endpoints = append(endpoints, "http://"+info.Network.Address+":8080")
		}
		for _, ep := range endpoints {
			_, err := aDemo.MountBucket(ctx, "bucket", "/mnt/b", client.MountOptions{Endpoint: ep, Credentials: creds})
			wantCode(t, "A mounts "+ep, err, api.CodeBucketEndpointForbidden)
		}
		// The admin is the operator: its mounts may name any endpoint (this
		// one does not answer).
		_, err = d.Client.Sandbox("admin-bucket").MountBucket(ctx, "bucket", "/mnt/b", client.MountOptions{Endpoint: "http://127.0.0.1:1", Credentials: creds})
		wantCode(t, "the admin mounts a loopback endpoint", err, api.CodeBucketUnreachable)
		if err := d.Client.Sandbox("admin-bucket").Destroy(ctx); err != nil {
			t.Error(err)
		}
	})

	t.Run("a tenant's sandbox cannot open the host's own addresses", func(t *testing.T) {
		// allowHostCidrs opens every port at the host addresses it names
		// (other tenants' services on the host, the daemon's API): without
		// --host-access-allow no tenant sandbox may name one, however it
		// asks. The admin's own sandboxes may
		// (TestNetworkInternetBlocksTheHostUnlessAllowed).
		admA, _ := client.New(d.URL, client.WithToken(d.Token), client.WithTenant("team-a"))
		for _, tc := range []struct {
			what string
			sb   *client.Sandbox
		}{
			{"a new sandbox", ca.Sandbox("host-peek", client.WithNetwork(api.NetworkOptions{
				Mode: api.NetworkInternet, AllowHostCIDRs: []string{"10.0.0.1/32"}}))},
			{"everything", ca.Sandbox("host-peek", client.WithNetwork(api.NetworkOptions{
				Mode: api.NetworkInternet, AllowHostCIDRs: []string{"0.0.0.0/0"}}))},
			{"an existing sandbox's options", ca.Sandbox("demo", client.WithNetwork(api.NetworkOptions{
				Mode: api.NetworkInternet, AllowHostCIDRs: []string{"10.0.0.1/32"}}))},
			// The sandbox is the tenant's, and so is the code it runs; the
			// E2B layer calls this way for a tenant's key.
			{"an admin acting as the tenant", admA.Sandbox("host-peek", client.WithNetwork(api.NetworkOptions{
				Mode: api.NetworkInternet, AllowHostCIDRs: []string{"10.0.0.1/32"}}))},
		} {
			_, err := tc.sb.Ensure(ctx)
			wantCode(t, tc.what, err, api.CodeHostAccessForbidden)
		}
		if _, err := ca.Sandbox("host-peek").Info(ctx); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("a refused create made a sandbox: %v", err)
		}
		// The policy a running sandbox may change has no host addresses.
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, d.URL+"/v1/sandboxes/demo/network",
			strings.NewReader(`{"allowHostCidrs":["10.0.0.1/32"]}`))
		req.Header.Set("Authorization", "Bearer "+keyA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "allowHostCidrs") {
			t.Errorf("a network update naming host addresses: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("volumes", func(t *testing.T) {
		// Both tenants have a "data"; only A has "a-vol".
		for _, v := range []struct {
			c    *client.Client
			name string
		}{{ca, "data"}, {ca, "a-vol"}, {cb, "data"}} {
			if got, err := v.c.CreateVolume(ctx, v.name, 64<<20); err != nil || got.Name != v.name {
				t.Fatalf("creating %s: %+v %v", v.name, got, err)
			}
		}
		aVol := ca.Sandbox("a-vol-user", client.WithVolume("data", "/data", false))
		bVol := cb.Sandbox("b-vol-user", client.WithVolume("data", "/data", false))
		run(t, aVol, "echo team-a > /data/owner")
		if got := trim(run(t, bVol, "cat /data/owner 2>&1; ls -A /data")); strings.Contains(got, "team-a") {
			t.Errorf("B's data shows A's files: %q", got)
		}
		_, err := cb.Sandbox("b-steals", client.WithVolume("a-vol", "/data", false)).Ensure(ctx)
		wantCode(t, "B mounts A's volume", err, api.CodeVolumeNotFound)
		_, err = cb.Sandbox("b-steals", client.WithVolume("team-a.-a-vol", "/data", false)).Ensure(ctx)
		wantCode(t, "B names A's volume as stored", err, api.CodeValidationFailed)
		wantCode(t, "B removes A's volume", cb.RemoveVolume(ctx, "a-vol"), api.CodeVolumeNotFound)
		list, err := cb.Volumes(ctx)
		if err != nil || len(list) != 1 || list[0].Name != "data" || strings.Join(list[0].Sandboxes, ",") != "b-vol-user" {
			t.Errorf("B's volumes: %+v %v", list, err)
		}
		all, err := d.Client.Volumes(ctx)
		var got []string
		for _, v := range all {
			got = append(got, v.Tenant+"/"+v.Name)
		}
		if err != nil || strings.Join(got, ",") != "team-a/a-vol,team-a/data,team-b/data" {
			t.Errorf("the admin's volumes: %v %v", got, err)
		}
		if inf, err := aVol.Info(ctx); err != nil || len(inf.Volumes) != 1 || inf.Volumes[0].Name != "data" {
			t.Errorf("A's sandbox's volumes: %+v %v", inf, err)
		}
		for _, sb := range []*client.Sandbox{aVol, bVol} {
			if err := sb.Destroy(ctx); err != nil {
				t.Error(err)
			}
		}
		for _, v := range []struct {
			c    *client.Client
			name string
		}{{ca, "data"}, {ca, "a-vol"}, {cb, "data"}} {
			if err := v.c.RemoveVolume(ctx, v.name); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("images", func(t *testing.T) {
		bb := layerOf(t, busyboxFiles(t)...)
		aImg := importImage(t, ca, imageOf(t, v1.Config{Env: []string{"PATH=/bin", "WHO=team-a"}}, bb), "tool")
		shared := importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin", "WHO=admin"}}, bb), "shared-tool")
		names := func(c *client.Client) map[string]bool {
			list, err := c.ListImages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]bool{}
			for _, img := range list {
				for _, n := range img.Names {
					out[fmt.Sprintf("%s shared=%v", n, img.Shared)] = true
				}
			}
			return out
		}
		if got := names(ca); !got["tool shared=false"] || !got["shared-tool shared=true"] || !got["host shared=true"] {
			t.Errorf("A's images: %v", got)
		}
		if got := names(cb); got["tool shared=false"] || !got["shared-tool shared=true"] {
			t.Errorf("B's images: %v", got)
		}
		if got := names(d.Client); !got["team-a~tool shared=false"] || !got["shared-tool shared=false"] {
			t.Errorf("the admin's images: %v", got)
		}
		_, err := cb.Image(ctx, "tool")
		wantCode(t, "B inspects A's image", err, api.CodeImageNotFound)
		_, err = cb.Image(ctx, aImg.Digest)
		wantCode(t, "B inspects A's image by digest", err, api.CodeImageNotFound)
		_, err = cb.Sandbox("from-a", client.WithImage("tool")).Ensure(ctx)
		wantCode(t, "B creates from A's image", err, api.CodeImageNotFound)
		_, err = cb.Sandbox("from-a", client.WithImage(aImg.Digest)).Ensure(ctx)
		wantCode(t, "B creates from A's image by digest", err, api.CodeImageNotFound)
		wantCode(t, "B removes A's image", cb.RemoveImage(ctx, "tool"), api.CodeImageNotFound)
		wantCode(t, "B removes a shared image", cb.RemoveImage(ctx, "shared-tool"), api.CodeForbidden)
		wantCode(t, "B removes by digest", cb.RemoveImage(ctx, shared.Digest), api.CodeInvalidImageName)
		// B's own "tool" is another image; A's stays A's.
		bImg := importImage(t, cb, imageOf(t, v1.Config{Env: []string{"PATH=/bin", "WHO=team-b"}}, bb), "tool")
		if got, err := ca.Image(ctx, "tool"); err != nil || got.Digest != aImg.Digest || bImg.Digest == aImg.Digest {
			t.Errorf("A's tool after B imported one: %+v %v", got, err)
		}
		// Each tenant's sandbox runs its own "tool"; B uses the shared one too.
		fromA := ca.Sandbox("from-tool", client.WithImage("tool"))
		if got := trim(run(t, fromA, "echo $WHO")); got != "team-a" {
			t.Errorf("A's sandbox of tool: %q", got)
		}
		if got := trim(run(t, cb.Sandbox("from-shared", client.WithImage("shared-tool")), "echo $WHO")); got != "admin" {
			t.Errorf("B's sandbox of shared-tool: %q", got)
		}
		if inf, err := fromA.Info(ctx); err != nil || inf.Image != "tool" || inf.ImageDigest != aImg.Digest {
			t.Errorf("A's sandbox's image: %+v %v", inf, err)
		}
		// B removes its own tool; an image A's sandbox uses stays refused.
		if err := cb.RemoveImage(ctx, "tool"); err != nil {
			t.Error(err)
		}
		wantCode(t, "A removes the image its sandbox uses", ca.RemoveImage(ctx, "tool"), api.CodeImageInUse)
		for _, sb := range []*client.Sandbox{fromA, cb.Sandbox("from-shared")} {
			if err := sb.Destroy(ctx); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("events", func(t *testing.T) {
		// B's stream, open since before A made anything, must carry
		// none of A's events up to B's marker, made after all of A's.
		if _, err := cb.Sandbox("b-marker").Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		for {
			ev, err := evB.Next()
			if err != nil {
				t.Fatal(err)
			}
			if ev.Tenant != "team-b" || ev.SandboxID == "a-only" {
				t.Errorf("B saw %+v", ev)
			}
			if ev.SandboxID == "b-marker" {
				break
			}
		}
	})

	t.Run("admin-only routes", func(t *testing.T) {
		_, err := cb.ListKeys(ctx)
		wantCode(t, "key ls with a tenant key", err, api.CodeForbidden)
		_, err = cb.CreateKey(ctx, api.KeyCreateRequest{Name: "escalate", Admin: true})
		wantCode(t, "key create with a tenant key", err, api.CodeForbidden)
		cbAs, _ := client.New(d.URL, client.WithToken(keyB), client.WithTenant("team-a"))
		_, err = cbAs.Sandbox("a-only").Info(ctx)
		wantCode(t, "Sandbox-Tenant with a tenant key", err, api.CodeForbidden)
		// An admin acting as team-a reaches A's sandbox.
		admA, _ := client.New(d.URL, client.WithToken(d.Token), client.WithTenant("team-a"))
		if got := trim(run(t, admA.Sandbox("a-only"), "cat /workspace/secret")); got != "secret" {
			t.Errorf("admin as team-a: %q", got)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		scrape := func(key string) string {
			req, _ := http.NewRequestWithContext(ctx, "GET", d.URL+"/metrics", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
			}
			return string(body)
		}
		// A has a-only and demo; B has demo (and b-marker).
		a, b, all := scrape(keyA), scrape(keyB), scrape(d.Token)
		for _, want := range []string{`sandboxd_tenant_sandboxes{tenant="team-a"} 2`, `sandboxd_tenant_running{tenant="team-a"} `, `sandboxd_tenant_memory_bytes{tenant="team-a"} `} {
			if !strings.Contains(a, want) || !strings.Contains(all, want) {
				t.Errorf("A's and the admin's metrics lack %s:\n%s", want, a)
			}
		}
		if !strings.Contains(all, `sandboxd_tenant_sandboxes{tenant="team-b"}`) || !strings.Contains(all, "sandboxd_sandboxes{") {
			t.Errorf("the admin's metrics lack B's usage or the daemon's:\n%s", all)
		}
		for _, series := range strings.Split(a+b, "\n") {
			if series == "" || strings.HasPrefix(series, "#") {
				continue
			}
			// A tenant sees series of its own tenant or its sandboxes only.
			if !strings.Contains(series, `{tenant="team-`) && !strings.Contains(series, `{sandbox="`) {
				t.Errorf("a tenant sees the daemon-wide series %q", series)
			}
		}
		if strings.Contains(a, "team-b") || strings.Contains(b, "team-a") || strings.Contains(b, "a-only") {
			t.Errorf("a tenant sees another's series:\nA:\n%s\nB:\n%s", a, b)
		}
	})

	t.Run("destroy", func(t *testing.T) {
		if err := bDemo.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		if got := trim(run(t, aDemo, "cat /workspace/owner")); got != "team-a" {
			t.Errorf("A's demo after B destroyed its own: %q", got)
		}
	})
}

// TestRevokedKeyStopsAtOnce removes and rotates keys and checks that the
// old secret fails on the very next call.
func TestRevokedKeyStopsAtOnce(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, time.Minute)
	c, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "gone"})
	if _, err := c.List(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Client.RemoveKey(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	_, err := c.List(ctx)
	wantCode(t, "after rm", err, api.CodeUnauthorized)
	wantCode(t, "rm again", d.Client.RemoveKey(ctx, "gone"), api.CodeKeyNotFound)

	c2, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "rot"})
	k, err := d.Client.RotateKey(ctx, "rot")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c2.List(ctx)
	wantCode(t, "old secret after rotate", err, api.CodeUnauthorized)
	c3, _ := client.New(d.URL, client.WithToken(k.Key))
	if _, err := c3.List(ctx); err != nil {
		t.Errorf("new secret: %v", err)
	}
	// The registry holds hashes only.
	keys, err := d.Client.ListKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].Name != "rot" {
		t.Errorf("keys: %+v %v", keys, err)
	}
	_, err = d.Client.CreateKey(ctx, api.KeyCreateRequest{Name: "rot"})
	wantCode(t, "duplicate name", err, api.CodeKeyExists)
	_, err = d.Client.CreateKey(ctx, api.KeyCreateRequest{Name: "default"})
	wantCode(t, "reserved name", err, api.CodeValidationFailed)
}

// TestQuotasHoldUnderConcurrentCreates fires 50 creates at once at a
// tenant allowed 4 sandboxes, 2 of them running.
func TestQuotasHoldUnderConcurrentCreates(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 5*time.Minute)
	c, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "small", Quotas: api.Quotas{MaxSandboxes: 4, MaxRunning: 2}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, map[string]int{}
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Sandbox(fmt.Sprintf("q%d", i), client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone})).Ensure(ctx)
			mu.Lock()
			defer mu.Unlock()
			var e *client.Error
			switch {
			case err == nil:
				ok++
			case errors.As(err, &e) && e.Code == api.CodeQuotaExceeded && e.Status == http.StatusTooManyRequests:
				refused[fmt.Sprint(e.Details["quota"])]++
			default:
				t.Errorf("create q%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	keys, err := d.Client.ListKeys(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %+v %v", keys, err)
	}
	u := keys[0].Usage
	t.Logf("created and running %d, refused %v, usage %+v", ok, refused, u)
	if ok != 2 || u.Running != 2 || u.Sandboxes != 4 || refused["maxSandboxes"] != 46 || refused["maxRunning"] != 2 {
		t.Errorf("quotas did not hold: %d ran, refused %v, usage %+v", ok, refused, u)
	}
}

// TestTenantHostAccessFollowsTheOperator: with --host-access-allow a
// tenant's sandbox may name host addresses inside it in allowHostCidrs,
// and reaches them; an entry outside it is still HOST_ACCESS_FORBIDDEN.
func TestTenantHostAccessFollowsTheOperator(t *testing.T) {
	// Every test daemon's address pool is inside 10.0.0.0/8.
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--host-access-allow", "10.0.0.0/8"}})
	ctx := ctxT(t, 3*time.Minute)
	ca, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "team-a"})
	_, err := ca.Sandbox("loopback", client.WithNetwork(api.NetworkOptions{
		Mode: api.NetworkInternet, AllowHostCIDRs: []string{"127.0.0.1/32"}})).Ensure(ctx)
	wantCode(t, "an entry outside --host-access-allow", err, api.CodeHostAccessForbidden)
	sb := ca.Sandbox("gateway", client.WithNetwork(api.NetworkOptions{
		Mode: api.NetworkInternet, AllowHostCIDRs: []string{"10.0.0.0/8"}}))
	info, err := sb.Ensure(ctx)
	if err != nil {
		t.Fatalf("an entry inside --host-access-allow: %v", err)
	}
	gw := info.Network.Gateway
	if out := run(t, sb, fmt.Sprintf(connectScript, gw, hostServer(t, gw))); !strings.Contains(out, "hello-from-host") {
		t.Errorf("the allowed host address is not reachable: %s", out)
	}
}

// TestE2BCreatesCountAgainstTheTenantsQuota: a caller with a tenant's key
// cannot make sandboxes without end through the E2B layer: its creates
// there count against the tenant's maxSandboxes as its creates through
// the API do (docs/e2b.md), and past it the control plane answers 429
// with the quota's code while making nothing.
func TestE2BCreatesCountAgainstTheTenantsQuota(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--warm-pool", "0"}})
	tc, key := tenantClient(t, d, api.KeyCreateRequest{Name: "e2bquota", Quotas: api.Quotas{MaxSandboxes: 2}})
	t.Cleanup(func() {
		list, _ := tc.List(ctxT(t, time.Minute))
		for _, sb := range list {
			tc.Sandbox(sb.ID).Destroy(ctxT(t, time.Minute))
		}
	})
	create := func() (int, string) {
		req, _ := http.NewRequest("POST", d.URL+"/e2b/sandboxes", strings.NewReader(`{"templateID":"base"}`))
		req.Header.Set("X-API-KEY", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	for i := range 2 {
		if status, body := create(); status != http.StatusCreated {
			t.Fatalf("create %d within the quota: %d %s", i, status, body)
		}
	}
	for i := range 3 {
		if status, body := create(); status != http.StatusTooManyRequests || !strings.Contains(body, string(api.CodeQuotaExceeded)) {
			t.Errorf("create %d past the quota: %d %s, want 429 %s", i, status, body, api.CodeQuotaExceeded)
		}
	}
	if list, err := tc.List(ctxT(t, time.Minute)); err != nil || len(list) != 2 {
		t.Errorf("the tenant has %d sandboxes (%v), want its quota's 2", len(list), err)
	}
}
