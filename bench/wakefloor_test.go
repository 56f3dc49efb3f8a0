package bench

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkWakeFloor: what waking a blocked thread costs on this host, the
// hop every step of a pool take pays (client, daemon, agent, bash and back:
// each a thread blocked in a read, woken by a write). Two threads of this
// process, each locked and pinned to a CPU, bounce a byte over two pipes;
// the first sleeps gap before each bounce (nanosleep on its own thread: no
// Go timer, no other thread), so the CPUs are as idle as gap leaves them.
// Reported as <same|cross>-<gap>-rtt-p50-us: same has both threads on the
// first CPU (a wake-up on the CPU that is running), cross one on each of
// the first two (a wake-up of the other CPU; on a VM whose idle vCPUs halt,
// a halted one once gap is long enough). A round trip is two wake-ups. The
// gaps rotate from one sample to the next, so a load that drifts reaches
// all of them alike; the numbers mean something only on a quiet host.
func BenchmarkWakeFloor(b *testing.B) {
	once(b, func(b *testing.B) {
		var cpus unix.CPUSet
		if err := unix.SchedGetaffinity(0, &cpus); err != nil || cpus.Count() < 2 {
			b.Skip("needs two CPUs")
		}
		var first []int
		for i := 0; len(first) < 2; i++ {
			if cpus.IsSet(i) {
				first = append(first, i)
			}
		}
		gaps := []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 100 * time.Millisecond}
		for _, placement := range []struct {
			name string
			cpus [2]int
		}{{"same", [2]int{first[0], first[0]}}, {"cross", [2]int{first[0], first[1]}}} {
			rtts := bounce(b, placement.cpus, gaps, sampleCount())
			for k, gap := range gaps {
				b.ReportMetric(float64(rtts[k].percentile(50).Nanoseconds())/1000, fmt.Sprintf("%s-%s-rtt-p50-us", placement.name, gap))
			}
		}
		b.ReportMetric(0, "ns/op")
	})
}

// bounce measures n round trips of a byte between a thread on cpus[0] and
// one on cpus[1] for each gap, rotating through the gaps.
func bounce(b *testing.B, cpus [2]int, gaps []time.Duration, n int) []samples {
	var there, back [2]int
	if err := unix.Pipe2(there[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	if err := unix.Pipe2(back[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, fd := range []int{there[0], there[1], back[0], back[1]} {
			unix.Close(fd)
		}
	}()
	echoed := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the pinned thread exits with it
		echoed <- echo(cpus[1], there[0], back[1])
	}()
	out := make([]samples, len(gaps))
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the pinned thread exits with it
		done <- ping(cpus[0], there[1], back[0], gaps, n, out)
	}()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if err := <-echoed; err != nil {
		b.Fatal(err)
	}
	return out
}

// echo pins the calling (locked) thread to cpu and writes back every byte
// it reads from in to out, until it reads 'q'.
func echo(cpu, in, out int) error {
	if err := pin(cpu); err != nil {
		return err
	}
	buf := make([]byte, 1)
	for {
		if _, err := unix.Read(in, buf); err != nil {
			return err
		}
		if _, err := unix.Write(out, buf); err != nil || buf[0] == 'q' {
			return err
		}
	}
}

// ping pins the calling (locked) thread to cpu and times n round trips
// per gap through echo, sleeping the gap before each.
func ping(cpu, out, in int, gaps []time.Duration, n int, rtts []samples) error {
	if err := pin(cpu); err != nil {
		return err
	}
	buf := []byte{'p'}
	for i := 0; i < n*len(gaps); i++ {
		k := i % len(gaps)
		if gaps[k] > 0 {
			ts := unix.NsecToTimespec(gaps[k].Nanoseconds())
			unix.Nanosleep(&ts, nil)
		}
		start := time.Now()
		if _, err := unix.Write(out, buf); err != nil {
			return err
		}
		if _, err := unix.Read(in, buf); err != nil {
			return err
		}
		rtts[k] = append(rtts[k], time.Since(start))
	}
	buf[0] = 'q'
	unix.Write(out, buf)
	_, err := unix.Read(in, buf)
	return err
}

// pin binds the calling thread to cpu.
func pin(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}
