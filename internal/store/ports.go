package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrPortExists is returned when a sandbox's port already has a row.
var ErrPortExists = errors.New("port already exposed")

// migrationPorts adds the exposed ports of each sandbox. A sandbox's rows
// go when the sandbox's row goes.
const migrationPorts = `CREATE TABLE ports (
		sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
		port       INTEGER NOT NULL,
		name       TEXT NOT NULL DEFAULT '',
		token      TEXT NOT NULL,
		public     INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (sandbox_id, port)
	)`

// Port is one exposed port of a sandbox.
type Port struct {
	SandboxID string
	Port      int
	Name      string
	// Token is the secret part of the port's preview URL.
	Token     string
	Public    bool
	CreatedAt time.Time
	// SandboxCreatedAt is the creation time of the sandbox row the port
	// belongs to (read only): it tells a sandbox from a later one of the
	// same ID.
	SandboxCreatedAt time.Time
}

// InsertPort records an exposed port. It fails with ErrNotFound when the
// sandbox has no row and with ErrPortExists when the port has one.
// p.SandboxCreatedAt is filled in.
func (s *Store) InsertPort(ctx context.Context, p *Port) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var created int64
	err = tx.QueryRowContext(ctx, `SELECT created_at FROM sandboxes WHERE id = ?`, p.SandboxID).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("exposing port %d of %s: %w", p.Port, p.SandboxID, err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM ports WHERE sandbox_id = ? AND port = ?`, p.SandboxID, p.Port).Scan(&n); err != nil {
		return fmt.Errorf("exposing port %d of %s: %w", p.Port, p.SandboxID, err)
	}
	if n > 0 {
		return ErrPortExists
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO ports (sandbox_id, port, name, token, public, created_at) VALUES (?,?,?,?,?,?)`,
		p.SandboxID, p.Port, p.Name, p.Token, p.Public, p.CreatedAt.UnixNano())
	if err != nil {
		return fmt.Errorf("exposing port %d of %s: %w", p.Port, p.SandboxID, err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	p.SandboxCreatedAt = time.Unix(0, created).UTC()
	return nil
}

// DeletePort removes a port's row and reports whether there was one.
func (s *Store) DeletePort(ctx context.Context, sandboxID string, port int) (bool, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM ports WHERE sandbox_id = ? AND port = ?`, sandboxID, port)
	if err != nil {
		return false, fmt.Errorf("unexposing port %d of %s: %w", port, sandboxID, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Ports returns every exposed port of every sandbox, ordered by sandbox
// and port.
func (s *Store) Ports(ctx context.Context) ([]Port, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT p.sandbox_id, p.port, p.name, p.token, p.public, p.created_at, s.created_at
		FROM ports p JOIN sandboxes s ON s.id = p.sandbox_id ORDER BY p.sandbox_id, p.port`)
	if err != nil {
		return nil, fmt.Errorf("listing ports: %w", err)
	}
	defer rows.Close()
	var out []Port
	for rows.Next() {
		var p Port
		var created, sbCreated int64
		if err := rows.Scan(&p.SandboxID, &p.Port, &p.Name, &p.Token, &p.Public, &created, &sbCreated); err != nil {
			return nil, err
		}
		p.CreatedAt = time.Unix(0, created).UTC()
		p.SandboxCreatedAt = time.Unix(0, sbCreated).UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}
