package daemon

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// defaultStateDir and defaultURL are where the CLI looks without being
// told; the banner only spells out what differs.
const (
	defaultStateDir = "/var/lib/sandboxd"
	defaultURL      = "http://127.0.0.1:7070"
)

// writeBanner tells a person who just started the daemon where it listens,
// where its token is and the first command to try.
func writeBanner(w io.Writer, cfg Config, addr net.Addr, scheme string) {
	url := scheme + "://" + dialable(addr)
	token := filepath.Join(cfg.StateDir, "token")
	var env []string
	if url != defaultURL {
		env = append(env, "SANDBOX_URL="+url)
	}
	if cfg.StateDir != defaultStateDir {
		env = append(env, "SANDBOXD_STATE_DIR="+cfg.StateDir)
	}
	try := strings.Join(append(env, cliPath(), "exec demo -- python3 -c 'print(2+2)'"), " ")
	fmt.Fprintf(w, "\nsandboxd is ready on %s (web console: %s/)\n", url, url)
	fmt.Fprintf(w, "  token: %s (the CLI reads it there when run as root; elsewhere set SANDBOX_TOKEN)\n", token)
	fmt.Fprintf(w, "  try:   %s\n\n", try)
}

// dialable is addr with an unspecified IP (0.0.0.0, ::) replaced by
// loopback, which is where a local client reaches it.
func dialable(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// cliPath is how to call the sandbox CLI that sits beside this binary:
// relative to the working directory when it is below it (bin/sandbox after
// make run), its bare name when it is on PATH, else its full path.
func cliPath() string {
	exe, err := os.Executable()
	if err != nil {
		return "sandbox"
	}
	cli := filepath.Join(filepath.Dir(exe), "sandbox")
	if _, err := os.Stat(cli); err != nil {
		return "sandbox"
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, cli); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == filepath.Dir(cli) {
			return "sandbox"
		}
	}
	return cli
}
