package sandbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/bindmount"
	"github.com/sandboxd/sandboxd/internal/atomicfile"
	"github.com/sandboxd/sandboxd/internal/bucket"
	"github.com/sandboxd/sandboxd/internal/nsmount"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/s3"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Errors of bucket mounts; the API edge maps each to its code.
var (
	ErrMountPathInvalid  = errors.New("mount path invalid")
	ErrMountPathInUse    = errors.New("mount path in use")
	ErrMountNotFound     = errors.New("no mount at that path")
	ErrBucketUnreachable = errors.New("bucket endpoint unreachable")
	ErrBucketAuth        = errors.New("bucket credentials refused")
	ErrBucketNotFound    = errors.New("bucket not found")
	// ErrLimit: a per-sandbox count limit was reached.
	ErrLimit = errors.New("limit reached")
)

// MaxMounts bounds the bucket mounts of one sandbox: each is an s3fs
// process on the host.
const MaxMounts = 8

// maxMountPath bounds a mount path.
const maxMountPath = 256

// Mount statuses, as reported by Mounts.
const (
	MountMounted = "mounted"
	// MountBroken: the FUSE client died and could not be restarted (the
	// reason says why); the next Mounts call tries again.
	MountBroken = "broken"
	// MountIdle: the sandbox is not running; the mount comes back when it
	// starts.
	MountIdle = "idle"
)

// BucketMount is one bucket mounted into a sandbox. Its credentials are
// never part of it: they stay in a 0600 file of the daemon.
type BucketMount struct {
	// N numbers the mount's files on the host.
	N      int           `json:"n"`
	Path   string        `json:"path"`
	Source bucket.Source `json:"source"`
	// Secret is the named secret the credentials came from; empty when
	// they were sent with the request.
	Secret    string    `json:"secret,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// Status and Reason are filled in by Mounts, never stored.
	Status string `json:"-"`
	Reason string `json:"-"`
}

// MountRequest asks for a bucket mount.
type MountRequest struct {
	Path   string
	Source bucket.Source
	Creds  bucket.Credentials
	// Secret names the credentials when they came from a named secret.
	Secret string
}

// reservedMountPaths are the sandbox's own trees: a bucket may not be
// mounted at or under them.
var reservedMountPaths = []string{"/proc", "/sys", "/dev", "/.sandboxd", "/usr", "/bin", "/sbin",
	"/lib", "/lib32", "/lib64", "/libx32", "/etc", "/boot", "/run", "/var/lib/sandboxd-agent"}

// ValidateMountPath checks a mount path: absolute, clean, not / and not in
// or over one of the sandbox's system trees.
func ValidateMountPath(p string) error {
	return validateSandboxPath(p, reservedMountPaths, "cannot mount over the sandbox's root")
}

// validateSandboxPath checks a path inside a sandbox that the daemon acts
// on from the host: absolute, clean, bounded, without characters that
// mount options or records would misread, not / (whyNotRoot says why) and
// not at or under one of the reserved trees.
func validateSandboxPath(p string, reserved []string, whyNotRoot string) error {
	switch {
	case p == "" || p[0] != '/':
		return fmt.Errorf("%w: %q: want an absolute path", ErrMountPathInvalid, p)
	case len(p) > maxMountPath || strings.ContainsAny(p, "\x00\n\r\\,"):
		return fmt.Errorf("%w: %q: up to %d bytes, no NUL, newline, backslash or comma", ErrMountPathInvalid, p, maxMountPath)
	case path.Clean(p) != p:
		return fmt.Errorf("%w: %q: want a clean path (no '.', '..', '//' or trailing '/')", ErrMountPathInvalid, p)
	case p == "/":
		return fmt.Errorf("%w: %s", ErrMountPathInvalid, whyNotRoot)
	}
	for _, r := range reserved {
		if p == r || strings.HasPrefix(p, r+"/") {
			return fmt.Errorf("%w: %s is inside %s, which belongs to the system", ErrMountPathInvalid, p, r)
		}
	}
	return nil
}

// overlaps reports whether one of a and b is the other or inside it.
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// mountFiles are where a sandbox's mounts live on the host.
type mountFiles struct {
	list   string // <state>/sandboxes/<key>/mounts/mounts.json
	dir    string // <state>/sandboxes/<key>/mounts
	hosted string // <run>/buckets/<key>: the host FUSE mounts
}

func (m *Manager) mountFiles(key string) mountFiles {
	dir := filepath.Join(m.paths(key).dir, "mounts")
	return mountFiles{list: filepath.Join(dir, "mounts.json"), dir: dir, hosted: bucket.Dir(m.opts.RunDir, key)}
}

func (f mountFiles) cred(n int) string          { return filepath.Join(f.dir, strconv.Itoa(n)+".cred") }
func (f mountFiles) log(n int) string           { return filepath.Join(f.dir, strconv.Itoa(n)+".log") }
func (f mountFiles) host(n int) string          { return filepath.Join(f.hosted, strconv.Itoa(n)) }
func (f mountFiles) load() []BucketMount        { return loadMounts(f.list) }
func (f mountFiles) save(l []BucketMount) error { return saveMounts(f.list, l) }

func loadMounts(file string) []BucketMount {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var l []BucketMount
	json.Unmarshal(data, &l)
	return l
}

func saveMounts(file string, l []BucketMount) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return atomicfile.Write(file, data, 0o600)
}

// Mount mounts a bucket into the running sandbox id at req.Path, starting
// the sandbox if it is not running. The mount is part of the sandbox's
// state: it comes back after sleep, restart and reboot.
func (m *Manager) Mount(ctx context.Context, id string, req MountRequest) (BucketMount, error) {
	if err := ValidateMountPath(req.Path); err != nil {
		return BucketMount{}, err
	}
	if err := req.Source.Validate(); err != nil {
		return BucketMount{}, fmt.Errorf("%w: %v", ErrInvalid, strings.TrimPrefix(err.Error(), bucket.ErrInvalid.Error()+": "))
	}
	if err := bucket.ValidateCredentials(req.Creds); err != nil {
		return BucketMount{}, fmt.Errorf("%w: %v", ErrInvalid, strings.TrimPrefix(err.Error(), bucket.ErrInvalid.Error()+": "))
	}
	b, _, err := m.getOrCreate(ctx, id, Config{})
	if err != nil {
		return BucketMount{}, err
	}
	defer b.mu.Unlock()
	f := m.mountFiles(b.rec.Key)
	list := f.load()
	if len(list) >= MaxMounts {
		return BucketMount{}, fmt.Errorf("%w: a sandbox has at most %d bucket mounts", ErrLimit, MaxMounts)
	}
	for _, bm := range list {
		if overlaps(bm.Path, req.Path) {
			return BucketMount{}, fmt.Errorf("%w: %s overlaps the bucket mount at %s", ErrMountPathInUse, req.Path, bm.Path)
		}
	}
	for _, v := range b.cfg.Volumes {
		if overlaps(v.Path, req.Path) {
			return BucketMount{}, fmt.Errorf("%w: %s overlaps the volume %s at %s", ErrMountPathInUse, req.Path, v.Name, v.Path)
		}
	}
	steps := newStepTimer()
	if err := m.startLocked(ctx, b); err != nil {
		return BucketMount{}, err
	}
	steps.mark("start")
	if b.isGVisor() {
		if shared, _ := rootfs.IsMountPoint(f.hosted); !shared {
			return BucketMount{}, fmt.Errorf("%w: this gVisor sandbox was started before bucket mounts reached gVisor; restart it to mount buckets", ErrUnsupported)
		}
	}
	bm := BucketMount{N: nextMountN(list), Path: req.Path, Source: req.Source, Secret: req.Secret, CreatedAt: m.now().UTC()}
	if err := m.guardEndpoint(ctx, b, bm.Source); err != nil {
		return BucketMount{}, err
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return BucketMount{}, err
	}
	if err := m.checkWhileMounting(ctx, b, f, bm, req.Creds, steps); err != nil {
		os.Remove(f.cred(bm.N))
		os.Remove(f.log(bm.N))
		return BucketMount{}, err
	}
	if err := m.attachMount(ctx, b, f, bm); err != nil {
		os.Remove(f.cred(bm.N))
		return BucketMount{}, err
	}
	steps.mark("attach")
	if err := f.save(append(list, bm)); err != nil {
		m.detachMount(ctx, b, f, bm)
		os.Remove(f.cred(bm.N))
		return BucketMount{}, err
	}
	steps.mark("save")
	m.log.Info("bucket mounted", "sandbox", id, "path", bm.Path, "bucket", bm.Source.Bucket, "endpoint", bm.Source.Endpoint, "readonly", bm.Source.ReadOnly, "steps", steps.String())
	bm.Status = MountMounted
	return bm, nil
}

func nextMountN(list []BucketMount) int {
	n := 0
	for _, bm := range list {
		n = max(n, bm.N+1)
	}
	return n
}

// checkWhileMounting checks the bucket with the daemon's own client and
// writes the credentials file (synced: a reboot restores the mount from
// it) while s3fs starts and mounts the bucket on the host. The check is
// what gives a bad endpoint, bucket or credentials its error code, but
// waiting for it before starting s3fs (a process that takes tens of
// milliseconds to load, then makes the same request itself) added its
// round trip, a TLS handshake for https endpoints, to every mount. When
// the check fails, the mount is cancelled (s3fs, which fails its own
// check, would leave an unanswering mount behind) and the check's error
// is returned.
func (m *Manager) checkWhileMounting(ctx context.Context, b *box, f mountFiles, bm BucketMount, creds bucket.Credentials, steps *stepTimer) error {
	mountCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	checked, written := make(chan error, 1), make(chan error, 1)
	go func() {
		err := checkBucket(ctx, bm.Source, creds, m.bucketClient(b))
		if err != nil {
			cancel()
		}
		checked <- err
	}()
	go func() { written <- bucket.WriteCredentials(f.cred(bm.N), creds) }()
	mountErr := m.mountHost(mountCtx, b, f, bm, creds)
	steps.mark("s3fs")
	checkErr, writeErr := <-checked, <-written
	steps.mark("check")
	if err := cmp.Or(checkErr, writeErr, mountErr); err != nil {
		bucket.Unmount(f.host(bm.N))
		return err
	}
	return nil
}

// guardEndpoint refuses a tenant's endpoint that resolves to an address
// kept out of tenants' reach (bucket.EndpointGuard), before the daemon's
// check or s3fs connects to it. The admin's mounts are not guarded: the
// admin is the operator.
func (m *Manager) guardEndpoint(ctx context.Context, b *box, s bucket.Source) error {
	if tenant.Of(b.id) == "" {
		return nil
	}
	err := m.opts.BucketEndpoints.Check(ctx, s.Endpoint)
	if errors.Is(err, bucket.ErrUnresolvable) {
		return fmt.Errorf("%w: %v", ErrBucketUnreachable, err)
	}
	return err
}

// bucketClient is the HTTP client of b's bucket checks: the egress proxy's,
// which checks every connection, for a tenant's sandbox; nil, the default,
// for the admin's.
func (m *Manager) bucketClient(b *box) *http.Client {
	if tenant.Of(b.id) == "" || m.opts.BucketProxy == nil {
		return nil
	}
	return m.opts.BucketProxy.HTTPClient()
}

// bucketEnv is what b's s3fs adds to its environment: the egress proxy,
// for a tenant's sandbox.
func (m *Manager) bucketEnv(b *box) []string {
	if tenant.Of(b.id) == "" || m.opts.BucketProxy == nil {
		return nil
	}
	return m.opts.BucketProxy.Env()
}

// checkBucket maps the S3 client's classification to the domain's.
func checkBucket(ctx context.Context, s bucket.Source, c bucket.Credentials, hc *http.Client) error {
	err := bucket.Check(ctx, s, c, hc)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, s3.ErrUnreachable):
		return fmt.Errorf("%w: %s: %v", ErrBucketUnreachable, s.Endpoint, err)
	case errors.Is(err, s3.ErrAuth):
		return fmt.Errorf("%w: bucket %s at %s", ErrBucketAuth, s.Bucket, s.Endpoint)
	case errors.Is(err, s3.ErrNotFound):
		return fmt.Errorf("%w: %s at %s", ErrBucketNotFound, s.Bucket, s.Endpoint)
	}
	return fmt.Errorf("%w: %s: %v", ErrBucketUnreachable, s.Endpoint, err)
}

// mountHost mounts bm on the host with s3fs, with creds, unless it is
// mounted there and healthy.
func (m *Manager) mountHost(ctx context.Context, b *box, f mountFiles, bm BucketMount, creds bucket.Credentials) error {
	host := f.host(bm.N)
	switch err := bucket.Healthy(host); {
	case err == nil:
		return nil
	case !errors.Is(err, os.ErrNotExist):
		// Something is left there (a dead client's mount): Unmount finds
		// its clients by reading every process's command line, which a
		// fresh mount point (always absent: Unmount removes it) skips.
		bucket.Unmount(host)
	}
	if err := os.MkdirAll(f.hosted, 0o700); err != nil {
		return err
	}
	err := bucket.Mount(ctx, bm.Source, host, bucket.MountOptions{Creds: creds, Log: f.log(bm.N), Owner: m.mountOwner(b), Env: m.bucketEnv(b)})
	if err != nil {
		m.log.Error("s3fs failed", "sandbox", b.id, "path", bm.Path, "err", err)
		return fmt.Errorf("%w: the FUSE client could not mount %s (see the daemon's log)", ErrBucketUnreachable, bm.Source.Bucket)
	}
	return nil
}

// attachMount mounts bm on the host (unless it is mounted there and
// healthy) and moves a copy into b's running container.
func (m *Manager) attachMount(ctx context.Context, b *box, f mountFiles, bm BucketMount) error {
	if bucket.Healthy(f.host(bm.N)) != nil {
		// The name is checked again: what it resolves to may have changed
		// since the mount was made.
		if err := m.guardEndpoint(ctx, b, bm.Source); err != nil {
			return err
		}
		creds, err := bucket.ReadCredentials(f.cred(bm.N))
		if err != nil {
			return err
		}
		if err := m.mountHost(ctx, b, f, bm, creds); err != nil {
			return err
		}
	}
	host := f.host(bm.N)
	var err error
	if b.isGVisor() {
		err = m.bindInGVisor(ctx, b, bm)
	} else {
		owner := m.mountOwner(b)
		err = nsmount.Attach(b.running.pid, host, bm.Path, nsmount.Options{ReadOnly: bm.Source.ReadOnly, UID: owner.UID, GID: owner.GID})
	}
	if err != nil {
		bucket.Unmount(host)
		if errors.Is(err, nsmount.ErrPathInvalid) {
			return fmt.Errorf("%w: %v", ErrMountPathInvalid, err)
		}
		return err
	}
	return nil
}

// bindInGVisor binds bm's host mount, which gVisor sees below
// bindmount.Dir, at bm.Path in gVisor's kernel: the agent binary does it
// from inside, run by runsc with CAP_SYS_ADMIN (user code never has it).
func (m *Manager) bindInGVisor(ctx context.Context, b *box, bm BucketMount) error {
	rt, err := m.runtimeOf(b)
	if err != nil {
		return err
	}
	args := []string{bindmount.Arg, strconv.Itoa(bm.N), bm.Path}
	if bm.Source.ReadOnly {
		args = append(args, "ro")
	}
	err = rt.ExecAdmin(ctx, b.running.cid, append([]string{runtime.AgentPath}, args...)...)
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() == bindmount.ExitPathInvalid {
		return fmt.Errorf("%w: %v", nsmount.ErrPathInvalid, err)
	}
	return err
}

// gvisorBuckets prepares the host directory of the bucket mounts of the
// gVisor sandbox with key and returns the spec mount that shows it to
// the sandbox at bindmount.Dir. The directory is a shared mount, so the
// copy runsc's gofer makes of it (a slave, in the gofer's own mount
// namespace) receives the FUSE mounts the daemon later makes below it;
// rbind carries the ones already there. It is read-only in the sandbox
// (the agent makes each bucket's own bind read-write when it may be):
// root in a gVisor sandbox writes to host directories through the gofer,
// and a symlink it planted at Dir/N would lead the daemon's next mount of
// mount N anywhere on the host. dcache=0 makes gVisor drop a
// file's dentry, and with it its host descriptor, once the sandbox closes
// it: s3fs uploads a file when its last descriptor closes, and gVisor
// would otherwise keep it open in its cache (a write would reach the
// bucket only when the dentry happened to be evicted).
func (m *Manager) gvisorBuckets(key string) (specs.Mount, error) {
	dir := m.mountFiles(key).hosted
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return specs.Mount{}, err
	}
	if shared, err := rootfs.IsMountPoint(dir); err != nil || !shared {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return specs.Mount{}, fmt.Errorf("binding %s: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return specs.Mount{}, fmt.Errorf("making %s shared: %w", dir, err)
	}
	return specs.Mount{Destination: bindmount.Dir, Type: "bind", Source: dir,
		Options: []string{"rbind", "ro", "nosuid", "nodev", "dcache=0"}}, nil
}

// mountOwner is the host UID and GID the sandbox's root has: 0 without
// a user namespace, its range's first ID with one.
func (m *Manager) mountOwner(b *box) bucket.Owner {
	if ids := b.hostIDs(); ids != nil {
		return bucket.Owner{UID: int(ids.Base), GID: int(ids.Base)}
	}
	return bucket.Owner{}
}

// detachMount takes bm out of b's container (if it runs) and off the host.
func (m *Manager) detachMount(ctx context.Context, b *box, f mountFiles, bm BucketMount) {
	if b.running != nil {
		var err error
		if b.isGVisor() {
			err = m.unbindInGVisor(ctx, b, bm.Path)
		} else {
			err = nsmount.Detach(b.running.pid, bm.Path)
		}
		if err != nil {
			m.log.Warn("unmounting a bucket in the sandbox", "sandbox", b.id, "path", bm.Path, "err", err)
		}
	}
	if err := bucket.Unmount(f.host(bm.N)); err != nil {
		m.log.Warn("unmounting a bucket on the host", "sandbox", b.id, "path", bm.Path, "err", err)
	}
}

// unbindInGVisor undoes bindInGVisor.
func (m *Manager) unbindInGVisor(ctx context.Context, b *box, p string) error {
	rt, err := m.runtimeOf(b)
	if err != nil {
		return err
	}
	return rt.ExecAdmin(ctx, b.running.cid, runtime.AgentPath, bindmount.Arg, "--unmount", p)
}

// Unmount removes the bucket mount at p from sandbox id.
func (m *Manager) Unmount(ctx context.Context, id, p string) error {
	b, err := m.lockExisting(id)
	if err != nil {
		return err
	}
	defer b.mu.Unlock()
	f := m.mountFiles(b.rec.Key)
	list := f.load()
	for i, bm := range list {
		if bm.Path != p {
			continue
		}
		m.detachMount(ctx, b, f, bm)
		if err := f.save(append(list[:i:i], list[i+1:]...)); err != nil {
			return err
		}
		os.Remove(f.cred(bm.N))
		os.Remove(f.log(bm.N))
		m.log.Info("bucket unmounted", "sandbox", id, "path", p)
		return nil
	}
	return fmt.Errorf("%w: %s", ErrMountNotFound, p)
}

// Mounts lists the bucket mounts of sandbox id with their status. A mount
// whose FUSE client died is mounted again (on the host and in the
// sandbox); when that fails it is reported broken.
func (m *Manager) Mounts(ctx context.Context, id string) ([]BucketMount, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	f := m.mountFiles(b.rec.Key)
	list := f.load()
	for i := range list {
		list[i].Status = MountIdle
		if b.running == nil {
			continue
		}
		list[i].Status = MountMounted
		if err := bucket.Healthy(f.host(list[i].N)); err != nil {
			m.log.Warn("bucket mount is broken; mounting it again", "sandbox", id, "path", list[i].Path, "err", err)
			if err := m.remount(ctx, b, f, list[i]); err != nil {
				list[i].Status, list[i].Reason = MountBroken, err.Error()
			}
		}
	}
	return list, nil
}

// remount replaces a broken mount: out of the sandbox, off the host, then
// mounted and attached again.
func (m *Manager) remount(ctx context.Context, b *box, f mountFiles, bm BucketMount) error {
	m.detachMount(ctx, b, f, bm)
	return m.attachMount(ctx, b, f, bm)
}

// restoreMounts brings b's recorded mounts into its freshly started
// container. A mount that fails is logged and reported broken by Mounts;
// the sandbox starts anyway.
func (m *Manager) restoreMounts(ctx context.Context, b *box) {
	if b.running == nil {
		return
	}
	f := m.mountFiles(b.rec.Key)
	for _, bm := range f.load() {
		if err := m.attachMount(ctx, b, f, bm); err != nil {
			m.log.Error("restoring a bucket mount", "sandbox", b.id, "path", bm.Path, "err", err)
		}
	}
}

// releaseMounts unmounts every host mount of the sandbox with key (its
// container is gone or going): the FUSE clients exit with them, and a
// gVisor sandbox's shared directory goes last.
func (m *Manager) releaseMounts(key string) error {
	f := m.mountFiles(key)
	entries, err := os.ReadDir(f.hosted)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, bucket.Unmount(filepath.Join(f.hosted, e.Name())))
	}
	if err := unix.Unmount(f.hosted, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("unmounting %s: %w", f.hosted, err))
	}
	errs = append(errs, os.Remove(f.hosted))
	return errors.Join(errs...)
}
