package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// testClusterImages: an image imported through the gateway lands on every
// node, is listed with them, runs a sandbox on each node, cannot be removed
// while those use it, and is removed from every node through the gateway;
// builds answer NOT_SUPPORTED_ON_GATEWAY.
func testClusterImages(ctx context.Context, t *testing.T, c *testCluster) {
	img := imageOf(t, v1.Config{Env: []string{"PATH=/bin"}},
		layerOf(t, busyboxFiles(t)...), layerOf(t, dir("srv"), file{name: "srv/mark", body: "seeded\n"}))
	var buf bytes.Buffer
	tag, _ := name.NewTag("example.com/test/seeded:latest")
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	want, _ := img.ConfigName()
	all := []string{"node-0", "node-1", "node-2"}
	got, err := c.client.ImportImage(ctx, &buf, "seeded")
	if err != nil || got.Digest != want.String() || !slices.Equal(got.Nodes, all) {
		t.Fatalf("import through the gateway: %+v %v, want %s on %v", got, err, want, all)
	}
	list, err := c.client.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(im api.Image) bool { return im.Digest == want.String() })
	if i < 0 || !slices.Equal(list[i].Nodes, all) || !slices.Contains(list[i].Names, "seeded") {
		t.Fatalf("the gateway's list: %+v", list)
	}
	for _, d := range c.nodes {
		if im, err := d.Client.Image(ctx, "seeded"); err != nil || im.Digest != want.String() {
			t.Errorf("the image on a node: %+v %v", im, err)
		}
	}

	// A sandbox of the image on each node, placed there by its zone label.
	var wg sync.WaitGroup
	for i, node := range all {
		wg.Go(func() {
			sb := c.client.Sandbox(fmt.Sprintf("seeded-%d", i), client.WithOptions(api.SandboxOptions{
				Image: "seeded", NodeSelector: map[string]string{"zone": fmt.Sprintf("z%d", i)}}))
			info, err := sb.Ensure(ctx)
			if err != nil || info.Node != node {
				t.Errorf("create from the image on %s: %+v %v", node, info, err)
				return
			}
			// Not run(): t.Fatal belongs to the test's own goroutine.
			res, err := sb.Exec(ctx, "cat /srv/mark")
			if err != nil || res.ExitCode != 0 || trim(res.Stdout) != "seeded" {
				t.Errorf("in the sandbox on %s: %+v %v", node, res, err)
			}
		})
	}
	wg.Wait()

	var apiErr *client.Error
	if err := c.client.RemoveImage(ctx, "seeded"); !errors.As(err, &apiErr) || apiErr.Code != api.CodeImageInUse || apiErr.Details["failed"] == nil {
		t.Errorf("removing the image in use: %v (%+v), want IMAGE_IN_USE naming the nodes", err, apiErr)
	}
	for i := range all {
		if err := c.client.Sandbox(fmt.Sprintf("seeded-%d", i)).Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A node keeps an image it has just resolved for a sandbox for a few
	// seconds: retry the remove until then.
	waitFor(t, 60*time.Second, func() bool {
		err := c.client.RemoveImage(ctx, "seeded")
		if err != nil && !errors.Is(err, client.ErrConflict) {
			t.Fatalf("remove through the gateway: %v", err)
		}
		return err == nil
	}, "the image removed through the gateway")
	for _, d := range c.nodes {
		if _, err := d.Client.Image(ctx, "seeded"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("the image on a node after the remove: %v", err)
		}
	}
	if _, err := c.client.Image(ctx, "seeded"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the image through the gateway after the remove: %v", err)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.gateways[0]+"/v1/images/build-base", nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("build-base on the gateway: %s, want 501 NOT_SUPPORTED_ON_GATEWAY", resp.Status)
	}
}
