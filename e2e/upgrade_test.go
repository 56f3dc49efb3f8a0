package e2e

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the registry's driver, to write the previous schema

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestUpgradeFromPreviousSchema: a new sandboxd started on a state
// directory whose registry has an early release's schema (version 1:
// sandboxes only, before exposed ports, user namespaces and API keys)
// migrates it and keeps every sandbox, files included, and the new tables
// work. The sandbox is made as that release made it, without a user
// namespace.
func TestUpgradeFromPreviousSchema(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--userns=false"}})
	run(t, d.Client.Sandbox("old"), "mkdir -p /workspace && echo kept > /workspace/f")
	d.Stop(t)

	// Take the registry back to the previous release's schema.
	db, err := sql.Open("sqlite", filepath.Join(d.StateDir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`DROP TABLE ports`,
		`ALTER TABLE sandboxes DROP COLUMN host_uid_base`,
		`DROP TABLE api_keys`,
		`PRAGMA user_version = 1`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	db.Close()

	d.AddArgs("--userns=true")
	d.Start(t)
	sb := d.Client.Sandbox("old")
	if got := trim(run(t, sb, "cat /workspace/f")); got != "kept" {
		t.Fatalf("after the upgrade the sandbox's file says %q, want kept", got)
	}
	if iso := isolationOf(t, sb); iso.UserNamespace {
		t.Errorf("an upgraded sandbox of a release without user namespaces says %+v, want it run as before", iso)
	}
	list, err := d.Client.List(ctxT(t, time.Minute))
	if err != nil || len(list) != 1 || list[0].ID != "old" {
		t.Fatalf("sandboxes after the upgrade: %+v, %v", list, err)
	}
	if _, err := sb.ExposePort(ctxT(t, time.Minute), 8000); err != nil {
		t.Fatalf("exposing a port after the migration added its table: %v", err)
	}
	var version int
	db, err = sql.Open("sqlite", filepath.Join(d.StateDir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version < 4 {
		t.Errorf("registry schema version %d (%v) after the upgrade, want at least 4", version, err)
	}
}
