package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/bucket"
	"github.com/sandboxd/sandboxd/internal/s3test"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// s3fsProcesses lists the s3fs processes whose mount point is below dir.
func s3fsProcesses(dir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if len(args) > 2 && filepath.Base(args[0]) == "s3fs" && strings.HasPrefix(args[2], dir+"/") {
			out = append(out, p+": "+strings.Join(args, " "))
		}
	}
	return out
}

// hostMountsBelow lists the host's mount points below dir.
func hostMountsBelow(dir string) []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// eventually polls cond until it holds or limit passes (s3fs writes objects
// when a file is closed, and caches listings for a moment).
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBucketMount mounts buckets of a real S3 server (versitygw on
// loopback) into running sandboxes and checks what a user would: data in
// both directions, prefixes, read-only, the errors, that the sandbox can
// neither see the credentials nor unmount the bucket, that mounts survive
// a restart of the sandbox, sleep, a restart of the daemon and a host
// reboot, and that nothing is left after destroy. The core cases run once
// per runtime, in sandboxes of one daemon.
func TestBucketMount(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	srv := s3test.Start(t)
	srv.Bucket(t, "data")
	srv.Bucket(t, "other")
	ctx := ctxT(t, 5*time.Minute)
	s3c := srv.Client()
	if err := s3c.PutObject(ctx, "data", "hello.txt", []byte("from s3\n")); err != nil {
		t.Fatal(err)
	}
	if err := s3c.PutObject(ctx, "data", "team/a/notes.txt", []byte("prefixed\n")); err != nil {
		t.Fatal(err)
	}
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--idle-check", "100ms"}})
	sb := d.Client.Sandbox("bucket-one")
	run(t, sb, "true")
	creds := &api.BucketCredentials{AccessKeyID: srv.Creds.AccessKeyID, SecretAccessKey: srv.Creds.SecretAccessKey}
	opts := client.MountOptions{Endpoint: srv.Endpoint, Credentials: creds}
	// One sandbox per runtime; gv is the gVisor one, when runsc is built.
	var gv *client.Sandbox
	boxes := []*client.Sandbox{sb}
	for _, rt := range runtimes(t) {
		if rt == "gvisor" {
			gv = d.Client.Sandbox("bucket-gv", client.WithRuntime("gvisor"))
			run(t, gv, "true")
			boxes = append(boxes, gv)
		}
	}
	for _, sb := range boxes {
		name := "host-kernel"
		if sb == gv {
			name = "gvisor"
		}
		t.Run(name, func(t *testing.T) { bucketCoreCases(t, d, srv, sb, opts) })
	}
	if t.Failed() {
		return
	}

	t.Run("errors", func(t *testing.T) {
		bad := opts
		bad.Credentials = &api.BucketCredentials{AccessKeyID: srv.Creds.AccessKeyID, SecretAccessKey: "wrong-secret"}
		down := opts
		down.Endpoint = "http://127.0.0.1:1"
		cases := []struct {
			name, bucket, path string
			opts               client.MountOptions
			want               api.Code
		}{
			{"wrong credentials", "data", "/mnt/x", bad, api.CodeBucketAuthFailed},
			{"no such bucket", "nope", "/mnt/x", opts, api.CodeBucketNotFound},
			{"endpoint down", "data", "/mnt/x", down, api.CodeBucketUnreachable},
			{"relative path", "data", "mnt/x", opts, api.CodeMountPathInvalid},
			{"over /proc", "data", "/proc/x", opts, api.CodeMountPathInvalid},
			{"over /usr", "data", "/usr/lib/x", opts, api.CodeMountPathInvalid},
			{"agent files", "data", "/.sandboxd/x", opts, api.CodeMountPathInvalid},
			{"dot-dot", "data", "/mnt/../proc", opts, api.CodeMountPathInvalid},
			{"in use", "other", "/mnt/data", opts, api.CodeMountPathInUse},
			{"below a mount", "other", "/mnt/data/sub", opts, api.CodeMountPathInUse},
		}
		for _, c := range cases {
			_, err := sb.MountBucket(ctx, c.bucket, c.path, c.opts)
			if got := codeOf(err); got != c.want {
				t.Errorf("%s: error %v; want %s", c.name, err, c.want)
			}
		}
		if err := sb.UnmountBucket(ctx, "/mnt/none"); codeOf(err) != api.CodeMountNotFound {
			t.Errorf("unmount of nothing: %v; want MOUNT_NOT_FOUND", err)
		}
	})

	t.Run("two sandboxes one bucket", func(t *testing.T) {
		sb2 := d.Client.Sandbox("bucket-two")
		if _, err := sb2.MountBucket(ctx, "data", "/data", opts); err != nil {
			t.Fatal(err)
		}
		run(t, sb2, "echo two > /data/two.txt")
		eventually(t, 30*time.Second, "the second sandbox's file in the first", func() bool {
			code, out := exitOf(t, sb, "cat /mnt/data/two.txt")
			return code == 0 && out == "two\n"
		})
	})

	t.Run("CLI and named secrets", func(t *testing.T) {
		env := []string{"AWS_ACCESS_KEY_ID=" + srv.Creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + srv.Creds.SecretAccessKey}
		sandboxCLI := func(withEnv bool, args ...string) string {
			t.Helper()
			cmd := exec.Command(filepath.Join(testdaemon.BinDir(t), "sandbox"), append([]string{"--url", d.URL, "--token", d.Token}, args...)...)
			cmd.Env = os.Environ()
			if withEnv {
				cmd.Env = append(cmd.Env, env...)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("sandbox %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		sandboxCLI(true, "secret", "set", "s3test", "--from-env", "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY")
		ls := sandboxCLI(false, "secret", "ls", "--json")
		if !strings.Contains(ls, `"s3test"`) || !strings.Contains(ls, "AWS_SECRET_ACCESS_KEY") || strings.Contains(ls, srv.Creds.SecretAccessKey) {
			t.Fatalf("secret ls = %s; want the name and variable names, never the value", ls)
		}
		sandboxCLI(false, "mount", "bucket-one", "s3://other", "/mnt/other", "--endpoint", srv.Endpoint, "--credentials", "s3test")
		sandboxCLI(true, "mount", "bucket-one", "s3://data/team", "/mnt/envcreds", "--endpoint", srv.Endpoint, "--read-only", "--json")
		table := sandboxCLI(false, "mounts", "bucket-one")
		for _, want := range []string{"/mnt/other", "s3://other", "/mnt/envcreds", "s3://data/team", "ro", "mounted"} {
			if !strings.Contains(table, want) {
				t.Errorf("sandbox mounts: no %q in\n%s", want, table)
			}
		}
		run(t, sb, "ls /mnt/envcreds/a && echo via-secret > /mnt/other/x.txt")
		sandboxCLI(false, "unmount", "bucket-one", "/mnt/other")
		sandboxCLI(false, "unmount", "bucket-one", "/mnt/envcreds")
		sandboxCLI(false, "secret", "rm", "s3test")
		if err := d.Client.RemoveSecret(ctx, "s3test"); codeOf(err) != api.CodeSecretNotFound {
			t.Errorf("removing a removed secret: %v; want SECRET_NOT_FOUND", err)
		}
		if _, err := sb.MountBucket(ctx, "other", "/mnt/other", client.MountOptions{Endpoint: srv.Endpoint, Secret: "s3test"}); codeOf(err) != api.CodeSecretNotFound {
			t.Errorf("mount with a removed secret: %v; want SECRET_NOT_FOUND", err)
		}
	})

	// allMounted checks that every bucket mount of every sandbox in boxes
	// is mounted, and can be read in the sandbox.
	allMounted := func(t *testing.T, what string, boxes ...*client.Sandbox) {
		t.Helper()
		for _, s := range boxes {
			mounts, err := s.Mounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range mounts {
				if m.Status != api.MountStatusMounted {
					t.Errorf("%s: %s's %s is %s (%s)", what, s.ID(), m.Path, m.Status, m.Reason)
				}
				run(t, s, "ls "+m.Path+" >/dev/null")
			}
		}
	}
	two := d.Client.Sandbox("bucket-two")
	all := append([]*client.Sandbox{two}, boxes...)

	t.Run("dead FUSE clients are restarted", func(t *testing.T) {
		procs := s3fsProcesses(d.RunDir)
		if len(procs) < len(all) {
			t.Fatalf("s3fs processes: %v", procs)
		}
		for _, proc := range procs {
			var pid int
			fmt.Sscanf(strings.TrimPrefix(proc, "/proc/"), "%d", &pid)
			syscall.Kill(pid, syscall.SIGKILL)
			eventually(t, 10*time.Second, "s3fs gone", func() bool { return !alivePID(pid) })
		}
		allMounted(t, "after the FUSE clients died", all...)
		run(t, sb, "cat /mnt/data/hello.txt /mnt/team/notes.txt")
	})

	// The readahead window the daemon sets on each s3fs mount (1 MiB, not
	// FUSE's 128 KiB; see bucket.ReadaheadKB), checked after the
	// remounts above so that a restarted FUSE client gets it too.
	t.Run("readahead", func(t *testing.T) {
		n := 0
		for _, m := range hostMountsBelow(filepath.Join(d.RunDir, "buckets")) {
			if bucket.Healthy(m) != nil {
				continue // gVisor's bind of the directory, not a FUSE mount
			}
			n++
			if kb, err := bucket.Readahead(m); err != nil || kb != bucket.ReadaheadKB {
				t.Errorf("readahead of %s: %d KiB, %v; want %d", m, kb, err, bucket.ReadaheadKB)
			}
		}
		if n < len(all) {
			t.Errorf("%d s3fs mounts below %s; want at least %d", n, d.RunDir, len(all))
		}
	})

	t.Run("restart and daemon restart keep mounts", func(t *testing.T) {
		for _, s := range boxes {
			if _, err := s.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			if got := run(t, s, "cat /mnt/data/hello.txt"); got != "from s3\n" {
				t.Fatalf("%s after restart: %q", s.ID(), got)
			}
		}
		run(t, sb, "echo kept > /tmp/state-marker")
		d.Restart(t)
		if got := run(t, sb, "cat /tmp/state-marker /mnt/data/hello.txt"); got != "kept\nfrom s3\n" {
			t.Fatalf("after a daemon restart: %q", got)
		}
		for _, s := range boxes {
			if mounts, err := s.Mounts(ctx); err != nil || len(mounts) != 2 {
				t.Fatalf("%s's mounts after a daemon restart = %+v, %v", s.ID(), mounts, err)
			}
		}
		allMounted(t, "after a daemon restart", all...)
	})

	t.Run("sleep and wake keep mounts", func(t *testing.T) {
		second, keep := time.Second, time.Hour
		for _, s := range boxes {
			if _, err := s.Update(ctx, &second, nil); err != nil {
				t.Fatal(err)
			}
		}
		// An idle gVisor sandbox with bucket mounts sleeps: it cannot be
		// paused with its memory (docs/storage.md).
		for _, s := range boxes {
			waitStatus(t, s, api.StatusSleeping, 30*time.Second)
			mounts, err := s.Mounts(ctx)
			if err != nil || len(mounts) != 2 || mounts[0].Status != api.MountStatusIdle {
				t.Errorf("%s's mounts while it sleeps = %+v, %v; want 2, idle", s.ID(), mounts, err)
			}
		}
		if got := len(s3fsProcesses(d.RunDir)); got != 1 {
			t.Errorf("%d s3fs processes while the sandboxes sleep; want bucket-two's only", got)
		}
		for _, s := range boxes {
			if got := run(t, s, "cat /mnt/data/hello.txt"); got != "from s3\n" {
				t.Errorf("%s after waking: %q", s.ID(), got)
			}
			if _, err := s.Update(ctx, &keep, nil); err != nil {
				t.Fatal(err)
			}
		}
		allMounted(t, "after waking", boxes...)
	})

	t.Run("host reboot keeps mounts", func(t *testing.T) {
		// A stopped sandbox goes through the reboot too (the only way
		// here for a gVisor one: its processes are not the agent's).
		if gv != nil {
			if _, err := gv.Stop(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var pids []int
		for _, k := range d.Keys() {
			for _, rt := range []string{"crun", "runc"} {
				if _, err := os.Stat(filepath.Join(d.RunDir, "runtime", rt, "sandboxd-"+k)); err == nil {
					pids = append(pids, d.AgentPID(t, k))
				}
			}
		}
		d.Kill(t)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, proc := range s3fsProcesses(d.RunDir) {
			var pid int
			fmt.Sscanf(strings.TrimPrefix(proc, "/proc/"), "%d", &pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		simulateReboot(t, d)
		d.Start(t)
		for _, s := range all {
			if got := run(t, s, "cat /mnt/data/hello.txt 2>/dev/null || cat /data/hello.txt"); got != "from s3\n" {
				t.Errorf("%s after a reboot: %q", s.ID(), got)
			}
		}
		allMounted(t, "after a reboot", all...)
	})

	t.Run("unmount", func(t *testing.T) {
		for _, s := range boxes {
			if err := s.UnmountBucket(ctx, "/mnt/team"); err != nil {
				t.Fatal(err)
			}
			if code, _ := exitOf(t, s, "grep -q ' /mnt/team ' /proc/self/mountinfo"); code == 0 {
				t.Errorf("/mnt/team is still mounted in %s", s.ID())
			}
			if mounts, _ := s.Mounts(ctx); len(mounts) != 1 {
				t.Errorf("%s's mounts after unmount = %+v", s.ID(), mounts)
			}
		}
	})

	t.Run("destroy leaves nothing", func(t *testing.T) {
		for _, s := range all {
			if err := s.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Destroy stops the FUSE clients before it answers.
		if left := s3fsProcesses(d.RunDir); len(left) != 0 {
			t.Errorf("s3fs processes left after destroy: %v", left)
		}
		if left := hostMountsBelow(filepath.Join(d.RunDir, "buckets")); len(left) != 0 {
			t.Errorf("host mounts left after destroy: %v", left)
		}
		if _, err := os.Stat(filepath.Join(d.RunDir, "buckets")); err == nil {
			if entries, _ := os.ReadDir(filepath.Join(d.RunDir, "buckets")); len(entries) != 0 {
				t.Errorf("bucket directories left after destroy: %v", entries)
			}
		}
	})
}

func alivePID(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(data), ") Z ")
}

// TestVolumes shares a named volume between two running sandboxes (one
// read-only), checks its quota, its persistence across a restart, that it
// cannot be removed while used, and that removing it leaves nothing.
func TestVolumes(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	d := testdaemon.Start(t, testdaemon.Options{})
	ctx := ctxT(t, 5*time.Minute)
	if out, errOut, code := cli(t, d, "", "volume", "create", "shared", "--size", "128Mi"); code != 0 {
		t.Fatalf("volume create: %s%s", out, errOut)
	}
	if _, err := d.Client.CreateVolume(ctx, "shared", 0); codeOf(err) != api.CodeVolumeExists {
		t.Errorf("creating it again: %v; want VOLUME_EXISTS", err)
	}
	if out, errOut, code := cli(t, d, "", "create", "--volume", "shared:/shared", "vol-one"); code != 0 {
		t.Fatalf("create --volume: %s%s", out, errOut)
	}
	one := d.Client.Sandbox("vol-one")
	two := d.Client.Sandbox("vol-two", client.WithVolume("shared", "/data", true))
	run(t, one, "echo shared > /shared/x")
	if got := trim(run(t, two, "stat -c %u:%g /data/x /data")); got != "0:0\n0:0" {
		t.Errorf("owners in the second sandbox = %q; want its root, 0:0", got)
	}
	if got := run(t, two, "cat /data/x"); got != "shared\n" {
		t.Fatalf("the second sandbox reads %q", got)
	}
	if code, out := exitOf(t, two, "echo no > /data/y"); code == 0 || !strings.Contains(out, "Read-only file system") {
		t.Errorf("write to a read-only volume: exit %d, %q; want EROFS", code, out)
	}
	if code, out := exitOf(t, one, "dd if=/dev/zero of=/shared/big bs=1M count=200"); code == 0 || !strings.Contains(out, "No space left") {
		t.Errorf("writing past the volume's quota: exit %d, %q; want ENOSPC", code, out)
	}
	run(t, one, "rm /shared/big")
	if _, err := d.Client.Sandbox("vol-bad", client.WithVolume("nope", "/x", false)).Exec(ctx, "true"); codeOf(err) != api.CodeVolumeNotFound {
		t.Errorf("a sandbox naming an unknown volume: %v; want VOLUME_NOT_FOUND", err)
	}
	if _, err := d.Client.Sandbox("vol-bad2", client.WithVolume("shared", "/proc/x", false)).Exec(ctx, "true"); codeOf(err) != api.CodeMountPathInvalid {
		t.Errorf("a volume over /proc: %v; want MOUNT_PATH_INVALID", err)
	}
	if err := d.Client.RemoveVolume(ctx, "shared"); codeOf(err) != api.CodeVolumeInUse {
		t.Errorf("removing a volume in use: %v; want VOLUME_IN_USE", err)
	}
	vols, err := d.Client.Volumes(ctx)
	if err != nil || len(vols) != 1 || strings.Join(vols[0].Sandboxes, ",") != "vol-one,vol-two" || vols[0].SizeBytes != 128<<20 {
		t.Errorf("volumes = %+v, %v", vols, err)
	}
	if _, err := one.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := run(t, one, "cat /shared/x"); got != "shared\n" {
		t.Errorf("after a restart: %q", got)
	}
	for _, sb := range []*client.Sandbox{one, two} {
		if err := sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if out, errOut, code := cli(t, d, "", "volume", "rm", "shared"); code != 0 {
		t.Fatalf("volume rm: %s%s", out, errOut)
	}
	if left := hostMountsBelow(filepath.Join(d.RunDir, "volumes")); len(left) != 0 {
		t.Errorf("mounts left after volume rm: %v", left)
	}
	if _, err := os.Stat(filepath.Join(d.StateDir, "volumes", "shared")); !os.IsNotExist(err) {
		t.Errorf("the volume's files are still there: %v", err)
	}
}

// bucketCoreCases are what every runtime must do with bucket mounts, in
// the running sandbox sb: the bucket "data" at /mnt/data (read-write) and
// its prefix team/a at /mnt/team (read-only) stay mounted afterwards.
func bucketCoreCases(t *testing.T, d *testdaemon.Daemon, srv *s3test.Server, sb *client.Sandbox, opts client.MountOptions) {
	ctx := ctxT(t, 3*time.Minute)
	s3c := srv.Client()
	written, later := sb.ID()+"-written.txt", sb.ID()+"-later.txt"

	t.Run("read and write both ways", func(t *testing.T) {
		m, err := sb.MountBucket(ctx, "data", "/mnt/data", opts)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != api.MountStatusMounted || m.Path != "/mnt/data" {
			t.Fatalf("mount = %+v", m)
		}
		if got := run(t, sb, "cat /mnt/data/hello.txt"); got != "from s3\n" {
			t.Fatalf("object read in the sandbox = %q", got)
		}
		run(t, sb, "echo from sandbox > /mnt/data/"+written)
		eventually(t, 30*time.Second, "file written in the sandbox as an object", func() bool {
			got, err := s3c.GetObject(ctx, "data", written, 1<<20)
			return err == nil && string(got) == "from sandbox\n"
		})
		if err := s3c.PutObject(ctx, "data", later, []byte("put later\n")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "object put later visible in the sandbox", func() bool {
			code, out := exitOf(t, sb, "cat /mnt/data/"+later)
			return code == 0 && out == "put later\n"
		})
		if got := trim(run(t, sb, "stat -c %u:%g /mnt/data/hello.txt")); got != "0:0" {
			t.Errorf("owner in the sandbox = %s; want the sandbox's root, 0:0", got)
		}
	})

	t.Run("credentials never inside", func(t *testing.T) {
		secret := srv.Creds.SecretAccessKey
		// Everything a process in the sandbox can read that could carry
		// them: environments and command lines of every process, the
		// mount tables, and the files outside the bucket itself.
		script := fmt.Sprintf(`grep -rsF -l %q /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/self/mountinfo /proc/mounts /etc /root /tmp /workspace /var /.sandboxd/agent /.sandboxd/run /run /home 2>/dev/null; env | grep -F %q; grep -F s3fs /proc/self/mountinfo`, secret, secret)
		code, out := exitOf(t, sb, script)
		if strings.Contains(out, secret) || strings.Contains(out, "/proc/") || strings.Contains(out, "/etc") {
			t.Fatalf("the secret is visible inside the sandbox (exit %d):\n%s", code, out)
		}
		if strings.Contains(out, d.StateDir) || strings.Contains(out, d.RunDir) {
			t.Errorf("the mount table names the daemon's directories:\n%s", out)
		}
		// On the host the credentials file is 0600.
		files, _ := filepath.Glob(filepath.Join(d.StateDir, "sandboxes", "*", "mounts", "*.cred"))
		if len(files) == 0 {
			t.Fatal("no credentials file on the host")
		}
		for _, f := range files {
			if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode(), err)
			}
		}
	})

	t.Run("sandbox cannot unmount or remount", func(t *testing.T) {
		// On gVisor the host directory of the sandbox's bucket mounts is
		// in it at /.sandboxd/buckets, read-only: a symlink planted there
		// would lead the daemon's next mount anywhere on the host.
		for _, cmd := range []string{"umount /mnt/data", "umount -l /mnt/data", "mount -o remount,ro /mnt/data",
			"ln -s /etc /.sandboxd/buckets/7", "mkdir /.sandboxd/buckets/7", "touch /.sandboxd/buckets/0/x"} {
			if code, out := exitOf(t, sb, cmd); code == 0 {
				t.Errorf("%q succeeded in the sandbox: %s", cmd, out)
			}
		}
		run(t, sb, "test -f /mnt/data/hello.txt")
	})

	t.Run("prefix and read-only", func(t *testing.T) {
		ro := opts
		ro.Prefix, ro.ReadOnly = "team/a", true
		if _, err := sb.MountBucket(ctx, "data", "/mnt/team", ro); err != nil {
			t.Fatal(err)
		}
		if got := run(t, sb, "ls /mnt/team"); trim(got) != "notes.txt" {
			t.Errorf("ls of the prefix mount = %q; want notes.txt only", got)
		}
		code, out := exitOf(t, sb, "echo x > /mnt/team/new.txt")
		if code == 0 || !strings.Contains(out, "Read-only file system") {
			t.Errorf("write to a read-only mount: exit %d, %q; want EROFS", code, out)
		}
		// A symlink planted by the sandbox does not lead a mount out of
		// its path or over a system tree.
		run(t, sb, "ln -sfn /proc /tmp/link")
		if _, err := sb.MountBucket(ctx, "other", "/tmp/link/x", opts); codeOf(err) != api.CodeMountPathInvalid {
			t.Errorf("mount through a symlink: %v; want MOUNT_PATH_INVALID", err)
		}
	})
}

// TestTenantBucketMountsGoThroughTheEgressProxy: a tenant's s3fs reaches
// its endpoint only through the daemon's egress proxy, which checks the
// endpoint's addresses at every connection, not once at mount time (DNS
// rebinding cannot be staged here without a DNS server, so the operator's
// allowance is withdrawn instead: the same change of verdict after the
// mount). The admin's mounts connect directly.
func TestTenantBucketMountsGoThroughTheEgressProxy(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	srv := s3test.Start(t)
	srv.Bucket(t, "data")
	ctx := ctxT(t, 5*time.Minute)
	s3c := srv.Client()
	if err := s3c.PutObject(ctx, "data", "hello.txt", []byte("from s3\n")); err != nil {
		t.Fatal(err)
	}
	// The S3 server listens on loopback, which tenants may not name
	// unless the operator allows it.
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--bucket-endpoint-allow", "127.0.0.1"}})
	ct, _ := tenantClient(t, d, api.KeyCreateRequest{Name: "team-s3"})
	sb := ct.Sandbox("proxied")
	creds := &api.BucketCredentials{AccessKeyID: srv.Creds.AccessKeyID, SecretAccessKey: srv.Creds.SecretAccessKey}
	if _, err := sb.MountBucket(ctx, "data", "/mnt/data", client.MountOptions{Endpoint: srv.Endpoint, Credentials: creds}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, sb, "cat /mnt/data/hello.txt"); got != "from s3\n" {
		t.Fatalf("object read in the tenant's sandbox = %q", got)
	}
	if m := metricsText(t, d); !strings.Contains(m, `sandboxd_bucket_proxy_connections_total{result="allowed"}`) {
		t.Errorf("the tenant's s3fs did not connect through the egress proxy:\n%s", m)
	}

	// The operator withdraws loopback; s3fs, which outlives the daemon,
	// keeps its mount, but its next connection is refused.
	d.AddArgs("--bucket-endpoint-allow=")
	d.Restart(t)
	if err := s3c.PutObject(ctx, "data", "later.txt", []byte("put later\n")); err != nil {
		t.Fatal(err)
	}
	// (s3fs answers a refused request as it sees fit, an error or an empty
	// file; the object's content must not arrive.)
	if _, out := exitOf(t, sb, "cat /mnt/data/later.txt"); strings.Contains(out, "put later") {
		t.Errorf("an object put after the endpoint was refused was read: %q", out)
	}
	if m := metricsText(t, d); !strings.Contains(m, `sandboxd_bucket_proxy_connections_total{result="refused"}`) {
		t.Errorf("no connection refused by the egress proxy:\n%s", m)
	}
}
