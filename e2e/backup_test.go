package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/s3test"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// loopFilesBelow lists the loop devices whose backing file is below dir.
func loopFilesBelow(dir string) []string {
	out, _ := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output()
	var l []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, dir+"/") {
			l = append(l, strings.TrimSpace(line))
		}
	}
	return l
}

// TestBackups backs up a directory of one sandbox into a real S3 server
// (versitygw on loopback) and restores it into another, and checks what a
// user would: the files with their owners, copy-on-write writes that stay
// in the restoring sandbox, the restore surviving a stop and a daemon
// restart, a restore from the object store alone (another host's view),
// the errors, expiry, tenants, and that destroy leaves no mount or loop
// device behind.
func TestBackups(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	if _, err := exec.LookPath("tar2sqfs"); err != nil {
		t.Skip("tar2sqfs (squashfs-tools-ng) not installed: run scripts/deps.sh")
	}
	srv := s3test.Start(t)
	srv.Bucket(t, "backups")
	ctx := ctxT(t, 5*time.Minute)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{
		"--backup-store", "s3://backups/team", "--backup-store-endpoint", srv.Endpoint,
		"--backup-store-secret", "backup-store", "--max-backup-size", "8Mi",
	}})
	src := d.Client.Sandbox("bk-src")
	run(t, src, "mkdir -p /work/app/sub && echo hello > /work/app/sub/f && ln -s sub/f /work/app/link && "+
		"chown 1000:1000 /work/app/sub/f && chmod 0640 /work/app/sub/f")

	t.Run("store unavailable without its credentials", func(t *testing.T) {
		_, err := src.Backup(ctx, "/work/app", client.BackupOptions{})
		wantCode(t, "backup before the store's secret exists", err, api.CodeBackupStoreUnavailable)
	})
	if err := d.Client.SetSecret(ctx, "backup-store", map[string]string{
		"AWS_ACCESS_KEY_ID": srv.Creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY": srv.Creds.SecretAccessKey,
	}); err != nil {
		t.Fatal(err)
	}

	bk, err := src.Backup(ctx, "/work/app", client.BackupOptions{Name: "app", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dst := d.Client.Sandbox("bk-dst")
	run(t, dst, "true")

	t.Run("handle and object store", func(t *testing.T) {
		if !strings.HasPrefix(bk.ID, "bk-") || bk.Sandbox != "bk-src" || bk.Dir != "/work/app" || bk.Name != "app" || bk.Size <= 0 {
			t.Errorf("backup = %+v", bk)
		}
		if d := bk.ExpiresAt.Sub(bk.CreatedAt); d != time.Hour {
			t.Errorf("expiresAt - createdAt = %s, want 1h", d)
		}
		keys, err := srv.Client().ListKeys(ctx, "backups", "team/")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"team/" + bk.ID + ".json", "team/" + bk.ID + ".sqfs"} {
			if !slices.Contains(keys, want) {
				t.Errorf("object %s missing from the bucket: %v", want, keys)
			}
		}
		list, err := d.Client.ListBackups(ctx)
		if err != nil || len(list) != 1 || list[0].ID != bk.ID {
			t.Errorf("ListBackups = %+v, %v", list, err)
		}
	})

	t.Run("restored into another sandbox", func(t *testing.T) {
		r, err := dst.RestoreBackup(ctx, bk.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if r.Dir != "/work/app" || r.Backup != bk.ID {
			t.Errorf("restore = %+v", r)
		}
		if got := run(t, dst, "cat /work/app/sub/f; readlink /work/app/link; stat -c '%u:%g %a' /work/app/sub/f"); got != "hello\nsub/f\n1000:1000 640\n" {
			t.Errorf("restored files = %q", got)
		}
		// nosuid, nodev: a set-user-ID file or a device node in a backup
		// gives nothing.
		if got := run(t, dst, "grep ' /work/app ' /proc/self/mountinfo"); !strings.Contains(got, "nosuid") || !strings.Contains(got, "nodev") {
			t.Errorf("restored mount is not nosuid,nodev: %s", got)
		}
		// The store's credentials never reach a sandbox.
		secret := srv.Creds.SecretAccessKey
		if code, out := exitOf(t, dst, "grep -rsF -l "+secret+" /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/self/mountinfo /work /srv /etc /tmp"); strings.TrimSpace(out) != "" {
			t.Errorf("the store's secret is visible in the sandbox (exit %d): %s", code, out)
		}
		// Copy-on-write: the restoring sandbox writes its own copy.
		run(t, dst, "echo mine >> /work/app/sub/f && echo new > /work/app/new")
		if got := run(t, src, "cat /work/app/sub/f; ls /work/app"); got != "hello\nlink\nsub\n" {
			t.Errorf("the source sandbox sees %q after the restoring one wrote", got)
		}
		if _, err := dst.RestoreBackup(ctx, bk.ID, "/srv/second"); err != nil {
			t.Fatal(err)
		}
		if got := run(t, dst, "cat /srv/second/sub/f"); got != "hello\n" {
			t.Errorf("second restore = %q", got)
		}
	})

	t.Run("a backup stays on its directory's file system", func(t *testing.T) {
		// dst's /work/app is another file system (the restore above): a
		// backup of /work keeps its mount point, empty, as a bucket's or a
		// volume's below a backed-up /workspace.
		run(t, dst, "echo outer > /work/own")
		outer, err := dst.Backup(ctx, "/work", client.BackupOptions{TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.RestoreBackup(ctx, outer.ID, "/srv/outer"); err != nil {
			t.Fatal(err)
		}
		if got := run(t, src, "cd /srv/outer && find . | sort"); got != ".\n./app\n./own\n" {
			t.Errorf("the backup of /work holds %q, want own and the mount point app, empty", got)
		}
		if err := d.Client.RemoveBackup(ctx, outer.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restores survive stop and daemon restart", func(t *testing.T) {
		if _, err := dst.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if got := run(t, dst, "cat /work/app/sub/f /work/app/new"); got != "hello\nmine\nnew\n" {
			t.Errorf("after stop and start: %q", got)
		}
		d.Restart(t)
		if got := run(t, dst, "cat /work/app/sub/f /srv/second/sub/f"); got != "hello\nmine\nhello\n" {
			t.Errorf("after a daemon restart: %q", got)
		}
	})

	t.Run("restore from the object store alone", func(t *testing.T) {
		// Another host has no cached image: it downloads it.
		if err := os.Remove(filepath.Join(d.StateDir, "backups", "cache", bk.ID+".sqfs")); err != nil {
			t.Fatal(err)
		}
		if _, err := dst.RestoreBackup(ctx, bk.ID, "/srv/third"); err != nil {
			t.Fatal(err)
		}
		if got := run(t, dst, "cat /srv/third/sub/f"); got != "hello\n" {
			t.Errorf("restore after download = %q", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, err := src.Backup(ctx, "work/app", client.BackupOptions{})
		wantCode(t, "relative directory", err, api.CodeMountPathInvalid)
		_, err = src.Backup(ctx, "/proc/self", client.BackupOptions{})
		wantCode(t, "directory in /proc", err, api.CodeMountPathInvalid)
		_, err = src.Backup(ctx, "/work/none", client.BackupOptions{})
		wantCode(t, "missing directory", err, api.CodeMountPathInvalid)
		_, err = dst.RestoreBackup(ctx, "bk-0000000000000000", "")
		wantCode(t, "unknown backup", err, api.CodeBackupNotFound)
		_, err = dst.RestoreBackup(ctx, "../../x", "")
		wantCode(t, "malformed backup ID", err, api.CodeBackupNotFound)
		_, err = dst.RestoreBackup(ctx, bk.ID, "/etc")
		wantCode(t, "restore over /etc", err, api.CodeMountPathInvalid)
		_, err = dst.RestoreBackup(ctx, bk.ID, "/work")
		wantCode(t, "restore over another restore", err, api.CodeMountPathInUse)
		run(t, src, "mkdir -p /work/big && head -c 9437184 /dev/urandom > /work/big/blob")
		_, err = src.Backup(ctx, "/work/big", client.BackupOptions{})
		wantCode(t, "directory over --max-backup-size", err, api.CodeBackupTooLarge)
	})

	t.Run("cli", func(t *testing.T) {
		out, errOut, code := cli(t, d, "", "backup", "create", "bk-src", "/work/app", "--name", "cli", "--ttl", "1h", "--json")
		if code != 0 {
			t.Fatalf("backup create: exit %d: %s", code, errOut)
		}
		var h map[string]any
		if err := json.Unmarshal([]byte(out), &h); err != nil {
			t.Fatalf("backup create --json: %v: %s", err, out)
		}
		for _, k := range []string{"id", "sandbox", "dir", "name", "size", "createdAt", "expiresAt"} {
			if _, ok := h[k]; !ok {
				t.Errorf("the handle lacks %q: %s", k, out)
			}
		}
		id, _ := h["id"].(string)
		if out, _, _ := cli(t, d, "", "backup", "ls", "--json"); !strings.Contains(out, id) {
			t.Errorf("backup ls --json lacks %s: %s", id, out)
		}
		if out, errOut, code := cli(t, d, "", "backup", "restore", "bk-dst", id, "/srv/cli"); code != 0 || strings.TrimSpace(out) != "/srv/cli" {
			t.Errorf("backup restore: exit %d, %q, %s", code, out, errOut)
		}
		if got := run(t, dst, "cat /srv/cli/sub/f"); got != "hello\n" {
			t.Errorf("restored through the CLI: %q", got)
		}
		if _, errOut, code := cli(t, d, "", "backup", "rm", id); code != 0 {
			t.Errorf("backup rm: exit %d: %s", code, errOut)
		}
	})

	t.Run("expired backup gone", func(t *testing.T) {
		short, err := src.Backup(ctx, "/work/app/sub", client.BackupOptions{TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		_, err = d.Client.Backup(ctx, short.ID)
		wantCode(t, "expired backup", err, api.CodeBackupExpired)
		_, err = dst.RestoreBackup(ctx, short.ID, "/srv/expired")
		wantCode(t, "restore of a collected backup", err, api.CodeBackupNotFound)
		keys, _ := srv.Client().ListKeys(ctx, "backups", "team/"+short.ID)
		if len(keys) != 0 {
			t.Errorf("objects of the expired backup left: %v", keys)
		}
	})

	t.Run("a tenant sees only its own backups", func(t *testing.T) {
		ta, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "bk-team"})
		list, err := ta.ListBackups(ctx)
		if err != nil || len(list) != 0 {
			t.Errorf("the tenant lists %+v, %v; want none", list, err)
		}
		_, err = ta.Backup(ctx, bk.ID)
		wantCode(t, "another tenant's backup", err, api.CodeBackupNotFound)
		_, err = ta.Sandbox("bk-dst").RestoreBackup(ctx, bk.ID, "/srv/stolen")
		wantCode(t, "restoring another tenant's backup", err, api.CodeBackupNotFound)
		wantCode(t, "removing another tenant's backup", ta.RemoveBackup(ctx, bk.ID), api.CodeBackupNotFound)
	})

	t.Run("removed backup stays in the sandboxes it was restored into", func(t *testing.T) {
		if err := d.Client.RemoveBackup(ctx, bk.ID); err != nil {
			t.Fatal(err)
		}
		_, err := d.Client.Backup(ctx, bk.ID)
		wantCode(t, "removed backup", err, api.CodeBackupNotFound)
		if _, err := dst.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if got := run(t, dst, "cat /work/app/sub/f"); got != "hello\nmine\n" {
			t.Errorf("after rm and a restart: %q", got)
		}
	})

	t.Run("nothing leaked after destroy", func(t *testing.T) {
		for _, sb := range []*client.Sandbox{src, dst} {
			if err := sb.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if m := hostMountsBelow(filepath.Join(d.RunDir, "restores")); len(m) != 0 {
			t.Errorf("restore mounts left below the run directory: %v", m)
		}
		if m := hostMountsBelow(d.StateDir); len(m) != 0 {
			t.Errorf("mounts left below the state directory: %v", m)
		}
		if l := loopFilesBelow(d.StateDir); len(l) != 0 {
			t.Errorf("loop devices left: %v", l)
		}
		if _, err := os.Stat(filepath.Join(d.RunDir, "restores")); err == nil {
			if e, _ := os.ReadDir(filepath.Join(d.RunDir, "restores")); len(e) != 0 {
				t.Errorf("restore directories left: %v", e)
			}
		}
	})
}
