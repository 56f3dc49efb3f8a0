package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/s3test"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// backupSide is one daemon of BenchmarkBackup: its store, the sandbox
// holding the directory and the sandbox backups are restored into.
type backupSide struct {
	name     string
	d        *testdaemon.Daemon
	src, dst *client.Sandbox
	id       string // the last backup
}

// BenchmarkBackup: two daemons side by side, one keeping backups in its
// state directory (local) and one in versitygw on loopback (s3), each with
// a sandbox (crun, network none) holding BACKUP_FILES files (default
// 10 000) of BACKUP_MIB MiB in all (default 500) from /dev/urandom, in 100
// directories. Interleaved, local then s3 for each sample:
//
//   - create: `sandbox backup create` of the directory (BACKUP_TAKES
//     samples, default 2);
//   - restore: `sandbox backup restore` of the last backup into another
//     running sandbox, to the call's answer, then a first read there
//     (BENCH_N samples, the same path each time, so each replaces the
//     last);
//   - s3 only, restore-download: the same after removing the host's
//     cached image (another host's first restore: the download, then the
//     mounts).
func BenchmarkBackup(b *testing.B) {
	testdaemon.SkipUnlessRoot(b)
	once(b, func(b *testing.B) {
		ctx := ctxFor(b)
		files, mib := envInt("BACKUP_FILES", 10000), envInt("BACKUP_MIB", 500)
		srv := s3test.Start(b)
		srv.Bucket(b, "backups")
		sides := []*backupSide{
			{name: "local", d: testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-network", "none"}})},
			{name: "s3", d: testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-network", "none",
				"--backup-store", "s3://backups/bench", "--backup-store-endpoint", srv.Endpoint, "--backup-store-secret", "store"}})},
		}
		if err := sides[1].d.Client.SetSecret(ctx, "store", map[string]string{
			"AWS_ACCESS_KEY_ID": srv.Creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY": srv.Creds.SecretAccessKey}); err != nil {
			b.Fatal(err)
		}
		fill := fmt.Sprintf(`python3 -c '
import os
n, size = %d, %d * 1048576 // %d
for i in range(n):
    d = "/work/data/d%%d" %% (i %% 100)
    os.makedirs(d, exist_ok=True)
    with open("%%s/f%%d" %% (d, i), "wb") as f:
        f.write(os.urandom(size))
'`, files, mib, files)
		for _, s := range sides {
			s.src, s.dst = s.d.Client.Sandbox("bk-src"), s.d.Client.Sandbox("bk-dst")
			if res, err := s.src.Exec(ctx, fill, client.WithTimeout(20*time.Minute)); err != nil || res.ExitCode != 0 {
				b.Fatalf("%s: writing %d files: %v %+v", s.name, files, err, res)
			}
			if res, err := s.dst.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("%s: %v %+v", s.name, err, res)
			}
		}

		create := map[string]samples{}
		var notes []string
		for i := 0; i < envInt("BACKUP_TAKES", 2); i++ {
			for _, s := range sides {
				start := time.Now()
				bk, err := s.src.Backup(ctx, "/work/data", client.BackupOptions{})
				if err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				took := time.Since(start)
				create[s.name] = append(create[s.name], took)
				s.id = bk.ID
				notes = append(notes, fmt.Sprintf("%s create %d: %d files, %d MiB, image %d MiB, %v", s.name, i, files, mib, bk.Size>>20, took.Round(time.Millisecond)))
			}
		}
		restore, firstRead := map[string]samples{}, map[string]samples{}
		var download samples
		s3side := sides[1]
		cache := filepath.Join(s3side.d.StateDir, "backups", "cache", s3side.id+".sqfs")
		for i := 0; i < sampleCount(); i++ {
			for _, s := range sides {
				start := time.Now()
				if _, err := s.dst.RestoreBackup(ctx, s.id, "/work/restored"); err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				restore[s.name] = append(restore[s.name], time.Since(start))
				if res, err := s.dst.Exec(ctx, "test -s /work/restored/d7/f7"); err != nil || res.ExitCode != 0 {
					b.Fatalf("%s: restored file: %v %+v", s.name, err, res)
				}
				firstRead[s.name] = append(firstRead[s.name], time.Since(start))
			}
			if err := os.Remove(cache); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := s3side.dst.RestoreBackup(ctx, s3side.id, "/work/restored"); err != nil {
				b.Fatal(err)
			}
			download = append(download, time.Since(start))
		}
		for _, s := range sides {
			b.Run("create-"+s.name, func(b *testing.B) {
				once(b, func(b *testing.B) {
					for _, n := range notes {
						b.Log(n)
					}
					create[s.name].report(b)
				})
			})
			b.Run("restore-"+s.name, func(b *testing.B) { once(b, func(b *testing.B) { restore[s.name].report(b) }) })
			b.Run("restore-to-first-read-"+s.name, func(b *testing.B) { once(b, func(b *testing.B) { firstRead[s.name].report(b) }) })
		}
		b.Run("restore-download-s3", func(b *testing.B) { once(b, func(b *testing.B) { download.report(b) }) })
	})
}
