package process

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkForkFloor is the floor under a login process of `true`: warm
// login bashes (their profile ran) told on a pipe to run one command,
// timed from the write to the moment the caller sees the end, with no
// files, no records and no HTTP. Two shells, as in the agent: one runs
// builtins (the session shell a warm exec uses), the other forks (the
// fork server). Five ways, interleaved sample by sample
// (bench/results/e2b.txt):
//   - builtin: the first shell runs `true` itself and answers (what a
//     warm exec of sandboxd's sessions does, minus its protocol);
//   - fork: the second shell forks a child that runs `true` and exits;
//     the end is its pidfd turning readable (one fork: the least a
//     command that is a process of its own costs when it is forked at
//     its call);
//   - fork2: as the fork server does, a subshell forks the command's
//     process and exits, so that the process is the caller's child (the
//     caller is a subreaper), and the end is the caller's wait4 of it;
//   - ready: a process forked ahead as fork2 forks it, already waiting on
//     a FIFO, is told to run `true` (the fork server's readyProc: no fork
//     on the command's time); the end is the caller's wait4 of it;
//   - after: a builtin sent right after ready's end, while the second
//     shell forks the next ready process (the refill), as a warm exec
//     right after an E2B command meets the agent's refill.
func BenchmarkForkFloor(b *testing.B) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	script := `while IFS= read -r l; do case $l in
b) true; echo ok;;
f) { true; } & echo $!;;
d) (set -m; (true) & echo $!);;
r*) (set -m; (read -r x <"${l#r}"; true) & echo $!);;
esac; done`
	builtinSh, forkSh := startFloorShell(b, script), startFloorShell(b, script)
	builtin := func() { builtinSh.ask(b, "b") }
	fork := func() {
		pid, _ := strconv.Atoi(forkSh.ask(b, "f"))
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return // already gone
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				break
			}
		}
		unix.Close(fd)
	}
	wait := func(pid int) {
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
				break
			}
		}
	}
	fork2 := func() {
		pid, _ := strconv.Atoi(forkSh.ask(b, "d"))
		wait(pid)
	}
	// A ready process reads its FIFO, which the caller holds open for
	// writing (O_RDWR: the open never waits), as the agent holds .cmd.
	type ready struct {
		pid int
		w   *os.File
	}
	n := 0
	refill := func() (send func(), done func() ready) {
		n++
		path := filepath.Join(dir, strconv.Itoa(n))
		if err := unix.Mkfifo(path, 0o600); err != nil {
			b.Fatal(err)
		}
		w, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		return func() { forkSh.send(b, "r"+path) }, func() ready {
			pid, _ := strconv.Atoi(forkSh.answer(b))
			os.Remove(path)
			// Its subshell's exit hands it over (untimed), as the agent
			// waits for it before a kill.
			waitReparented(pid, time.Now().Add(10*time.Second))
			return ready{pid, w}
		}
	}
	send, done := refill()
	send()
	next := done()
	runReady := func() {
		next.w.WriteString("x\n")
		wait(next.pid)
		next.w.Close()
	}
	for range 5 {
		builtin()
		runReady()
		send, done = refill()
		send()
		next = done()
		fork()
		fork2()
	}
	var tb, tr, ta, tf, td []time.Duration
	for b.Loop() {
		s := time.Now()
		builtin()
		tb = append(tb, time.Since(s))
		s = time.Now()
		runReady()
		tr = append(tr, time.Since(s))
		send, done = refill()
		send() // the refill, as the agent starts it at a command's end
		s = time.Now()
		builtin()
		ta = append(ta, time.Since(s))
		next = done()
		s = time.Now()
		fork()
		tf = append(tf, time.Since(s))
		s = time.Now()
		fork2()
		td = append(td, time.Since(s))
	}
	next.w.Close()
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	b.ReportMetric(p50(tb), "builtin-p50-µs")
	b.ReportMetric(p50(tf), "fork-p50-µs")
	b.ReportMetric(p50(td), "fork2-p50-µs")
	b.ReportMetric(p50(tr), "ready-p50-µs")
	b.ReportMetric(p50(ta), "after-p50-µs")
}

// floorShell is a warm login bash reading one-line requests on a pipe.
// Its pipes are blocking descriptors read and written by plain system
// calls, not through Go's poller, so that every variant's end is seen by
// a thread the kernel wakes (as wait4 and poll of a pidfd are).
type floorShell struct {
	in, out int
	buf     []byte
}

func startFloorShell(b *testing.B, script string) *floorShell {
	var in, out [2]int
	if err := unix.Pipe2(in[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	if err := unix.Pipe2(out[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	stdin, stdout := os.NewFile(uintptr(in[0]), "stdin"), os.NewFile(uintptr(out[1]), "stdout")
	cmd := exec.Command("/bin/bash", "-l", "-c", script)
	cmd.Dir = "/tmp"
	cmd.Stdin, cmd.Stdout = stdin, stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stdin.Close()
	stdout.Close()
	b.Cleanup(func() { unix.Close(in[1]); cmd.Wait(); unix.Close(out[0]) })
	return &floorShell{in: in[1], out: out[0]}
}

func (s *floorShell) send(b *testing.B, line string) {
	if _, err := unix.Write(s.in, []byte(line+"\n")); err != nil {
		b.Fatal(err)
	}
}

func (s *floorShell) answer(b *testing.B) string {
	var chunk [128]byte
	for {
		if i := slices.Index(s.buf, '\n'); i >= 0 {
			line := string(s.buf[:i])
			s.buf = s.buf[i+1:]
			return strings.TrimSpace(line)
		}
		n, err := unix.Read(s.out, chunk[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			b.Fatalf("reading the shell's answer: %v", err)
		}
		s.buf = append(s.buf, chunk[:n]...)
	}
}

func (s *floorShell) ask(b *testing.B, line string) string {
	s.send(b, line)
	return s.answer(b)
}
