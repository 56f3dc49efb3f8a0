package e2b

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// Metrics come from the sandbox's own cgroup (the whole sandbox, as its
// cgroup namespace shows it: CPU time, memory in use and as page cache;
// cgroup v2 files, else v1's) and df of its root, read by one command run
// as root in the sandbox. Each line is "<what> <value>".
const metricsScript = `cd /sys/fs/cgroup 2>/dev/null
if [ -f cpu.stat ] && [ -f memory.current ]; then
  echo cpu $(sed -n 's/^usage_usec //p' cpu.stat)
  echo mem $(cat memory.current)
  echo cache $(sed -n 's/^file //p' memory.stat)
else
  echo cpu $(( $(cat cpuacct/cpuacct.usage) / 1000 ))
  echo mem $(cat memory/memory.usage_in_bytes)
  echo cache $(sed -n 's/^total_cache //p' memory/memory.stat)
fi
echo df $(df -kP / | tail -1)`

type cpuSample struct {
	at        time.Time
	usageUsec int64
}

// sample is one reading of a sandbox's metrics.
type sample struct {
	At                  time.Time
	CPUCount            int64
	CPUUsedPct          float64
	MemUsed, MemTotal   int64
	MemCache            int64
	DiskUsed, DiskTotal int64
}

// e2bMetric is E2B's SandboxMetric.
type e2bMetric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int64     `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       int64     `json:"memUsed"`
	MemTotal      int64     `json:"memTotal"`
	MemCache      int64     `json:"memCache"`
	DiskUsed      int64     `json:"diskUsed"`
	DiskTotal     int64     `json:"diskTotal"`
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, id string) error {
	e, sb, err := s.lookup(r.Context(), id)
	if err != nil {
		return err
	}
	out := []e2bMetric{}
	if state(e, sb) == "running" {
		m, err := s.sample(r.Context(), id, sb)
		if err != nil {
			return err
		}
		out = append(out, e2bMetric{
			Timestamp: m.At, TimestampUnix: m.At.Unix(), CPUCount: m.CPUCount, CPUUsedPct: m.CPUUsedPct,
			MemUsed: m.MemUsed, MemTotal: m.MemTotal, MemCache: m.MemCache, DiskUsed: m.DiskUsed, DiskTotal: m.DiskTotal,
		})
	}
	writeControlJSON(w, http.StatusOK, out)
	return nil
}

// serveEnvdMetrics answers envd's GET /metrics.
func (s *Server) serveEnvdMetrics(w http.ResponseWriter, r *http.Request, id string) {
	var sb api.Sandbox
	if err := s.up.call(r.Context(), http.MethodGet, sandboxPath(id, ""), nil, &sb); err != nil {
		envdError(w, err)
		return
	}
	m, err := s.sample(r.Context(), id, sb)
	if err != nil {
		envdError(w, err)
		return
	}
	writeControlJSON(w, http.StatusOK, map[string]any{
		"ts": m.At.Unix(), "cpu_count": m.CPUCount, "cpu_used_pct": m.CPUUsedPct, "mem_total": m.MemTotal,
		"mem_used": m.MemUsed, "mem_cache": m.MemCache, "disk_used": m.DiskUsed, "disk_total": m.DiskTotal,
	})
}

// sample reads the sandbox's metrics now. CPU use is the average since
// the previous sample (or since the sandbox started), in percent of its
// CPUs.
func (s *Server) sample(ctx context.Context, id string, sb api.Sandbox) (sample, error) {
	var res api.ExecResult
	if err := s.up.call(ctx, http.MethodPost, sandboxPath(id, "exec"), api.ExecRequest{Command: metricsScript, Timeout: 10000}, &res); err != nil {
		return sample{}, err
	}
	now := s.now()
	m := sample{At: now.UTC(), CPUCount: max((sb.Limits.MilliCPU+999)/1000, 1), MemTotal: sb.Limits.MemoryBytes}
	var usage int64 = -1
	sc := bufio.NewScanner(strings.NewReader(res.Stdout))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		num := func(i int) int64 {
			if i >= len(f) {
				return 0
			}
			n, _ := strconv.ParseInt(f[i], 10, 64)
			return n
		}
		switch f[0] {
		case "cpu":
			usage = num(1)
		case "mem":
			m.MemUsed = num(1)
		case "cache":
			m.MemCache = num(1)
		case "df": // df <fs> <1K-blocks> <used> <available> ...
			m.DiskTotal, m.DiskUsed = num(2)*1024, num(3)*1024
		}
	}
	if sb.Limits.DiskBytes > 0 {
		m.DiskTotal = sb.Limits.DiskBytes
	}
	if usage >= 0 {
		s.metricsMu.Lock()
		prev, ok := s.lastCPU[id]
		s.lastCPU[id] = cpuSample{at: now, usageUsec: usage}
		s.metricsMu.Unlock()
		if !ok {
			prev = cpuSample{at: sb.StatusChangedAt}
		}
		if el := now.Sub(prev.at).Microseconds(); el > 0 && usage >= prev.usageUsec {
			m.CPUUsedPct = float64(usage-prev.usageUsec) / float64(el) / float64(m.CPUCount) * 100
		}
	}
	return m, nil
}
