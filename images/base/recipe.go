// Package base holds the recipe of sandboxd's `base` image (build.sh and
// packages.txt beside this file) so that the daemon can embed it: `sandbox
// image build-base` runs exactly the recipe of the sandboxd it talks to. It
// has no code of its own.
package base

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
)

//go:embed build.sh packages.txt
var files embed.FS

// Files returns the recipe's files.
func Files() fs.FS { return files }

// Hash identifies the recipe: the SHA-256 of its files, in name order. A
// cached build is reused only for the same hash.
func Hash() string {
	h := sha256.New()
	for _, name := range []string{"build.sh", "packages.txt"} {
		data, _ := files.ReadFile(name)
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write(data)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
