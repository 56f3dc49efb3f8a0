package sandbox

import (
	"encoding/json"

	"github.com/sandboxd/sandboxd/internal/store"
)

// LoadRowsForTest registers registry rows as Recover does, without asking
// a runtime about them: sandboxes that exist but do not run, for tests and
// benchmarks of what only reads the registry (lists).
func (m *Manager) LoadRowsForTest(rows []store.Sandbox) error {
	for _, rec := range rows {
		var cfg Config
		if err := json.Unmarshal(rec.Config, &cfg); err != nil {
			return err
		}
		b := &box{id: rec.ID, rec: rec}
		b.setConfig(cfg)
		b.status.Store(Status(rec.Status))
		b.lastUsed.Store(rec.LastUsedAt.UnixNano())
		m.mu.Lock()
		m.addBoxLocked(b)
		m.mu.Unlock()
	}
	return nil
}
