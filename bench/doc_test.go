// Package bench holds sandboxd's benchmarks. They are Go benchmarks that
// run a real daemon (internal/testdaemon) and take their own samples, so
// that they can report medians and tails, not just means: each reports
// p50/p95/p99 with b.ReportMetric. Run them with `make bench`, which
// writes the results and the machine they ran on to bench/results/.
// Benchmarks are never timed tests: nothing here fails on a slow machine.
package bench
