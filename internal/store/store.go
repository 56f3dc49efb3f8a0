// Package store is sandboxd's registry: one SQLite database in the state
// directory recording every sandbox the daemon owns, so that a restart
// (or a kill -9) loses nothing. It stores records; it never decides
// anything about them.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go
)

// Errors returned by the store.
var (
	ErrNotFound = errors.New("no such sandbox")
	ErrExists   = errors.New("sandbox already exists")
)

// Sandbox is one registry row.
type Sandbox struct {
	ID string
	// Key is the short internal name used in host paths, cgroups, netns and
	// interface names (IDs are too long for some of them).
	Key          string
	Status       string
	StatusReason string
	Image        string
	Runtime      string
	// Config is the sandbox's resolved configuration, JSON encoded by its
	// owner.
	Config []byte
	// NetSlot is the index of the sandbox's address block, -1 for none.
	NetSlot int
	// HostUIDBase is the first host UID (and GID) of the sandbox's user
	// namespace, whose 65536 IDs are its alone while the row exists; 0:
	// the sandbox has no user namespace (made before they existed, with
	// --userns=false, or on gVisor).
	HostUIDBase     uint32
	CreatedAt       time.Time
	LastUsedAt      time.Time
	StatusChangedAt time.Time
}

// Store is the registry. It is safe for concurrent use.
type Store struct {
	db *sql.DB
	// insert is Insert's statement, prepared once: a warm pool take
	// writes its row beside its first call, sharing a small host's CPUs
	// with it, and parsing and compiling the statement each time was
	// almost half of the write's CPU (with the caches as cold as a take
	// finds them, 345 µs against 200 µs prepared, p50).
	insert *sql.Stmt
	// journal holds the rows written ahead (InsertAhead).
	journal *journal
}

// migrations are applied in order; PRAGMA user_version counts those done.
// Append only.
var migrations = []string{
	`CREATE TABLE sandboxes (
		id                TEXT PRIMARY KEY,
		key               TEXT NOT NULL UNIQUE,
		status            TEXT NOT NULL,
		status_reason     TEXT NOT NULL DEFAULT '',
		image             TEXT NOT NULL,
		runtime           TEXT NOT NULL,
		config            BLOB NOT NULL,
		net_slot          INTEGER NOT NULL DEFAULT -1,
		created_at        INTEGER NOT NULL,
		last_used_at      INTEGER NOT NULL,
		status_changed_at INTEGER NOT NULL
	)`,
	migrationPorts,
	`ALTER TABLE sandboxes ADD COLUMN host_uid_base INTEGER NOT NULL DEFAULT 0`,
	migrationKeys,
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date.
func Open(path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(ON)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening registry %s: %w", path, err)
	}
	// One connection: SQLite serialises writers anyway, and a single
	// connection avoids SQLITE_BUSY between our own goroutines.
	db.SetMaxOpenConns(1)
	s := &Store{db: db}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	if s.insert, err = db.Prepare(`INSERT INTO sandboxes (` + columns + `) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing the registry's insert: %w", err)
	}
	if s.journal, err = openJournal(context.Background(), s, journalPath(path)); err != nil {
		s.insert.Close()
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate() error {
	var version int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("reading registry schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("registry schema version %d is newer than this sandboxd knows (%d)", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("registry migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.journal.close()
	s.insert.Close()
	return s.db.Close()
}

const columns = `id, key, status, status_reason, image, runtime, config, net_slot, created_at, last_used_at, status_changed_at, host_uid_base`

// Insert adds a new row; ErrExists if the ID is taken.
func (s *Store) Insert(ctx context.Context, sb Sandbox) error {
	_, err := s.insert.ExecContext(ctx,
		sb.ID, sb.Key, sb.Status, sb.StatusReason, sb.Image, sb.Runtime, sb.Config, sb.NetSlot,
		sb.CreatedAt.UnixNano(), sb.LastUsedAt.UnixNano(), sb.StatusChangedAt.UnixNano(), sb.HostUIDBase)
	if err != nil {
		if exists, _ := s.exists(ctx, sb.ID); exists {
			return ErrExists
		}
		return fmt.Errorf("inserting sandbox %s: %w", sb.ID, err)
	}
	return nil
}

func (s *Store) exists(ctx context.Context, id string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sandboxes WHERE id = ?`, id).Scan(&n)
	return n > 0, err
}

// Get returns the row of id, or ErrNotFound. A row written ahead and not
// yet inserted is found too.
func (s *Store) Get(ctx context.Context, id string) (Sandbox, error) {
	if sb, ok := s.journal.pendingRow(id); ok {
		return sb, nil
	}
	row := s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM sandboxes WHERE id = ?`, id)
	sb, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Sandbox{}, ErrNotFound
	}
	return sb, err
}

// List returns every row, ordered by ID.
func (s *Store) List(ctx context.Context) ([]Sandbox, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+columns+` FROM sandboxes ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing sandboxes: %w", err)
	}
	defer rows.Close()
	var out []Sandbox
	for rows.Next() {
		sb, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sb)
	}
	return out, rows.Err()
}

// SetStatus records a status change.
func (s *Store) SetStatus(ctx context.Context, id, status, reason string, at time.Time) error {
	return s.update(ctx, id, `UPDATE sandboxes SET status = ?, status_reason = ?, status_changed_at = ? WHERE id = ?`,
		status, reason, at.UnixNano(), id)
}

// SetConfig records a sandbox's changed configuration.
func (s *Store) SetConfig(ctx context.Context, id string, config []byte) error {
	return s.update(ctx, id, `UPDATE sandboxes SET config = ? WHERE id = ?`, config, id)
}

// SetRuntime records the OCI runtime a sandbox now runs under.
func (s *Store) SetRuntime(ctx context.Context, id, runtime string) error {
	return s.update(ctx, id, `UPDATE sandboxes SET runtime = ? WHERE id = ?`, runtime, id)
}

func (s *Store) update(ctx context.Context, id, query string, args ...any) error {
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("updating sandbox %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// TouchLastUsed records last-use times in one transaction. Unknown IDs are
// ignored (the sandbox may have been destroyed meanwhile).
func (s *Store) TouchLastUsed(ctx context.Context, times map[string]time.Time) error {
	if len(times) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for id, t := range times {
		if _, err := tx.ExecContext(ctx, `UPDATE sandboxes SET last_used_at = max(last_used_at, ?) WHERE id = ?`, t.UnixNano(), id); err != nil {
			return fmt.Errorf("recording last use of %s: %w", id, err)
		}
	}
	return tx.Commit()
}

// Delete removes the row of id; deleting an absent row is not an error.
func (s *Store) Delete(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM sandboxes WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("deleting sandbox %s: %w", id, err)
	}
	return nil
}

// UsedSlots returns the network slots in use.
func (s *Store) UsedSlots(ctx context.Context) (map[int]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT net_slot FROM sandboxes WHERE net_slot >= 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	used := map[int]bool{}
	for rows.Next() {
		var n int
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		used[n] = true
	}
	return used, rows.Err()
}

type scanner interface{ Scan(...any) error }

func scan(r scanner) (Sandbox, error) {
	var sb Sandbox
	var created, used, changed int64
	err := r.Scan(&sb.ID, &sb.Key, &sb.Status, &sb.StatusReason, &sb.Image, &sb.Runtime, &sb.Config,
		&sb.NetSlot, &created, &used, &changed, &sb.HostUIDBase)
	if err != nil {
		return Sandbox{}, err
	}
	sb.CreatedAt = time.Unix(0, created).UTC()
	sb.LastUsedAt = time.Unix(0, used).UTC()
	sb.StatusChangedAt = time.Unix(0, changed).UTC()
	return sb, nil
}
