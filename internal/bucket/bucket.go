// Package bucket mounts S3-compatible buckets on the host with s3fs, the
// FUSE client the daemon then hands into sandboxes. It owns the mount's
// parameters (validated here, since they reach s3fs's option string), the
// credentials file (0600, under the daemon's state directory; s3fs gets
// them in its environment) and the s3fs process's start and end. It never puts
// credentials in s3fs's command line or mount options, where ps or a
// mount table would show them, and it never reads or writes objects.
package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/atomicfile"
	"github.com/sandboxd/sandboxd/internal/s3"
)

// Source is what is mounted: a bucket, or a prefix of one, at an endpoint.
type Source struct {
	Bucket string `json:"bucket"`
	// Prefix is a key prefix without leading or trailing '/'; empty: the
	// whole bucket.
	Prefix   string `json:"prefix,omitempty"`
	Endpoint string `json:"endpoint"`
	// Region signs requests; "us-east-1" when empty.
	Region   string `json:"region,omitempty"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Limits on what a caller may send.
const (
	maxEndpoint = 512
	maxPrefix   = 512
	maxKeyID    = 128
	maxSecret   = 256
	maxToken    = 4096
)

var (
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
	// prefixRE allows what s3fs's "bucket:/prefix" and a key need, and
	// nothing that its option parser or a shell would give meaning to.
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9._\-+=@]+(/[A-Za-z0-9._\-+=@]+)*$`)
	// credRE: key IDs and secrets are printable ASCII without the
	// separators of the credentials file.
	credRE = regexp.MustCompile(`^[\x21-\x7e]+$`)
)

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid bucket mount")

// Validate checks every field that reaches s3fs.
func (s Source) Validate() error {
	if !bucketRE.MatchString(s.Bucket) {
		return fmt.Errorf("%w: bucket %q: 3-63 characters of a-z, 0-9, '.' and '-'", ErrInvalid, s.Bucket)
	}
	if s.Prefix != "" {
		if len(s.Prefix) > maxPrefix || !prefixRE.MatchString(s.Prefix) {
			return fmt.Errorf("%w: prefix %q: up to %d characters of A-Z, a-z, 0-9 and ._-+=@, in '/'-separated parts", ErrInvalid, s.Prefix, maxPrefix)
		}
		for _, part := range strings.Split(s.Prefix, "/") {
			if part == "." || part == ".." {
				return fmt.Errorf("%w: prefix %q has a '.' or '..' part", ErrInvalid, s.Prefix)
			}
		}
	}
	if err := validateEndpoint(s.Endpoint); err != nil {
		return err
	}
	if s.Region != "" && !regionRE.MatchString(s.Region) {
		return fmt.Errorf("%w: region %q: 1-32 characters of a-z, 0-9 and '-'", ErrInvalid, s.Region)
	}
	return nil
}

func validateEndpoint(raw string) error {
	if raw == "" {
		return fmt.Errorf("%w: an endpoint URL is required (e.g. https://s3.us-east-1.amazonaws.com)", ErrInvalid)
	}
	u, err := url.Parse(raw)
	if len(raw) > maxEndpoint || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") ||
		strings.ContainsAny(raw, ", \t\r\n\\") {
		return fmt.Errorf("%w: endpoint %q: want http(s)://HOST[:PORT], no path, query or credentials", ErrInvalid, raw)
	}
	return nil
}

// Credentials are what s3fs signs with; they come from the caller's
// environment or a named secret and go only into the credentials file.
type Credentials = s3.Credentials

// ValidateCredentials checks key ID, secret and token.
func ValidateCredentials(c Credentials) error {
	switch {
	case c.AccessKeyID == "" || c.SecretAccessKey == "":
		return fmt.Errorf("%w: credentials need an access key ID and a secret access key", ErrInvalid)
	case len(c.AccessKeyID) > maxKeyID || !credRE.MatchString(c.AccessKeyID) || strings.ContainsAny(c.AccessKeyID, ":=[]"):
		return fmt.Errorf("%w: access key ID: up to %d printable characters", ErrInvalid, maxKeyID)
	case len(c.SecretAccessKey) > maxSecret || !credRE.MatchString(c.SecretAccessKey):
		return fmt.Errorf("%w: secret access key: up to %d printable characters", ErrInvalid, maxSecret)
	case c.SessionToken != "" && (len(c.SessionToken) > maxToken || !credRE.MatchString(c.SessionToken)):
		return fmt.Errorf("%w: session token: up to %d printable characters", ErrInvalid, maxToken)
	}
	return nil
}

// WriteCredentials writes c to path as JSON, mode 0600, replacing it
// atomically: a mount is restored from it after a reboot.
func WriteCredentials(path string, c Credentials) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// ReadCredentials reads what WriteCredentials wrote.
func ReadCredentials(path string) (Credentials, error) {
	var c Credentials
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("reading credentials %s: %w", path, err)
	}
	return c, nil
}

// Check proves the bucket can be used before s3fs is started: s3fs's own
// failures end up in its log, not in an answer to the caller. hc makes
// the request (nil: a default client); a tenant's check goes through
// EgressProxy.HTTPClient.
func Check(ctx context.Context, s Source, c Credentials, hc *http.Client) error {
	cl := &s3.Client{Endpoint: s.Endpoint, Region: s.Region, Creds: c, HTTP: hc}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	prefix := s.Prefix
	if prefix != "" {
		prefix += "/"
	}
	return cl.CheckBucket(ctx, s.Bucket, prefix)
}

// Owner is who the files of a mount belong to, as the host sees it: the
// sandbox's root (0 without a user namespace, the start of its range with
// one).
type Owner struct{ UID, GID int }

// MountOptions are how s3fs runs.
type MountOptions struct {
	// Creds reach s3fs through its environment, which only root on the
	// host can read (/proc/PID/environ); s3fs 1.90 takes a session token
	// nowhere else.
	Creds Credentials
	// Log receives s3fs's output; may be empty.
	Log   string
	Owner Owner
	// Env is added to s3fs's environment: EgressProxy.Env for a tenant's
	// mount.
	Env []string
}

// mountTimeout bounds how long s3fs may take to mount.
const mountTimeout = 30 * time.Second

// Mount mounts s at target on the host with s3fs, which daemonises after
// mounting: it outlives the daemon (a restarted daemon finds the mount in
// place) and is stopped by Unmount.
func Mount(ctx context.Context, s Source, target string, o MountOptions) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	what := s.Bucket
	if s.Prefix != "" {
		what += ":/" + s.Prefix
	}
	region := s.Region
	if region == "" {
		region = "us-east-1"
	}
	opts := []string{
		"url=" + strings.TrimSuffix(s.Endpoint, "/"), "endpoint=" + region, "sigv4",
		"use_path_request_style",
		// Anyone in the sandbox may use it (its root owns it), with the
		// sandbox's root as owner.
		"allow_other", fmt.Sprintf("uid=%d", o.Owner.UID), fmt.Sprintf("gid=%d", o.Owner.GID),
		"umask=0022", "mp_umask=0022",
		"connect_timeout=10", "readwrite_timeout=60", "retries=3",
		"nosuid", "nodev",
	}
	if s.ReadOnly {
		opts = append(opts, "ro")
	}
	ctx, cancel := context.WithTimeout(ctx, mountTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "s3fs", what, target, "-o", strings.Join(opts, ","))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent",
		"AWS_ACCESS_KEY_ID=" + o.Creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + o.Creds.SecretAccessKey}
	if o.Creds.SessionToken != "" {
		cmd.Env = append(cmd.Env, "AWS_SESSION_TOKEN="+o.Creds.SessionToken)
	}
	cmd.Env = append(cmd.Env, o.Env...)
	if o.Log != "" {
		if f, err := os.OpenFile(o.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			defer f.Close()
			cmd.Stdout, cmd.Stderr = f, f
		}
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("s3fs: %w (log: %s)", err, o.Log)
	}
	if err := waitMounted(ctx, target); err != nil {
		return err
	}
	if err := SetReadahead(target, ReadaheadKB); err != nil && cmd.Stderr != nil {
		// A mount without the larger window still works, only slower
		// (e.g. a read-only /sys): noted in s3fs's log, not a failure.
		fmt.Fprintf(cmd.Stderr, "sandboxd: %v\n", err)
	}
	return nil
}

// ReadaheadKB is the kernel's readahead window for a bucket mount, in
// KiB, set on the mount's own backing device (bdi), which only this FUSE
// connection uses.
//
// Why: with the kernel's default of 128 KiB for FUSE, a sequential reader
// has about one 128 KiB request in flight, so every request is a round
// trip through s3fs during which the reader sleeps (about 1,200 sleeps per
// 256 MiB). With 1 MiB, eight requests are in flight (FUSE sends each as a
// background request, under its default limit of 12), s3fs's threads
// answer them while the reader copies, and the reader sleeps a third as
// often. Measured interleaved on the 2-vCPU VM (bench/results/storage.txt):
// 256 MiB reads about 10% faster (7-18% at the median of a run), in a
// sandbox and on the host alike; 4 MiB was no faster and cost the reader
// more CPU.
const ReadaheadKB = 1024

// SetReadahead sets the readahead window of the FUSE mount at target, in
// KiB, found by the mount's device number under /sys/class/bdi.
func SetReadahead(target string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return fmt.Errorf("setting the readahead of %s: %w", target, err)
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(bdi, []byte(strconv.Itoa(kb)), 0); err != nil {
		return fmt.Errorf("setting the readahead of %s: %w", target, err)
	}
	return nil
}

// Readahead returns the readahead window of the mount at target, in KiB.
func Readahead(target string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return 0, err
	}
	data, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// waitMounted waits until target is a FUSE mount that answers.
func waitMounted(ctx context.Context, target string) error {
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		if err := Healthy(target); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			Unmount(target)
			return fmt.Errorf("s3fs did not mount %s: %w", target, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// fuseSuperMagic is FUSE's statfs f_type.
const fuseSuperMagic = 0x65735546

// ErrBroken means the FUSE client behind a mount is gone.
var ErrBroken = errors.New("the bucket's FUSE client is not running")

// Healthy reports whether target is a live FUSE mount: ErrBroken when its
// client died (ENOTCONN), another error when it is not mounted at all.
func Healthy(target string) error {
	var st unix.Statfs_t
	err := unix.Statfs(target, &st)
	switch {
	case errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED):
		return ErrBroken
	case err != nil:
		return err
	case st.Type != fuseSuperMagic:
		return fmt.Errorf("%s is not a FUSE mount", target)
	}
	return nil
}

// Unmount detaches target, stops its FUSE client and removes the
// directory. The client would exit by itself once the last copy of the
// mount (the sandboxes' included) is gone, but not while a request is
// pending, so it is stopped: SIGTERM, then SIGKILL after a grace period.
func Unmount(target string) error {
	pids := clients(target)
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	stop(pids)
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// clients returns the s3fs processes serving target, found by their
// command line (s3fs daemonises, so the daemon is not their parent).
func clients(target string) []int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if len(args) > 2 && filepath.Base(args[0]) == "s3fs" && args[2] == target {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// stopGrace is how long an s3fs process has to exit after SIGTERM.
const stopGrace = 2 * time.Second

// stop ends the processes pids through pidfds (a PID may be reused once
// the process is gone; a pidfd never names another process).
func stop(pids []int) {
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		deadline := time.Now().Add(stopGrace)
		for time.Now().Before(deadline) {
			n, err := unix.Poll(fds, 50)
			if err == nil && n > 0 {
				break
			}
		}
		if n, _ := unix.Poll(fds, 0); n == 0 {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
		unix.Close(fd)
	}
}

// Dir is the host directory of one sandbox's mounts below runDir.
func Dir(runDir, key string) string { return filepath.Join(runDir, "buckets", key) }
