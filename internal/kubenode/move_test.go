package kubenode

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReceiveRefusesHostileFiles feeds receive (the node a sandbox moves
// to) the streams a broken or hostile sending node could: a wrong or
// missing digest, a device node, a path out of the directory. Only the
// good stream is taken; whiteouts (character devices 0/0) are kept.
func TestReceiveRefusesHostileFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (owners and device nodes)")
	}
	good := layerTar(t, []*tar.Header{
		{Name: "workspace/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "workspace/f.txt", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 1000, Gid: 1000, Size: 5},
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/issue", Typeflag: tar.TypeChar, Mode: 0},
	})
	device := layerTar(t, []*tar.Header{{Name: "sda", Typeflag: tar.TypeBlock, Mode: 0o600, Devmajor: 8}})
	escape := layerTar(t, []*tar.Header{{Name: "../../outside", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5}})
	for _, tc := range []struct {
		name    string
		body    []byte
		trailer string // "": the stream's own digest; "-": none
		want    string // "": accepted
	}{
		{"good", good, "", ""},
		{"wrong digest", good, strings.Repeat("0", 64), "SHA-256"},
		{"no digest", good, "-", "without its digest"},
		{"device node", device, "", "device node"},
		{"path out of the directory", escape, "", "leaves the directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", FilesDigestTrailer)
				w.Write(tc.body)
				sum := sha256.Sum256(tc.body)
				switch tc.trailer {
				case "":
					w.Header().Set(FilesDigestTrailer, hex.EncodeToString(sum[:]))
				case "-":
				default:
					w.Header().Set(FilesDigestTrailer, tc.trailer)
				}
			}))
			defer srv.Close()
			n := &Node{http: srv.Client()}
			dir := t.TempDir()
			err := n.receive(t.Context(), srv.URL, "Bearer x", dir)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(filepath.Join(dir, "workspace/f.txt"))
				fi, _ := os.Lstat(filepath.Join(dir, "etc/issue"))
				if err != nil || string(b) != "hello" || fi == nil || fi.Mode()&os.ModeCharDevice == 0 {
					t.Fatalf("received %q %v, whiteout %v", b, err, fi)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// layerTar writes hdrs as a tar stream; regular files hold "hello".
func layerTar(t *testing.T, hdrs []*tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			io.WriteString(tw, "hello")
		}
	}
	tw.Close()
	return buf.Bytes()
}
