package e2e

import (
	"bufio"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// patternReader produces size bytes of incompressible data without holding
// them: a random 1 MiB block, stamped with its index, over and over.
type patternReader struct {
	block []byte
	off   int64
	size  int64
}

func newPatternReader(size int64) *patternReader {
	r := rand.New(rand.NewPCG(1, 2))
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(r.Uint32())
	}
	return &patternReader{block: block, size: size}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && p.off < p.size {
		in := int(p.off % int64(len(p.block)))
		if in == 0 {
			idx := p.off / int64(len(p.block))
			copy(p.block, strconv.FormatInt(idx, 16)+"|")
		}
		c := copy(b[n:], p.block[in:min(len(p.block), in+int(min(int64(len(b)-n), p.size-p.off)))])
		n += c
		p.off += int64(c)
	}
	return n, nil
}

// vmRSS is a process's resident set, from /proc/PID/status.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("reading the RSS of %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// agentPID finds the host PID of the agent of the sandbox that holds the
// file marker: the process running /.sandboxd/agent whose root has it.
func agentPID(t *testing.T, marker string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.HasPrefix(string(cmd), "/.sandboxd/agent\x00") {
			continue
		}
		if _, err := os.Stat("/proc/" + e.Name() + "/root" + marker); err == nil {
			return pid
		}
	}
	t.Fatal("the sandbox's agent was not found in /proc")
	return 0
}

// peakSampler records the highest RSS of some processes.
type peakSampler struct {
	mu    sync.Mutex
	peaks map[int]int64
	stop  chan struct{}
	done  chan struct{}
}

func samplePeaks(t *testing.T, pids ...int) *peakSampler {
	s := &peakSampler{peaks: map[int]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, pid := range pids {
				v := vmRSS(t, pid)
				s.mu.Lock()
				s.peaks[pid] = max(s.peaks[pid], v)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *peakSampler) finish() map[int]int64 {
	close(s.stop)
	<-s.done
	return s.peaks
}

// A 2 GiB file goes up and comes back down through the daemon and the
// agent; neither may hold it: their RSS may not grow by 64 MiB.
func TestFilesMemoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 4 GiB through a sandbox")
	}
	const size = 2 << 30
	const limit = 64 << 20
	d := daemon(t)
	sb := d.Client.Sandbox("bigfiles")
	ctx := ctxT(t, 15*time.Minute)
	marker := fmt.Sprintf("/workspace/.rss-marker-%d", time.Now().UnixNano())
	if _, err := sb.WriteFile(ctx, marker, []byte("x")); err != nil {
		t.Fatal(err)
	}
	agent, daemonPID := agentPID(t, marker), d.PID()
	// Warm both ends up, so buffers that are made once count as baseline.
	if _, err := sb.Upload(ctx, "/workspace/warm", newPatternReader(64<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Download(ctx, "/workspace/warm", io.Discard); err != nil {
		t.Fatal(err)
	}
	base := map[int]int64{agent: vmRSS(t, agent), daemonPID: vmRSS(t, daemonPID)}
	s := samplePeaks(t, agent, daemonPID)

	table := crc32.MakeTable(crc32.Castagnoli)
	up := crc32.New(table)
	start := time.Now()
	res, err := sb.Upload(ctx, "/workspace/big.bin", io.TeeReader(newPatternReader(size), up))
	if err != nil {
		s.finish()
		t.Fatal(err)
	}
	upTook := time.Since(start)
	if res.BytesWritten != size {
		t.Errorf("wrote %d bytes", res.BytesWritten)
	}
	down := crc32.New(table)
	start = time.Now()
	n, err := sb.Download(ctx, "/workspace/big.bin", hashWriter{down})
	downTook := time.Since(start)
	peaks := s.finish()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if up.Sum32() != down.Sum32() {
		t.Error("the file came back different")
	}
	mbps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	t.Logf("upload %.0f MiB/s, download %.0f MiB/s", mbps(upTook), mbps(downTook))
	for pid, name := range map[int]string{agent: "agent", daemonPID: "daemon"} {
		growth := peaks[pid] - base[pid]
		t.Logf("%s (pid %d): RSS %d MiB before, peak %d MiB, growth %d MiB", name, pid, base[pid]>>20, peaks[pid]>>20, growth>>20)
		if growth >= limit {
			t.Errorf("the %s's RSS grew by %d MiB moving a 2 GiB file; the bound is %d MiB", name, growth>>20, limit>>20)
		}
	}
	if err := sb.DeleteFile(ctx, "/workspace/big.bin"); err != nil {
		t.Error(err)
	}
}

type hashWriter struct{ h hash.Hash32 }

func (w hashWriter) Write(p []byte) (int, error) { return w.h.Write(p) }
