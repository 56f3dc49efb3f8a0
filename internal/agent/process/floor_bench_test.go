package process

import (
	"bufio"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkForkFloor is the floor under a login process of `true`: a warm
// login bash (its profile ran) told on a pipe to run one command, timed
// from the write to the moment the caller sees the end, with no files,
// no FIFOs, no records and no HTTP. Three ways, interleaved sample by
// sample (bench/results/e2b.txt):
//   - builtin: the shell runs `true` itself and answers (what a warm exec
//     of sandboxd's sessions does, minus its protocol);
//   - fork: the shell forks a child that runs `true` and exits; the end
//     is its pidfd turning readable (one fork: the least a command that is
//     a process of its own costs);
//   - fork2: as the fork server does, a subshell forks the command's
//     process and exits, so that the process is the caller's child (the
//     caller is a subreaper), and the end is the caller's wait4 of it.
func BenchmarkForkFloor(b *testing.B) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		b.Fatal(err)
	}
	script := `while IFS= read -r l; do case $l in
b) true; echo ok;;
f) { true; } & echo $!;;
d) (set -m; (true) & echo $!);;
esac; done`
	cmd := exec.Command("/bin/bash", "-l", "-c", script)
	cmd.Dir = "/tmp"
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { in.Close(); cmd.Wait() }()
	out := bufio.NewReader(outPipe)
	ask := func(c string) string {
		if _, err := in.Write([]byte(c + "\n")); err != nil {
			b.Fatal(err)
		}
		line, err := out.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		return strings.TrimSpace(line)
	}
	builtin := func() { ask("b") }
	fork := func() {
		pid, _ := strconv.Atoi(ask("f"))
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
	fork2 := func() {
		pid, _ := strconv.Atoi(ask("d"))
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
				break
			}
		}
	}
	for range 5 {
		builtin()
		fork()
		fork2()
	}
	var tb, tf, td []time.Duration
	for b.Loop() {
		s := time.Now()
		builtin()
		tb = append(tb, time.Since(s))
		s = time.Now()
		fork()
		tf = append(tf, time.Since(s))
		s = time.Now()
		fork2()
		td = append(td, time.Since(s))
	}
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	b.ReportMetric(p50(tb), "builtin-p50-µs")
	b.ReportMetric(p50(tf), "fork-p50-µs")
	b.ReportMetric(p50(td), "fork2-p50-µs")
}
