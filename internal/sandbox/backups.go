package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/atomicfile"
	"github.com/sandboxd/sandboxd/internal/backup"
	"github.com/sandboxd/sandboxd/internal/nsmount"
	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// Backups of a directory (docs/snapshots.md, Backups). A backup is made
// from the agent's tar stream of the directory (package backup says why);
// a restore mounts the backup's squashfs image, read-only, as the lower
// layer of an overlay whose upper layer is the sandbox's own, and moves
// that overlay into the running sandbox at the directory, as bucket
// mounts are (package nsmount). Nothing is copied, so a restore takes as
// long as a few mounts whatever the backup's size.
//
// On the host, restore n of the sandbox with key is:
//
//	<state>/sandboxes/<key>/backups/restores.json  the records
//	<state>/sandboxes/<key>/backups/<n>.sqfs       a hard link to the image
//	<writable>/restores/<n>/{upper,work}           its writes (on the disk quota's filesystem when there is one)
//	<run>/restores/<key>/<n>/{image,lower,merged}  the mounts, while the sandbox runs
//
// The hard link keeps the image for the sandbox after the backup is
// removed or expires; destroy removes it with the sandbox's directory.

// MaxRestores bounds the restored backups of one sandbox: each holds a
// loop device while the sandbox runs.
const MaxRestores = 8

// BackupOptions are what CreateBackup takes besides the sandbox and
// directory.
type BackupOptions struct {
	Name string
	// TTL: zero means backup.DefaultTTL.
	TTL time.Duration
}

// Restore is one backup restored into a sandbox.
type Restore struct {
	N         int       `json:"n"`
	Path      string    `json:"path"`
	Backup    string    `json:"backup"`
	CreatedAt time.Time `json:"createdAt"`
}

// Backups is the backup store; nil when the daemon has none.
func (m *Manager) Backups() *backup.Store { return m.opts.Backups }

// backupReservedPaths are the trees a backup may not be taken of: the
// kernel's and the agent's.
var backupReservedPaths = []string{"/proc", "/sys", "/dev", "/.sandboxd", "/var/lib/sandboxd-agent"}

// ValidateBackupDir checks the directory of a backup: absolute, clean,
// not / and not in the kernel's trees.
func ValidateBackupDir(p string) error {
	return validateSandboxPath(p, backupReservedPaths, "back up a directory, not the whole sandbox (take a snapshot)")
}

// CreateBackup backs up the directory dir of the sandbox id (started if
// it is not running): its agent streams the directory as tar, and the
// store packs the stream into an image. The sandbox is not frozen: a file
// changed during the backup may be caught half-way, as with any copy of
// a live directory.
func (m *Manager) CreateBackup(ctx context.Context, id, dir string, o BackupOptions) (backup.Backup, error) {
	st := m.opts.Backups
	if st == nil {
		return backup.Backup{}, fmt.Errorf("%w: this daemon keeps no backups", ErrUnsupported)
	}
	if err := ValidateBackupDir(dir); err != nil {
		return backup.Backup{}, err
	}
	req := backup.CreateRequest{Sandbox: id, Dir: dir, Name: o.Name, TTL: o.TTL}
	if err := req.Validate(); err != nil {
		return backup.Backup{}, err
	}
	if _, err := m.Get(ctx, id); err != nil {
		return backup.Backup{}, err
	}
	lease, err := m.Acquire(ctx, id)
	if err != nil {
		return backup.Backup{}, err
	}
	defer lease.Release()
	body, err := exportDir(ctx, lease.Transport, dir)
	if err != nil {
		return backup.Backup{}, err
	}
	defer body.Close()
	b, err := st.Create(ctx, req, body, m.maxBackupBytes())
	if err != nil {
		return backup.Backup{}, err
	}
	m.log.Info("backup created", "sandbox", id, "dir", dir, "backup", b.ID, "bytes", b.Bytes, "size", b.Size)
	return b, nil
}

// maxBackupBytes is Options.MaxBackupBytes, 4 GiB when unset.
func (m *Manager) maxBackupBytes() int64 {
	if m.opts.MaxBackupBytes > 0 {
		return m.opts.MaxBackupBytes
	}
	return 4 << 30
}

// exportDir asks the agent for dir as a tar stream, on dir's own file
// system: a backup of /workspace must not copy a bucket's objects or a
// volume mounted below it.
func exportDir(ctx context.Context, tr http.RoundTripper, dir string) (io.ReadCloser, error) {
	u := "http://agent/files/archive?" + url.Values{"path": {dir}, "oneFileSystem": {"true"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("%w: the sandbox's agent did not answer: %v", ErrUnavailable, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	var e struct {
		Message string `json:"message"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
	return nil, fmt.Errorf("%w: %s: %s", ErrMountPathInvalid, dir, e.Message)
}

// restoreFiles are where a sandbox's restores live on the host.
type restoreFiles struct {
	list, dir string // the records, and their directory in the state dir
	writable  string // <writable>/restores
	run       string // <run>/restores/<key>
}

func (m *Manager) restoreFiles(b *box) restoreFiles {
	p := m.paths(b.rec.Key)
	w := p.dir
	if b.cfg.Limits.DiskBytes > 0 {
		w = p.disk
	}
	dir := filepath.Join(p.dir, "backups")
	return restoreFiles{list: filepath.Join(dir, "restores.json"), dir: dir,
		writable: filepath.Join(w, "restores"), run: m.restoreRunDir(b.rec.Key)}
}

func (m *Manager) restoreRunDir(key string) string {
	return filepath.Join(m.opts.RunDir, "restores", key)
}

func (f restoreFiles) image(n int) string { return filepath.Join(f.dir, strconv.Itoa(n)+".sqfs") }
func (f restoreFiles) rw(n int) string    { return filepath.Join(f.writable, strconv.Itoa(n)) }
func (f restoreFiles) mnt(n int) string   { return filepath.Join(f.run, strconv.Itoa(n)) }

func (f restoreFiles) load() []Restore {
	data, err := os.ReadFile(f.list)
	if err != nil {
		return nil
	}
	var l []Restore
	json.Unmarshal(data, &l)
	return l
}

func (f restoreFiles) save(l []Restore) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return atomicfile.Write(f.list, data, 0o600)
}

// RestoreBackup mounts backup bk copy-on-write at dir (bk's directory when
// empty) in the sandbox id, starting it if needed. A restore at a path
// that already holds one replaces it (its writes are dropped).
func (m *Manager) RestoreBackup(ctx context.Context, id string, bk backup.Backup, dir string) (Restore, error) {
	st := m.opts.Backups
	if st == nil {
		return Restore{}, fmt.Errorf("%w: this daemon keeps no backups", ErrUnsupported)
	}
	if dir == "" {
		dir = bk.Dir
	}
	if err := ValidateMountPath(dir); err != nil {
		return Restore{}, err
	}
	// Before the sandbox's lock: a remote backup downloads here.
	image, err := st.Image(ctx, bk, m.maxBackupBytes())
	if err != nil {
		return Restore{}, err
	}
	b, _, err := m.getOrCreate(ctx, id, Config{})
	if err != nil {
		return Restore{}, err
	}
	defer b.mu.Unlock()
	if b.isGVisor() {
		return Restore{}, fmt.Errorf("%w: restoring backups into gVisor sandboxes is not built yet (docs/snapshots.md)", ErrUnsupported)
	}
	f := m.restoreFiles(b)
	list := f.load()
	keep, err := m.checkRestorePath(b, list, dir)
	if err != nil {
		return Restore{}, err
	}
	if err := m.startLocked(ctx, b); err != nil {
		return Restore{}, err
	}
	b.touch(m.now())
	r := Restore{N: nextRestoreN(list), Path: dir, Backup: bk.ID, CreatedAt: m.now().UTC()}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return Restore{}, err
	}
	if err := linkImage(image, f.image(r.N)); err != nil {
		return Restore{}, err
	}
	// The one it replaces goes first: a mount cannot be moved onto a path
	// that crosses another.
	var replaced []Restore
	for _, old := range list {
		if old.Path == dir {
			m.detachRestore(b, f, old)
			replaced = append(replaced, old)
		}
	}
	if err := m.attachRestore(ctx, b, f, r); err != nil {
		m.dropRestoreFiles(f, r)
		for _, old := range replaced {
			if aerr := m.attachRestore(ctx, b, f, old); aerr != nil {
				m.log.Error("putting back a restored backup", "sandbox", id, "path", old.Path, "err", aerr)
			}
		}
		return Restore{}, err
	}
	if err := f.save(append(keep, r)); err != nil {
		m.detachRestore(b, f, r)
		m.dropRestoreFiles(f, r)
		return Restore{}, err
	}
	for _, old := range replaced {
		m.dropRestoreFiles(f, old)
	}
	m.log.Info("backup restored", "sandbox", id, "backup", bk.ID, "path", dir)
	return r, nil
}

// checkRestorePath refuses dir when it overlaps a bucket mount, a volume
// or another restore (other than one at dir itself, which it replaces),
// and returns the restores that stay.
func (m *Manager) checkRestorePath(b *box, list []Restore, dir string) ([]Restore, error) {
	for _, bm := range m.mountFiles(b.rec.Key).load() {
		if overlaps(bm.Path, dir) {
			return nil, fmt.Errorf("%w: %s overlaps the bucket mount at %s", ErrMountPathInUse, dir, bm.Path)
		}
	}
	for _, v := range b.cfg.Volumes {
		if overlaps(v.Path, dir) {
			return nil, fmt.Errorf("%w: %s overlaps the volume %s at %s", ErrMountPathInUse, dir, v.Name, v.Path)
		}
	}
	var keep []Restore
	for _, r := range list {
		if r.Path == dir {
			continue
		}
		if overlaps(r.Path, dir) {
			return nil, fmt.Errorf("%w: %s overlaps the backup restored at %s", ErrMountPathInUse, dir, r.Path)
		}
		keep = append(keep, r)
	}
	if len(keep) >= MaxRestores {
		return nil, fmt.Errorf("%w: a sandbox has at most %d restored backups", ErrLimit, MaxRestores)
	}
	return keep, nil
}

func nextRestoreN(list []Restore) int {
	n := 0
	for _, r := range list {
		n = max(n, r.N+1)
	}
	return n
}

// linkImage hard-links the store's image into the sandbox's directory
// (both are in the state directory); a copy when they are on different
// filesystems.
func linkImage(src, dst string) error {
	os.Remove(dst)
	err := os.Link(src, dst)
	if err == nil || !errors.Is(err, unix.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// attachRestore mounts r on the host (image, idmapped lower for a sandbox
// in a user namespace, overlay) and moves a copy of the overlay into b's
// running container at r.Path.
func (m *Manager) attachRestore(ctx context.Context, b *box, f restoreFiles, r Restore) (err error) {
	mnt := f.mnt(r.N)
	image, lower, merged := filepath.Join(mnt, "image"), filepath.Join(mnt, "lower"), filepath.Join(mnt, "merged")
	m.releaseRestore(mnt)
	defer func() {
		if err != nil {
			m.releaseRestore(mnt)
		}
	}()
	for _, d := range []string{image, merged} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := backup.MountImage(ctx, f.image(r.N), image); err != nil {
		return err
	}
	owner := m.mountOwner(b)
	if ids := b.hostIDs(); ids != nil {
		userns := m.userns.Open(*ids)
		err := rootfs.MountIDMapped(image, lower, userns)
		userns.Close()
		if err != nil {
			return err
		}
	} else {
		lower = image
	}
	upper, work := filepath.Join(f.rw(r.N), "upper"), filepath.Join(f.rw(r.N), "work")
	if err := makeUpper(upper, work, lower); err != nil {
		return err
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mounting the restore's overlay: %w", err)
	}
	err = nsmount.Attach(b.running.pid, merged, r.Path, nsmount.Options{UID: owner.UID, GID: owner.GID})
	if errors.Is(err, nsmount.ErrPathInvalid) {
		return fmt.Errorf("%w: %v", ErrMountPathInvalid, err)
	}
	return err
}

// makeUpper creates the overlay's upper and work directories; a new upper
// directory takes the owner and mode of the image's root (as the lower
// layer shows them), which overlayfs shows as the directory's.
func makeUpper(upper, work, lower string) error {
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(upper); err == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(lower, &st); err != nil {
		return err
	}
	if err := os.Mkdir(upper, 0o700); err != nil {
		return err
	}
	if err := os.Chown(upper, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return os.Chmod(upper, os.FileMode(st.Mode&0o777))
}

// releaseRestore unmounts a restore's host mounts (overlay, idmapped
// lower, image: the loop device goes with the image's last mount) and
// removes their directories.
func (m *Manager) releaseRestore(mnt string) error {
	var errs []error
	for _, d := range []string{"merged", "lower", "image"} {
		p := filepath.Join(mnt, d)
		if err := rootfs.Unmount(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		os.Remove(mnt)
	}
	return errors.Join(errs...)
}

// detachRestore takes r out of b's container (if it runs) and off the
// host.
func (m *Manager) detachRestore(b *box, f restoreFiles, r Restore) {
	if b.running != nil {
		if err := nsmount.Detach(b.running.pid, r.Path); err != nil {
			m.log.Warn("unmounting a restored backup in the sandbox", "sandbox", b.id, "path", r.Path, "err", err)
		}
	}
	if err := m.releaseRestore(f.mnt(r.N)); err != nil {
		m.log.Warn("unmounting a restored backup on the host", "sandbox", b.id, "path", r.Path, "err", err)
	}
}

// dropRestoreFiles deletes r's image link and writes.
func (m *Manager) dropRestoreFiles(f restoreFiles, r Restore) {
	os.Remove(f.image(r.N))
	os.RemoveAll(f.rw(r.N))
}

// Restores lists the backups restored into sandbox id.
func (m *Manager) Restores(ctx context.Context, id string) ([]Restore, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	return m.restoreFiles(b).load(), nil
}

// restoreBackups brings b's restored backups into its freshly started
// container; one that fails is logged, and the sandbox starts anyway.
func (m *Manager) restoreBackups(ctx context.Context, b *box) {
	if b.isGVisor() || b.running == nil {
		return
	}
	f := m.restoreFiles(b)
	for _, r := range f.load() {
		if err := m.attachRestore(ctx, b, f, r); err != nil {
			m.log.Error("restoring a restored backup", "sandbox", b.id, "path", r.Path, "err", err)
		}
	}
}

// releaseRestores unmounts every host mount of the restores of the
// sandbox with key (its container is gone or going).
func (m *Manager) releaseRestores(key string) error {
	run := m.restoreRunDir(key)
	entries, err := os.ReadDir(run)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, m.releaseRestore(filepath.Join(run, e.Name())))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(run)
}
