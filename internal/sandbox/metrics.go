package sandbox

import "github.com/sandboxd/sandboxd/internal/metrics"

type managerMetrics struct {
	starts, wakes, sleeps     *metrics.CounterVec
	startSeconds, wakeSeconds *metrics.Histogram
}

func (m *Manager) registerMetrics(r *metrics.Registry) managerMetrics {
	r.NewGaugeFunc("sandboxd_sandboxes", "Sandboxes by status.", "status", m.countByStatus)
	r.NewGaugeFunc("sandboxd_warm_pool", "Sandboxes of the warm pool, by state.", "state", func() map[string]float64 {
		m.pool.mu.Lock()
		defer m.pool.mu.Unlock()
		return map[string]float64{"ready": float64(len(m.pool.ready)), "starting": float64(len(m.pool.booting))}
	})
	return managerMetrics{
		starts:       r.NewCounterVec("sandboxd_sandbox_starts_total", "Sandboxes started (created or started on request or after a failure).", ""),
		wakes:        r.NewCounterVec("sandboxd_sandbox_wakes_total", "Sleeping or stopped sandboxes started again by a call.", ""),
		sleeps:       r.NewCounterVec("sandboxd_sandbox_sleeps_total", "Sandboxes put to sleep (idle, or to make room).", ""),
		startSeconds: r.NewHistogram("sandboxd_sandbox_start_seconds", "Time to start a sandbox's container and agent.", metrics.DefaultLatencyBuckets),
		wakeSeconds:  r.NewHistogram("sandboxd_sandbox_wake_seconds", "Time to wake a sleeping sandbox (container and agent up).", metrics.DefaultLatencyBuckets),
	}
}

func (m *Manager) countByStatus() map[string]float64 {
	counts := map[string]float64{}
	for _, s := range Statuses() {
		counts[string(s)] = 0
	}
	for _, b := range m.snapshot() {
		if s, ok := b.status.Load().(Status); ok {
			counts[string(s)]++
		}
	}
	return counts
}
