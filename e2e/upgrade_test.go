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
// directory whose registry has the previous release's schema (version 1:
// sandboxes only, before exposed ports had a table) migrates it and keeps
// every sandbox, files included, and the new table works.
func TestUpgradeFromPreviousSchema(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	d := daemon(t)
	run(t, d.Client.Sandbox("old"), "mkdir -p /workspace && echo kept > /workspace/f")
	d.Stop(t)

	// Take the registry back to the previous release's schema.
	db, err := sql.Open("sqlite", filepath.Join(d.StateDir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{`DROP TABLE ports`, `PRAGMA user_version = 1`} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	db.Close()

	d.Start(t)
	sb := d.Client.Sandbox("old")
	if got := trim(run(t, sb, "cat /workspace/f")); got != "kept" {
		t.Fatalf("after the upgrade the sandbox's file says %q, want kept", got)
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
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version < 2 {
		t.Errorf("registry schema version %d (%v) after the upgrade, want at least 2", version, err)
	}
}
