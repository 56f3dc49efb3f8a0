// Package git clones repositories into the sandbox by running the
// sandbox's own git, as user code, in the user cgroup (through the spawn
// wrapper), with a timeout that kills git and its helpers.
//
// Credentials. A URL may carry them (https://user:token@host/repo.git).
// They are split off before anything runs: git gets the bare URL on its
// command line, so they never reach the process list or the clone's
// .git/config, and gets them as an http.extraHeader scoped to that server
// through GIT_CONFIG_* environment variables, which other processes of the
// sandbox can only read as root. They are never logged, and git's own output
// is scrubbed of them before it reaches an error message.
//
// Only http, https and git URLs are accepted, and git is told to refuse
// every other transport (ext::, file, ssh), submodules and redirects
// included.
package git

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

// Kind classifies a failed clone.
type Kind int

const (
	Failed         Kind = iota // anything else
	InvalidURL                 // the URL is not acceptable
	RepoNotFound               // the server has no such repository
	BranchNotFound             // no such branch or tag
	AuthFailed                 // credentials missing or refused
	NetworkError               // DNS, connect, TLS, a dropped connection
	TimedOut                   // the clone ran past its timeout and was killed
)

// Error is a failed clone. Message is safe to show (no credentials);
// Output is git's scrubbed stderr, for details.
type Error struct {
	Kind    Kind
	Message string
	Output  string
}

func (e *Error) Error() string { return e.Message }

// Remote is a repository URL with its credentials held apart.
type Remote struct {
	u        *url.URL // without user info
	user     string
	password string
	creds    bool
}

// MaxURL bounds a repository URL.
const MaxURL = 8192

// ParseURL checks a repository URL: http, https or git, with a host, no
// control characters, at most MaxURL bytes. Credentials are taken out.
func ParseURL(raw string) (*Remote, error) {
	invalid := func(why string) (*Remote, error) {
		return nil, &Error{Kind: InvalidURL, Message: "invalid repository URL: " + why}
	}
	if raw == "" {
		return invalid("it is empty")
	}
	if len(raw) > MaxURL {
		return invalid(fmt.Sprintf("it is longer than %d bytes", MaxURL))
	}
	for _, c := range raw {
		if c < 0x20 || c == 0x7f || c == ' ' {
			return invalid("it contains a space or control character")
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid("it does not parse as a URL")
	}
	switch u.Scheme {
	case "http", "https", "git":
	default:
		return invalid("only http, https and git URLs are supported (scp-style, ssh and file URLs are not)")
	}
	if u.Host == "" || u.Hostname() == "" || strings.HasPrefix(u.Host, "-") {
		return invalid("it has no host")
	}
	if u.Opaque != "" || u.Fragment != "" || u.RawQuery != "" {
		return invalid("it must not carry a query or fragment")
	}
	if u.Path == "" || u.Path == "/" {
		return invalid("it names no repository")
	}
	r := &Remote{}
	if u.User != nil {
		if u.Scheme == "git" {
			return invalid("the git protocol has no credentials; use https")
		}
		r.user = u.User.Username()
		r.password, _ = u.User.Password()
		r.creds = true
		u.User = nil
	}
	r.u = u
	return r, nil
}

// HasCredentials reports whether the URL carried credentials.
func (r *Remote) HasCredentials() bool { return r.creds }

// String is the URL without credentials.
func (r *Remote) String() string { return r.u.String() }

// Name is the repository's name: the last path element without ".git",
// as git clone names its directory.
func (r *Remote) Name() string {
	name := path.Base(strings.TrimSuffix(strings.TrimRight(r.u.Path, "/"), "/.git"))
	name = strings.TrimSuffix(name, ".git")
	if name == "" || name == "." || name == "/" {
		return "repo"
	}
	return name
}

// ValidBranch reports whether b can name a branch or tag to clone: the
// rules of git check-ref-format, and not an option.
func ValidBranch(b string) bool {
	if b == "" || len(b) > 255 || b[0] == '-' || b[0] == '/' || strings.HasSuffix(b, "/") ||
		strings.HasSuffix(b, ".lock") || strings.HasSuffix(b, ".") || b == "@" ||
		strings.Contains(b, "..") || strings.Contains(b, "@{") || strings.Contains(b, "//") {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return false
		}
	}
	for _, el := range strings.Split(b, "/") {
		if strings.HasPrefix(el, ".") {
			return false
		}
	}
	return true
}

// Config is what the cloner needs from the agent.
type Config struct {
	// Self is the agent binary, re-executed as the spawn wrapper.
	Self string
	// CgroupRoot is the spawn wrapper's user cgroup root.
	CgroupRoot string
	// Env is the base environment (the sandbox's).
	Env []string
	// Reaper collects git's exit status.
	Reaper *reaper.Reaper
	// Git is the program; default "git", looked up in Env's PATH.
	Git string
	Log *slog.Logger
}

// Cloner runs git clone.
type Cloner struct {
	cfg Config
}

// New returns a cloner.
func New(cfg Config) *Cloner {
	if cfg.Self == "" {
		cfg.Self = "/proc/self/exe"
	}
	if cfg.Git == "" {
		cfg.Git = "git"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Cloner{cfg: cfg}
}

// Options are one clone's settings.
type Options struct {
	Remote *Remote
	// Branch is a branch or tag; "" is the remote's HEAD.
	Branch string
	// Dir is the absolute target directory.
	Dir     string
	Depth   int
	Timeout time.Duration
	// User runs git as this user (nil: root), and Env replaces the
	// cloner's base environment (nil: keep it), for a session with a user
	// and environment of its own.
	User *User
	Env  []string
}

// User is a user to run git as.
type User struct{ UID, GID int }

// Result is what was checked out.
type Result struct {
	Branch, Commit string
}

// Clone clones o.Remote into o.Dir.
func (c *Cloner) Clone(ctx context.Context, o Options) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	args := []string{
		// Only network transports, also for redirects and submodules.
		"-c", "protocol.allow=never",
		"-c", "protocol.http.allow=always",
		"-c", "protocol.https.allow=always",
		"-c", "protocol.git.allow=always",
		"clone", "--quiet",
	}
	if o.Depth > 0 {
		args = append(args, "--depth", strconv.Itoa(o.Depth))
	}
	if o.Branch != "" {
		args = append(args, "--branch", o.Branch)
	}
	args = append(args, "--", o.Remote.String(), o.Dir)
	start := time.Now()
	out, code, err := c.run(ctx, args, c.env(o.Env, o.Remote), o.User)
	scrubbed := o.Remote.scrub(out.stderr)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Result{}, &Error{Kind: TimedOut, Message: fmt.Sprintf("git clone did not finish within %s and was stopped", o.Timeout), Output: scrubbed}
		}
		return Result{}, err
	}
	c.cfg.Log.Info("git clone", "url", o.Remote.String(), "exit", code, "took", time.Since(start))
	if code != 0 {
		return Result{}, classify(code, scrubbed)
	}
	res := Result{Branch: o.Branch}
	// What was checked out: the commit, and the branch when none was
	// asked for.
	rp, code, err := c.run(ctx, []string{"-C", o.Dir, "rev-parse", "HEAD", "--abbrev-ref", "HEAD"}, c.env(o.Env, nil), o.User)
	if err == nil && code == 0 {
		lines := strings.Fields(string(rp.stdout))
		if len(lines) == 2 {
			res.Commit = lines[0]
			if res.Branch == "" && lines[1] != "HEAD" {
				res.Branch = lines[1]
			}
		}
	}
	return res, nil
}

// env is git's environment: base (nil: the sandbox's), less whatever
// would change how git talks or what it prints, plus the credentials for
// r's server.
func (c *Cloner) env(base []string, r *Remote) []string {
	if base == nil {
		base = c.cfg.Env
	}
	var env []string
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "GIT_CONFIG"), strings.HasPrefix(name, "GIT_TRACE"),
			name == "GIT_CURL_VERBOSE", name == "GIT_ASKPASS", name == "SSH_ASKPASS",
			name == "GIT_TERMINAL_PROMPT", name == "GIT_DIR", name == "GIT_WORK_TREE",
			name == "GIT_PROTOCOL_FROM_USER", name == "GIT_ALLOW_PROTOCOL",
			name == "LC_ALL", name == "LANGUAGE":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C", "GIT_TERMINAL_PROMPT=0", "GCM_INTERACTIVE=never")
	if r != nil && r.creds {
		scope := r.u.Scheme + "://" + r.u.Host + "/"
		token := base64.StdEncoding.EncodeToString([]byte(r.user + ":" + r.password))
		env = append(env,
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http."+scope+".extraHeader",
			"GIT_CONFIG_VALUE_0=Authorization: Basic "+token,
		)
	} else {
		env = append(env, "GIT_CONFIG_COUNT=0")
	}
	return env
}

// scrub removes r's credentials, in every form git could print them, from
// out.
func (r *Remote) scrub(out []byte) string {
	s := string(out)
	if r != nil && r.creds {
		for _, secret := range []string{
			base64.StdEncoding.EncodeToString([]byte(r.user + ":" + r.password)),
			url.UserPassword(r.user, r.password).String(),
			r.user + ":" + r.password,
			r.password,
			url.QueryEscape(r.password),
			r.user,
		} {
			if len(secret) >= 3 {
				s = strings.ReplaceAll(s, secret, "***")
			}
		}
	}
	// Any other user info in a URL, whatever put it there.
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			break
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexAny(s, "/ \t\n'\"")
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndexByte(s[:end], '@'); at >= 0 {
			b.WriteString("***")
			s = s[at:]
		}
	}
	b.WriteString(s)
	return strings.TrimSpace(b.String())
}

// classify turns git's exit and (LC_ALL=C) stderr into an Error.
func classify(code int, stderr string) *Error {
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(stderr, s) {
				return true
			}
		}
		return false
	}
	e := &Error{Kind: Failed, Output: stderr}
	switch {
	case code == spawn.ExitExec:
		e.Message = "git is not installed in this sandbox"
		return e
	case code == spawn.ExitSetup:
		e.Message = "git could not be started in the sandbox's user cgroup"
		return e
	case has("Remote branch", "couldn't find remote ref", "not found in upstream"):
		e.Kind = BranchNotFound
	case has("Authentication failed", "could not read Username", "could not read Password",
		"returned error: 401", "returned error: 403", "terminal prompts disabled", "Invalid username or password"):
		e.Kind = AuthFailed
	case has("not found", "returned error: 404", "does not appear to be a git repository", "No such repository"):
		e.Kind = RepoNotFound
	case has("Could not resolve host", "Failed to connect", "Couldn't connect", "Connection refused",
		"Connection timed out", "timed out", "Network is unreachable", "No route to host",
		"Connection reset", "SSL", "TLS", "certificate", "early EOF", "unable to access",
		"Could not read from remote repository", "Temporary failure in name resolution"):
		e.Kind = NetworkError
	}
	e.Message = "git clone failed"
	if line := lastFatal(stderr); line != "" {
		e.Message += ": " + line
	}
	return e
}

// lastFatal is the most telling line of git's stderr: its last "fatal:"
// line, else its last line.
func lastFatal(stderr string) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "fatal:") {
			return truncate(strings.TrimSpace(strings.TrimPrefix(l, "fatal:")), 300)
		}
	}
	return truncate(strings.TrimSpace(lines[len(lines)-1]), 300)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// output is what a git run printed, bounded.
type output struct {
	stdout, stderr []byte
}

// maxOutput bounds what is kept of each stream: the start of stdout, the
// end of stderr (where the reason is).
const maxOutput = 64 << 10

// run runs git with args through the spawn wrapper, in a process group of
// its own, and waits for it; ctx's end kills the whole group.
func (c *Cloner) run(ctx context.Context, args []string, env []string, u *User) (output, int, error) {
	var out output
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return out, 0, err
	}
	defer devNull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return out, 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return out, 0, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out.stdout = keepHead(outR) }()
	go func() { defer wg.Done(); out.stderr = keepTail(errR) }()
	so := spawn.Options{CgroupRoot: c.cfg.CgroupRoot, Argv0: "git"}
	if u != nil {
		so.UID, so.GID = &u.UID, &u.GID
	}
	argv := spawn.Argv(c.cfg.Self, so, c.cfg.Git, args...)
	attr := &os.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []*os.File{devNull, outW, errW},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	exited := make(chan reaper.Status, 1)
	var pid int
	_, err = c.cfg.Reaper.Start(func() (int, error) {
		p, err := os.StartProcess(argv[0], argv, attr)
		if err != nil {
			return 0, err
		}
		pid = p.Pid
		p.Release()
		return pid, nil
	}, func(st reaper.Status) { exited <- st })
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		wg.Wait()
		return out, 0, fmt.Errorf("starting git: %w", err)
	}
	var st reaper.Status
	select {
	case st = <-exited:
	case <-ctx.Done():
		// The group is named by git's PID, which the kernel does not give
		// out again while the group has members.
		unix.Kill(-pid, unix.SIGKILL)
		st = <-exited
	}
	// Helpers git left behind (it should leave none) must not hold the
	// pipes open.
	unix.Kill(-pid, unix.SIGKILL)
	wait := make(chan struct{})
	go func() { wg.Wait(); close(wait) }()
	select {
	case <-wait:
	case <-time.After(5 * time.Second):
		outR.Close()
		errR.Close()
		<-wait
	}
	outR.Close()
	errR.Close()
	if ctx.Err() != nil {
		return out, st.ExitCode(), ctx.Err()
	}
	return out, st.ExitCode(), nil
}

func keepHead(r *os.File) []byte {
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		if buf.Len() < maxOutput {
			buf.Write(chunk[:min(n, maxOutput-buf.Len())])
		}
		if err != nil {
			return buf.Bytes()
		}
	}
}

func keepTail(r *os.File) []byte {
	var buf []byte
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if len(buf) > 2*maxOutput {
			buf = append([]byte(nil), buf[len(buf)-maxOutput:]...)
		}
		if err != nil {
			if len(buf) > maxOutput {
				buf = buf[len(buf)-maxOutput:]
			}
			return buf
		}
	}
}
