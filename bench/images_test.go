package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// busyboxImage is an image of Debian's static busybox (no bash, no libc).
func busyboxImage(b *testing.B) v1.Image {
	b.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		b.Skip("needs /bin/busybox (busybox-static)")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, t := range []string{"sh", "true", "cat", "echo"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + t, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	tw.Close()
	return imageOfLayers(b, v1.Config{Env: []string{"PATH=/bin"}}, [][]byte{buf.Bytes()})
}

func imageOfLayers(b *testing.B, cfg v1.Config, layers [][]byte) v1.Image {
	b.Helper()
	img := empty.Image
	for _, data := range layers {
		data := data
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			b.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			b.Fatal(err)
		}
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", goruntime.GOARCH, cfg
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		b.Fatal(err)
	}
	return img
}

func importImg(b *testing.B, c *client.Client, img v1.Image, as string) time.Duration {
	b.Helper()
	f, err := os.CreateTemp(b.TempDir(), "img-*.tar")
	if err != nil {
		b.Fatal(err)
	}
	tag, _ := name.NewTag("bench/" + as + ":latest")
	if err := tarball.Write(tag, img, f); err != nil {
		b.Fatal(err)
	}
	f.Seek(0, io.SeekStart)
	defer f.Close()
	start := time.Now()
	if _, err := c.ImportImage(context.Background(), f, as); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkColdStartByImage: create a sandbox and run its first command
// (`true`), with the host image, a busybox image, and the base image when
// this machine has its build cached (sandbox image build-base).
func BenchmarkColdStartByImage(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-network", "none"}})
		importImg(b, d.Client, busyboxImage(b), "busybox")
		images := []string{"host", "busybox"}
		if cached, _ := filepath.Glob("/var/cache/sandboxd/base-*.tar"); len(cached) > 0 {
			if _, err := d.Client.BuildBaseImage(context.Background(), false, nil); err != nil {
				b.Fatal(err)
			}
			images = append(images, "base")
		} else {
			b.Log("no cached base image build in /var/cache/sandboxd: base skipped (run sandbox image build-base once)")
		}
		n := min(sampleCount(), 50)
		for _, img := range images {
			b.Run(img, func(b *testing.B) {
				once(b, func(b *testing.B) {
					ctx := context.Background()
					s := measure(b, n, func(i int) {
						sb := d.Client.Sandbox(fmt.Sprintf("cold-%s-%d", img, i), client.WithImage(img))
						if _, err := sb.Exec(ctx, "true"); err != nil {
							b.Fatal(err)
						}
					})
					for i := 0; i < n; i++ {
						d.Client.Sandbox(fmt.Sprintf("cold-%s-%d", img, i)).Destroy(ctx)
					}
					s.report(b)
				})
			})
		}
	})
}

// BenchmarkImportLarge: import (upload, verify, unpack, compress and keep)
// a docker save archive of a 512 MiB image: 8 layers of 64 MiB, half
// random (incompressible), half text.
func BenchmarkImportLarge(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{})
		var layers [][]byte
		for i := 0; i < 8; i++ {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for j := 0; j < 16; j++ {
				data := make([]byte, 4<<20)
				if j%2 == 0 {
					rand.Read(data)
				} else {
					copy(data, strings.Repeat(fmt.Sprintf("layer %d file %d: some text\n", i, j), (4<<20)/30))
				}
				tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/l%d/f%d", i, j), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
				tw.Write(data)
			}
			tw.Close()
			layers = append(layers, buf.Bytes())
		}
		img := imageOfLayers(b, v1.Config{}, layers)
		n := min(sampleCount(), 3)
		var s samples
		for i := 0; i < n; i++ {
			s = append(s, importImg(b, d.Client, img, fmt.Sprintf("large%d", i)))
			d.Client.RemoveImage(context.Background(), fmt.Sprintf("large%d", i))
		}
		s.report(b)
	})
}

// BenchmarkDiskHundredSandboxes: the disk that 100 running sandboxes of
// one image use: the image once, plus each sandbox's upper directory
// (after each wrote a 4 KiB file).
func BenchmarkDiskHundredSandboxes(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-network", "none"}})
		img := "busybox"
		importImg(b, d.Client, busyboxImage(b), img)
		if cached, _ := filepath.Glob("/var/cache/sandboxd/base-*.tar"); len(cached) > 0 {
			if _, err := d.Client.BuildBaseImage(context.Background(), false, nil); err != nil {
				b.Fatal(err)
			}
			img = "base"
		}
		ctx := context.Background()
		for i := 0; i < 100; i++ {
			sb := d.Client.Sandbox(fmt.Sprintf("disk-%d", i), client.WithImage(img), client.WithLimits(apiLimits()))
			if _, err := sb.Exec(ctx, "head -c 4096 /dev/zero > /tmp/mine"); err != nil {
				b.Fatal(err)
			}
		}
		du := func(p string) int64 {
			out, err := exec.Command("du", "-s", "-B1", "-x", p).Output()
			if err != nil {
				b.Fatal(err)
			}
			var n int64
			fmt.Sscan(string(out), &n)
			return n
		}
		images := du(filepath.Join(d.StateDir, "images"))
		var uppers int64
		entries, _ := os.ReadDir(filepath.Join(d.StateDir, "sandboxes"))
		for _, e := range entries {
			uppers += du(filepath.Join(d.StateDir, "sandboxes", e.Name(), "upper"))
		}
		b.ReportMetric(float64(images)/(1<<20), "image-MiB")
		b.ReportMetric(float64(uppers)/(1<<20), "uppers-MiB")
		b.ReportMetric(float64(uppers)/100/1024, "upper-KiB/sandbox")
		b.ReportMetric(0, "ns/op")
		b.Logf("image %s: %d MiB once; 100 uppers: %d KiB in all", img, images>>20, uppers>>10)
	})
}

func apiLimits() api.Limits { return api.Limits{MemoryBytes: 96 << 20} }
