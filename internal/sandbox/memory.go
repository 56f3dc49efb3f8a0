package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Admission by real memory use. A sandbox's memory limit (1 GiB by
// default) is what it may use, not what it uses: an idle sandbox holds a
// few megabytes of host memory. Adding up limits refused the 24th default
// sandbox of a 24 GiB host while 23 idle ones used 40 MB, so the daemon
// asks the kernel instead (MemAvailable, and PSI memory pressure when the
// kernel keeps it) whether there is room, and makes room by putting the
// least recently used idle sandboxes to sleep (which frees all their
// memory) when there is not: at a start, and every idle check in the
// background, so that sandboxes growing into their limits push idle ones
// out before the host runs short.

// bootReserve is the memory a sandbox being started is counted to take
// until its start ends, so that a burst of starts does not all see the
// same MemAvailable (a started idle sandbox holds 2-4 MB; the runtime's
// processes hold more while they run).
const bootReserve = 32 << 20

// memoryRelief bounds how many sandboxes one background pass puts to
// sleep for memory: each is re-measured before the next.
const memoryRelief = 8

// ProcMemory reads /proc/meminfo and /proc/pressure/memory.
type ProcMemory struct{}

// Available implements HostMemory.
func (ProcMemory) Available() (int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return parseMemAvailable(data)
}

// Pressure implements HostMemory.
func (ProcMemory) Pressure() (float64, bool) {
	data, err := os.ReadFile("/proc/pressure/memory")
	if err != nil {
		return 0, false
	}
	return parsePressure(data)
}

func parseMemAvailable(data []byte) (int64, error) {
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("MemAvailable:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			break
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	return 0, errors.New("no MemAvailable line in /proc/meminfo")
}

// parsePressure reads avg10 of the "some" line:
// "some avg10=0.00 avg60=0.00 avg300=0.00 total=0".
func parsePressure(data []byte) (float64, bool) {
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("some "))
		if !ok {
			continue
		}
		for _, f := range bytes.Fields(rest) {
			if v, ok := bytes.CutPrefix(f, []byte("avg10=")); ok {
				p, err := strconv.ParseFloat(string(v), 64)
				return p, err == nil
			}
		}
	}
	return 0, false
}

// memoryShort says why the host has no room by real memory for booting
// starts in flight, or "" if it has; pressure reports that the reason is
// pressure alone. It reads /proc: call it without m.mu.
func (m *Manager) memoryShort(booting int) (why string, pressure bool) {
	c := m.opts.Capacity
	if c.MemoryReserve > 0 {
		avail, err := m.opts.HostMemory.Available()
		if err != nil {
			m.log.Warn("reading the host's available memory", "err", err)
		} else if need := c.MemoryReserve + int64(booting)*bootReserve; avail < need {
			return fmt.Sprintf("the host has %d MiB of memory available, under the %d MiB it keeps for itself and the starts in flight",
				avail>>20, need>>20), false
		}
	}
	if c.MemoryPressure > 0 {
		if p, ok := m.opts.HostMemory.Pressure(); ok && p >= c.MemoryPressure {
			return fmt.Sprintf("the host is under memory pressure (tasks waited for memory %.0f%% of the last 10 s)", p), true
		}
	}
	return "", false
}

// relieveMemory puts the least recently used idle sandboxes to sleep while
// the host is short of memory, at most memoryRelief of them, and one only
// when the shortage is pressure (which the kernel averages over 10 s, so
// it lags what a sleep frees).
func (m *Manager) relieveMemory(ctx context.Context) {
	c := m.opts.Capacity
	if c.MemoryReserve == 0 && c.MemoryPressure == 0 {
		return
	}
	for i := 0; i < memoryRelief; i++ {
		why, pressure := m.memoryShort(0)
		if why == "" {
			return
		}
		m.mu.Lock()
		victims := m.evictionCandidates(nil)
		m.mu.Unlock()
		if !m.evictOne(ctx, victims, "put to sleep: "+why) {
			m.log.Warn("the host is short of memory and no sandbox is idle enough to sleep", "why", why)
			return
		}
		if pressure {
			return
		}
	}
}
