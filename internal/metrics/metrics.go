// Package metrics is a minimal Prometheus text-format registry: counters,
// gauges read at scrape time, and histograms with fixed buckets, all safe
// for concurrent use and cheap on the hot path (atomics, no allocation).
// It exists so the daemon needs no client library for /metrics.
package metrics

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metrics and writes them in the text exposition format.
type Registry struct {
	mu      sync.Mutex
	metrics map[string]metric
}

type metric interface {
	write(w io.Writer, name string, view View)
}

// View chooses the series a reader may see: given a metric's label and a
// series' label value, the value to show and whether to show it. Metrics
// without a label, and histograms, are daemon-wide: a view shows none of
// them. A nil View shows everything.
type View func(label, value string) (string, bool)

// series returns the label values of vals that view shows (sorted), with
// the values to show; false when the metric is not to be written.
func series[T any](vals map[string]T, label string, view View) (keys, shown []string, ok bool) {
	if view != nil && label == "" {
		return nil, nil, false
	}
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kept := keys[:0]
	for _, k := range keys {
		s := k
		if view != nil {
			var ok bool
			if s, ok = view(label, k); !ok {
				continue
			}
		}
		kept = append(kept, k)
		shown = append(shown, s)
	}
	// A view's reader is not told of metrics it has no series of.
	return kept, shown, view == nil || len(kept) > 0
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{metrics: map[string]metric{}} }

func (r *Registry) add(name string, m metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.metrics[name]; dup {
		panic("metrics: duplicate " + name)
	}
	r.metrics[name] = m
}

// Write writes every metric, sorted by name.
func (r *Registry) Write(w io.Writer) { r.WriteView(w, nil) }

// WriteView writes the series view shows, sorted by metric name.
func (r *Registry) WriteView(w io.Writer, view View) {
	r.mu.Lock()
	names := make([]string, 0, len(r.metrics))
	for n := range r.metrics {
		names = append(names, n)
	}
	ms := r.metrics
	r.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		ms[n].write(w, n, view)
	}
}

// CounterVec is a counter with one label.
type CounterVec struct {
	help, label string
	mu          sync.Mutex
	values      map[string]*atomic.Int64
}

// NewCounterVec registers a counter with one label (label "" for none).
func (r *Registry) NewCounterVec(name, help, label string) *CounterVec {
	c := &CounterVec{help: help, label: label, values: map[string]*atomic.Int64{}}
	r.add(name, c)
	return c
}

// Inc adds one to the counter for the label value.
func (c *CounterVec) Inc(value string) { c.get(value).Add(1) }

// Value returns the count for the label value.
func (c *CounterVec) Value(value string) int64 { return c.get(value).Load() }

func (c *CounterVec) get(value string) *atomic.Int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.values[value]
	if v == nil {
		v = &atomic.Int64{}
		c.values[value] = v
	}
	return v
}

func (c *CounterVec) write(w io.Writer, name string, view View) {
	c.mu.Lock()
	keys, shown, ok := series(c.values, c.label, view)
	c.mu.Unlock()
	if !ok {
		return
	}
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", name, c.help, name)
	if len(keys) == 0 && c.label == "" {
		fmt.Fprintf(w, "%s 0\n", name)
	}
	for i, k := range keys {
		fmt.Fprintf(w, "%s%s %d\n", name, labels(c.label, shown[i]), c.get(k).Load())
	}
}

// GaugeFunc is a gauge whose values are read at scrape time.
type GaugeFunc struct {
	help, label string
	read        func() map[string]float64
}

// NewGaugeFunc registers a gauge with one label; read returns the value
// for each label value.
func (r *Registry) NewGaugeFunc(name, help, label string, read func() map[string]float64) {
	r.add(name, &GaugeFunc{help: help, label: label, read: read})
}

func (g *GaugeFunc) write(w io.Writer, name string, view View) {
	if view != nil && g.label == "" {
		return
	}
	writeRead(w, name, "gauge", g.help, g.label, g.read(), view)
}

// writeRead writes the values of a metric read at scrape time.
func writeRead(w io.Writer, name, typ, help, label string, vals map[string]float64, view View) {
	keys, shown, ok := series(vals, label, view)
	if !ok {
		return
	}
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	for i, k := range keys {
		fmt.Fprintf(w, "%s%s %g\n", name, labels(label, shown[i]), vals[k])
	}
}

// Histogram counts observations (in seconds) into fixed buckets.
type Histogram struct {
	help    string
	bounds  []float64
	buckets []atomic.Int64 // counts per bucket, not cumulative
	count   atomic.Int64
	sumNano atomic.Int64
}

// DefaultLatencyBuckets suit operations from sub-millisecond to a minute.
var DefaultLatencyBuckets = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// NewHistogram registers a histogram of durations in seconds.
func (r *Registry) NewHistogram(name, help string, bounds []float64) *Histogram {
	h := &Histogram{help: help, bounds: bounds, buckets: make([]atomic.Int64, len(bounds)+1)}
	r.add(name, h)
	return h
}

// Observe records one duration in seconds.
func (h *Histogram) Observe(seconds float64) {
	i := sort.SearchFloat64s(h.bounds, seconds)
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sumNano.Add(int64(math.Round(seconds * 1e9)))
}

// Count returns the number of observations.
func (h *Histogram) Count() int64 { return h.count.Load() }

func (h *Histogram) write(w io.Writer, name string, view View) {
	if view != nil {
		return
	}
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, h.help, name)
	var cum int64
	for i, b := range h.bounds {
		cum += h.buckets[i].Load()
		fmt.Fprintf(w, "%s_bucket{le=\"%g\"} %d\n", name, b, cum)
	}
	cum += h.buckets[len(h.bounds)].Load()
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n", name, cum)
	fmt.Fprintf(w, "%s_sum %g\n%s_count %d\n", name, float64(h.sumNano.Load())/1e9, name, h.count.Load())
}

// labelEscaper escapes a label value as the exposition format asks. One
// for all: a Replacer is safe for concurrent use, and building one per
// value cost every scrape an allocation per labelled line.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func labels(label, value string) string {
	if label == "" {
		return ""
	}
	value = labelEscaper.Replace(value)
	return fmt.Sprintf("{%s=\"%s\"}", label, value)
}

// CounterFunc is a counter whose values are read at scrape time.
type CounterFunc struct {
	help, label string
	read        func() map[string]float64
}

// NewCounterFunc registers a counter with one label; read returns the
// value for each label value.
func (r *Registry) NewCounterFunc(name, help, label string, read func() map[string]float64) {
	r.add(name, &CounterFunc{help: help, label: label, read: read})
}

func (c *CounterFunc) write(w io.Writer, name string, view View) {
	if view != nil && c.label == "" {
		return
	}
	writeRead(w, name, "counter", c.help, c.label, c.read(), view)
}
