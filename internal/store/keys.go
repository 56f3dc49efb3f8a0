package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors of the key table.
var (
	ErrKeyNotFound = errors.New("no such key")
	ErrKeyExists   = errors.New("key already exists")
)

// migrationKeys adds API keys. A key is stored as the SHA-256 of its
// secret, never the secret.
const migrationKeys = `CREATE TABLE api_keys (
		name          TEXT PRIMARY KEY,
		hash          BLOB NOT NULL UNIQUE,
		admin         INTEGER NOT NULL,
		max_sandboxes INTEGER NOT NULL DEFAULT 0,
		max_running   INTEGER NOT NULL DEFAULT 0,
		max_memory    INTEGER NOT NULL DEFAULT 0,
		created_at    INTEGER NOT NULL,
		rotated_at    INTEGER NOT NULL
	)`

// Key is one API key row.
type Key struct {
	Name  string
	Hash  []byte
	Admin bool
	// Quotas; 0 is unlimited.
	MaxSandboxes int
	MaxRunning   int
	MaxMemory    int64
	CreatedAt    time.Time
	RotatedAt    time.Time
}

const keyColumns = `name, hash, admin, max_sandboxes, max_running, max_memory, created_at, rotated_at`

// InsertKey adds a key; ErrKeyExists if the name is taken.
func (s *Store) InsertKey(ctx context.Context, k Key) error {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM api_keys WHERE name = ?`, k.Name).Scan(&n); err != nil {
		return fmt.Errorf("looking up key %s: %w", k.Name, err)
	}
	if n > 0 {
		return ErrKeyExists
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO api_keys (`+keyColumns+`) VALUES (?,?,?,?,?,?,?,?)`,
		k.Name, k.Hash, k.Admin, k.MaxSandboxes, k.MaxRunning, k.MaxMemory, k.CreatedAt.UnixNano(), k.RotatedAt.UnixNano())
	if err != nil {
		return fmt.Errorf("inserting key %s: %w", k.Name, err)
	}
	return nil
}

// Keys returns every key, ordered by name.
func (s *Store) Keys(ctx context.Context) ([]Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		var k Key
		var created, rotated int64
		if err := rows.Scan(&k.Name, &k.Hash, &k.Admin, &k.MaxSandboxes, &k.MaxRunning, &k.MaxMemory, &created, &rotated); err != nil {
			return nil, err
		}
		k.CreatedAt, k.RotatedAt = time.Unix(0, created).UTC(), time.Unix(0, rotated).UTC()
		out = append(out, k)
	}
	return out, rows.Err()
}

// SetKeyHash replaces the hash of key name (rotation).
func (s *Store) SetKeyHash(ctx context.Context, name string, hash []byte, at time.Time) error {
	return s.updateKey(ctx, name, `UPDATE api_keys SET hash = ?, rotated_at = ? WHERE name = ?`, hash, at.UnixNano(), name)
}

// DeleteKey removes key name; ErrKeyNotFound if there is none.
func (s *Store) DeleteKey(ctx context.Context, name string) error {
	return s.updateKey(ctx, name, `DELETE FROM api_keys WHERE name = ?`, name)
}

func (s *Store) updateKey(ctx context.Context, name, query string, args ...any) error {
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("updating key %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrKeyNotFound
	}
	return nil
}
