package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/osthread/osthreadtest"
)

func needTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: tar2sqfs runs as nobody")
	}
	for _, tool := range []string{"tar2sqfs", "unsquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: run scripts/deps.sh", tool)
		}
	}
}

// tarOf builds a tar stream of the given entries (a name ending in "/" is
// a directory; "->" in a value makes a symlink).
func tarOf(t *testing.T, entries []tar.Header, contents map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := contents[h.Name]
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

// listImage returns unsquashfs's listing of an image, with owners.
func listImage(t *testing.T, image string) string {
	t.Helper()
	out, err := exec.Command("unsquashfs", "-lln", image).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	return string(out)
}

// TestLocalStore creates, finds, lists, expires and removes backups in
// the local store, with a clock of its own.
func TestLocalStore(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	st, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	st.now = func() time.Time { return now }
	stream := tarOf(t, []tar.Header{
		{Name: "sub/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000},
		{Name: "sub/f", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000},
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow", Mode: 0o777},
	}, map[string]string{"sub/f": "hello\n"})
	b, err := st.Create(ctx, CreateRequest{Sandbox: "src", Dir: "/work", Name: "w", TTL: time.Hour}, bytes.NewReader(stream), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size <= 0 || b.Bytes != int64(len(stream)) || !b.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("backup = %+v", b)
	}
	image, err := st.Image(ctx, b, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	got := listImage(t, image)
	for _, want := range []string{"1000/1000", "sub/f", "link -> /etc/shadow"} {
		if !bytes.Contains([]byte(got), []byte(want)) {
			t.Errorf("image listing lacks %q:\n%s", want, got)
		}
	}
	if g, err := st.Get(ctx, b.ID); err != nil || g != b {
		t.Errorf("Get = %+v, %v", g, err)
	}
	if l, err := st.List(ctx); err != nil || len(l) != 1 {
		t.Errorf("List = %+v, %v", l, err)
	}
	if _, err := st.Get(ctx, "bk-../../x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a malformed ID = %v", err)
	}

	now = now.Add(time.Hour)
	if l, _ := st.List(ctx); len(l) != 0 {
		t.Errorf("List after expiry = %+v", l)
	}
	if n, err := st.Collect(ctx); n != 1 || err != nil {
		t.Errorf("Collect = %d, %v", n, err)
	}
	if _, err := st.Get(ctx, b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after collection = %v", err)
	}
	if _, err := os.Stat(image); !os.IsNotExist(err) {
		t.Errorf("image left after collection: %v", err)
	}
}

// TestCreateBounds refuses streams over the limit, broken streams and
// hostile names, and leaves nothing behind.
func TestCreateBounds(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	st, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := tarOf(t, []tar.Header{{Name: "blob", Typeflag: tar.TypeReg, Mode: 0o644}}, map[string]string{"blob": string(make([]byte, 64<<10))})
	if _, err := st.Create(ctx, CreateRequest{Dir: "/w"}, bytes.NewReader(big), 32<<10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v", err)
	}
	if _, err := st.Create(ctx, CreateRequest{Dir: "/w"}, bytes.NewReader(big[:len(big)/2]), 1<<20); err == nil {
		t.Error("a cut stream made a backup")
	}
	if _, err := st.Create(ctx, CreateRequest{Dir: "/w", TTL: time.Millisecond}, bytes.NewReader(big), 1<<20); !errors.Is(err, ErrInvalid) {
		t.Errorf("ttl below the minimum: %v", err)
	}
	// A name climbing out of the directory stays inside the image (or
	// is refused): the image is a tree of its own.
	evil := tarOf(t, []tar.Header{{Name: "../../escape", Typeflag: tar.TypeReg, Mode: 0o644}}, map[string]string{"../../escape": "x"})
	if b, err := st.Create(ctx, CreateRequest{Dir: "/w"}, bytes.NewReader(evil), 1<<20); err == nil {
		image, _ := st.Image(ctx, b, 1<<30)
		t.Logf("hostile name packed as:\n%s", listImage(t, image))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
		t.Error("a hostile name wrote outside the store")
	}
	if e, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(e) != 0 {
		t.Errorf("temporary files left: %v", e)
	}
	if e, _ := os.ReadDir(filepath.Join(dir, "records")); len(e) > 1 {
		t.Errorf("records of failed backups: %v", e)
	}
}

// TestCreateOutlivesEndedThreads: tar2sqfs has a parent-death signal,
// which the kernel sends when the thread that forked it ends; the daemon's
// goroutines end threads all the time (a locked goroutine that ends, on
// every sandbox start). Backups made meanwhile all succeed.
func TestCreateOutlivesEndedThreads(t *testing.T) {
	needTools(t)
	st, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	stream := tarOf(t, []tar.Header{{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}}, map[string]string{"f": "x"})
	osthreadtest.RunWhileThreadsEnd(t, 16, func() error {
		// tar2sqfs waits 300 ms for its input: long enough for a thread
		// to end under it.
		slow := io.MultiReader(readerFunc(func([]byte) (int, error) {
			time.Sleep(300 * time.Millisecond)
			return 0, io.EOF
		}), bytes.NewReader(stream))
		_, err := st.Create(context.Background(), CreateRequest{Dir: "/w"}, slow, 1<<20)
		return err
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
