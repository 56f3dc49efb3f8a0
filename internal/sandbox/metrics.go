package sandbox

import (
	"github.com/sandboxd/sandboxd/internal/metrics"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

type managerMetrics struct {
	starts, wakes, sleeps       *metrics.CounterVec
	pauses, resumes             *metrics.CounterVec
	startSeconds, wakeSeconds   *metrics.Histogram
	pauseSeconds, resumeSeconds *metrics.Histogram
}

func (m *Manager) registerMetrics(r *metrics.Registry) managerMetrics {
	r.NewGaugeFunc("sandboxd_sandboxes", "Sandboxes by status.", "status", m.countByStatus)
	r.NewGaugeFunc("sandboxd_warm_pool", "Sandboxes of the warm pool, by state.", "state", func() map[string]float64 {
		m.pool.mu.Lock()
		defer m.pool.mu.Unlock()
		return map[string]float64{"ready": float64(len(m.pool.ready)), "starting": float64(len(m.pool.booting))}
	})
	// Usage by tenant ("default": the admin namespace), what quotas bound
	// (docs/tenants.md); a tenant's key sees its own series.
	for _, g := range []struct {
		name, help string
		value      func(Usage) float64
	}{
		{"sandboxd_tenant_sandboxes", "Sandboxes a tenant has, in any status.", func(u Usage) float64 { return float64(u.Sandboxes) }},
		{"sandboxd_tenant_running", "Sandboxes a tenant runs.", func(u Usage) float64 { return float64(u.Running) }},
		{"sandboxd_tenant_memory_bytes", "The sum of the memory limits of a tenant's running sandboxes.", func(u Usage) float64 { return float64(u.Memory) }},
	} {
		r.NewGaugeFunc(g.name, g.help, "tenant", func() map[string]float64 {
			out := map[string]float64{}
			for t, u := range m.usageByTenant() {
				out[tenant.Display(t)] = g.value(u)
			}
			return out
		})
	}
	return managerMetrics{
		starts:        r.NewCounterVec("sandboxd_sandbox_starts_total", "Sandboxes started (created or started on request or after a failure).", ""),
		wakes:         r.NewCounterVec("sandboxd_sandbox_wakes_total", "Sleeping or stopped sandboxes started again by a call.", ""),
		sleeps:        r.NewCounterVec("sandboxd_sandbox_sleeps_total", "Sandboxes put to sleep (idle, or to make room).", ""),
		pauses:        r.NewCounterVec("sandboxd_sandbox_pauses_total", "gVisor sandboxes checkpointed with their memory (on request, idle or to make room).", ""),
		resumes:       r.NewCounterVec("sandboxd_sandbox_resumes_total", "Paused sandboxes restored from their checkpoint.", ""),
		pauseSeconds:  r.NewHistogram("sandboxd_sandbox_pause_seconds", "Time to checkpoint a sandbox (agent suspended, memory saved, container down).", metrics.DefaultLatencyBuckets),
		resumeSeconds: r.NewHistogram("sandboxd_sandbox_resume_seconds", "Time to restore a paused sandbox (container restored, agent answering).", metrics.DefaultLatencyBuckets),
		startSeconds:  r.NewHistogram("sandboxd_sandbox_start_seconds", "Time to start a sandbox's container and agent.", metrics.DefaultLatencyBuckets),
		wakeSeconds:   r.NewHistogram("sandboxd_sandbox_wake_seconds", "Time to wake a sleeping sandbox (container and agent up).", metrics.DefaultLatencyBuckets),
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
