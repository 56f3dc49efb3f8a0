package main

import (
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/sandboxd/sandboxd/client"
)

// defaultStateDir is where a local sandboxd keeps its state, and its token
// file, unless SANDBOXD_STATE_DIR says otherwise.
const defaultStateDir = "/var/lib/sandboxd"

// envStateDir names the variable that overrides defaultStateDir.
const envStateDir = "SANDBOXD_STATE_DIR"

// maxTokenFileBytes bounds the read of the token file.
const maxTokenFileBytes = 4 << 10

// tokenSources are the places a token can come from, in order.
type tokenSources struct {
	flag    string
	flagSet bool
	getenv  func(string) string
	baseURL string
}

// resolveToken returns the API token: --token if given (even empty), else
// $SANDBOX_TOKEN, else the local daemon's token file when it is readable,
// else none.
//
// The token file is the admin token of the daemon on this machine, so it is
// only ever sent to a daemon on this machine: a URL whose host is loopback.
// Sending it to a remote URL would hand the local daemon's key to whoever
// runs that server.
func resolveToken(s tokenSources) string {
	if s.flagSet {
		return s.flag
	}
	if tok := s.getenv(client.EnvToken); tok != "" {
		return tok
	}
	if !isLoopbackURL(s.baseURL) {
		return ""
	}
	dir := s.getenv(envStateDir)
	if dir == "" {
		dir = defaultStateDir
	}
	return readTokenFile(filepath.Join(dir, "token"))
}

// readTokenFile returns the trimmed contents of path, or "" when it cannot
// be read (not root, no local daemon): the daemon will then answer 401 and
// the CLI says how to pass a token.
func readTokenFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// isLoopbackURL reports whether rawURL names a daemon on this machine.
func isLoopbackURL(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.IsLoopback()
}
