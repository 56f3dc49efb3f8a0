package session

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
)

// BenchmarkShellFloor measures, in whatever kernel runs it, what one
// command's round trip between the agent and a running shell costs at
// the least, beside what a command costs today. Run inside a gVisor
// sandbox (bench.BenchmarkGVisorShellFloor does) it is the floor under
// BenchmarkGVisorWarmExec's shell part:
//
//   - pipe: one byte to an already running `cat` and back, over pipes, the
//     agent side waiting in epoll as a session does;
//   - bash-read: one short line to bash's `read` builtin and back with
//     printf (bash reads a pipe a byte at a time);
//   - frame-min: a session's frame (`true` in it) to bash's `read -N`,
//     eval'd, and a status line back on bash's stdout: the fewest calls
//     a command's round trip through a shell can make;
//   - frame-session: the same with a session command's redirections
//     (stdin, stdout, stderr, the status FIFO), without the agent's work
//     around them;
//   - exec: Session.Exec of `true`, the agent's whole session path without
//     HTTP;
//   - shell-line, shell-frame: the shell's own part of a command
//     (redirections, sourcing the command file, the status printf) as it
//     was when each command came as a line, and as it is (a frame),
//     looped inside one bash: no agent, no pipe round trip (mean-us);
//   - syscalls: single system calls of a dispatch, made by Go (-us each);
//   - syscount: the system calls the shell makes for one Session.Exec of
//     `true`, counted by strace attached to it (bash-calls): the calls a
//     warm exec's shell part is made of, the same in every kernel.
//     Skipped where there is no strace or it cannot attach: in a gVisor
//     sandbox, whose ptrace lets a tracer attach only to its descendants
//     unless it has CAP_SYS_PTRACE, as Yama's scope 1 does (runsc --strace
//     counts the same calls there).
//
// Each reports p50-us (and p90-us) per round trip.
func BenchmarkShellFloor(b *testing.B) {
	b.Run("pipe", func(b *testing.B) {
		pp := startPingPong(b, []string{"cat"}, "cat")
		defer pp.close()
		roundTrips(b, func() { pp.roundTrip(b, []byte("x"), 1) })
	})
	b.Run("bash-read", func(b *testing.B) {
		pp := startPingPong(b, []string{"bash", "--noprofile", "--norc", "-c", `while IFS= read -r l; do printf '%s\n' "$l"; done`}, "bash")
		defer pp.close()
		roundTrips(b, func() { pp.roundTrip(b, []byte("x\n"), 2) })
	})
	// A frame as the session sends one (bashFrameLen bytes, the text
	// `true` in it) to bash's read builtin, and a status line back:
	// frame-min with nothing else, the fewest calls a command's round
	// trip through a shell can make; frame-session with the redirections
	// a session's command makes (dispatchVariants' 'e': stdin from the
	// link n, stdout and stderr to o and e, the status line through the
	// FIFO s), but none of the agent's work around them (the request, the
	// answer, the settling).
	b.Run("frame-min", func(b *testing.B) {
		pp := startPingPong(b, []string{"bash", "--noprofile", "--norc", "-c",
			`while IFS= command read -r -N ` + strconv.Itoa(bashFrameLen) + ` f; do command eval "${f:` + strconv.Itoa(frameHeader) + `:${f:16:4}}"; command printf '%s %s\n' "$?" "${f:1:15}"; done`}, "bash")
		defer pp.close()
		frame := floorFrame()
		roundTrips(b, func() { pp.roundTrip(b, frame, 18) })
	})
	b.Run("frame-session", func(b *testing.B) {
		pp := startFrameSession(b)
		defer pp.close()
		frame := floorFrame()
		roundTrips(b, func() { pp.roundTrip(b, frame, 18) })
	})
	// The shell's own part of a dispatch, per command, looped inside one
	// bash (no agent, no pipe round trip), in a directory on a tmpfs as
	// the session directory is; less a loop of `:` (the loop itself).
	shellLoop := func(b *testing.B, setup, body string) {
		dir, err := os.MkdirTemp("/dev/shm", "floor")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		for _, f := range []string{"cmd", "o", "e", "s"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("true\n"), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		loop := func(body string) time.Duration {
			script := fmt.Sprintf(`cd %s; exec 3>/dev/null 4>/dev/null; %s i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done`, dir, setup, b.N, body)
			start := time.Now()
			if out, err := execCommand("bash", "--noprofile", "--norc", "-c", script); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			return time.Since(start)
		}
		per := (loop(body) - loop(":")) / time.Duration(b.N)
		b.ReportMetric(float64(per.Nanoseconds())/1000, "mean-us")
		b.ReportMetric(0, "ns/op")
	}
	for _, v := range []struct{ name, setup, body string }{
		// The shell's part of a command as a line (before 6th Dec 2026):
		// redirections saved and put back around the sourcing, and around
		// the status printf.
		{"shell-line", "", `command . ./cmd </dev/null >./o 2>./e 3>&-; command printf >&3 '%s %s\n' "$?" $i`},
		// As a frame with stdout moved by exec (6th Dec 2026), less the
		// two reads of the frame.
		{"shell-frame-exec", "", `command exec >./o; for a in 1; do for b in 1; do command . ./cmd 2>./e; done; done; s=$?; command exec >./s </dev/null; command printf '%s %s\n' "$s" $i`},
		// As a frame now (dispatchVariants): stdin, stdout and stderr
		// closed between commands.
		{"shell-frame", "exec <&- >&- 2>&-;", `{ for a in 1; do for b in 1; do command . ./cmd 2>./e; done; done >./o; s=$?; command printf '%s %s\n' "$s" >./s $i; } </dev/null`},
	} {
		b.Run(v.name, func(b *testing.B) { shellLoop(b, v.setup, v.body) })
	}
	// What single system calls of a dispatch cost, made by Go directly.
	b.Run("syscalls", func(b *testing.B) {
		dir, err := os.MkdirTemp("/dev/shm", "floor")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "o")
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		var p [2]int
		unix.Pipe(p[:])
		one := []byte{'x'}
		for _, c := range []struct {
			name string
			f    func()
		}{
			{"getppid", func() { unix.Getppid() }},
			{"open-trunc-close", func() {
				f, _ := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o600)
				unix.Close(f)
			}},
			{"open-close", func() {
				f, _ := unix.Open(path, unix.O_WRONLY, 0)
				unix.Close(f)
			}},
			{"dupfd-close", func() {
				f, _ := unix.FcntlInt(uintptr(fd), unix.F_DUPFD, 10)
				unix.Close(f)
			}},
			{"dup2", func() { unix.Dup2(fd, 20) }},
			{"setfd", func() { unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC) }},
			{"pipe-write-read", func() { unix.Write(p[1], one); unix.Read(p[0], one) }},
		} {
			n := max(b.N, 1)
			start := time.Now()
			for range n {
				c.f()
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(n)/1000, c.name+"-us")
		}
		b.ReportMetric(0, "ns/op")
	})
	b.Run("exec", func(b *testing.B) {
		m := floorManager(b)
		s, err := m.Get(Default)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		run := func() {
			var out capture
			if res, err := s.Exec(ctx, Command{Text: "true"}, &out); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, res)
			}
		}
		for range 10 {
			run()
		}
		roundTrips(b, run)
	})
	b.Run("syscount", func(b *testing.B) {
		m := floorManager(b)
		s, err := m.Get(Default)
		if err != nil {
			b.Fatal(err)
		}
		run := func() {
			var out capture
			if res, err := s.Exec(context.Background(), Command{Text: "true"}, &out); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, res)
			}
		}
		for range 10 {
			run()
		}
		<-s.turn // the last command's settling is done, and s.sh is the shell
		pid := s.sh.pid
		s.turn <- struct{}{}
		n := max(b.N, 1)
		calls, err := countCalls(b, pid, func() {
			for range n {
				run()
			}
		})
		if err != nil {
			b.Skip(err)
		}
		total := 0
		for _, c := range calls {
			total += c.n
		}
		var each bytes.Buffer
		for _, c := range calls {
			fmt.Fprintf(&each, " %s %.2f", c.name, float64(c.n)/float64(n))
		}
		b.Logf("the shell's system calls per exec:%s", each.String())
		b.ReportMetric(float64(total)/float64(n), "bash-calls")
		b.ReportMetric(0, "ns/op")
	})
}

// syscallCount is one row of strace's summary: a system call's name and
// how many times it was made.
type syscallCount struct {
	name string
	n    int
}

// countCalls counts the system calls process pid makes while f runs, with
// strace -c attached to it (an error if there is no strace, or it cannot
// attach).
func countCalls(b *testing.B, pid int, f func()) ([]syscallCount, error) {
	path, err := lookPath("strace")
	if err != nil {
		return nil, err
	}
	summary := filepath.Join(b.TempDir(), "summary")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p, err := os.StartProcess(path, []string{"strace", "-c", "-o", summary, "-p", strconv.Itoa(pid)}, &os.ProcAttr{Files: []*os.File{nil, nil, w}})
	w.Close()
	if err != nil {
		return nil, err
	}
	// strace says "Process N attached" on stderr once the count runs.
	said := make([]byte, 0, 256)
	buf := make([]byte, 256)
	for !bytes.Contains(said, []byte("attached")) {
		k, err := r.Read(buf)
		said = append(said, buf[:k]...)
		if err != nil {
			p.Kill()
			p.Wait()
			return nil, fmt.Errorf("strace did not attach: %s", bytes.TrimSpace(said))
		}
	}
	f()
	p.Signal(os.Interrupt)
	if _, err := p.Wait(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(summary)
	if err != nil {
		return nil, err
	}
	return parseStraceSummary(data), nil
}

// parseStraceSummary reads strace -c's table: "% time seconds usecs/call
// calls [errors] syscall" rows between dashed lines, then a total row.
func parseStraceSummary(data []byte) []syscallCount {
	var rows []syscallCount
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) < 5 || bytes.Equal(f[len(f)-1], []byte("total")) {
			continue
		}
		n, err := strconv.Atoi(string(f[3]))
		if err != nil {
			continue // the heading, a dashed line
		}
		rows = append(rows, syscallCount{string(f[len(f)-1]), n})
	}
	return rows
}

// roundTrips runs f b.N times, after 20 runs to warm up, and reports
// its percentiles.
func roundTrips(b *testing.B, f func()) {
	n := b.N
	took := make([]time.Duration, 0, n)
	for range 20 {
		f()
	}
	for range n {
		start := time.Now()
		f()
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	us := func(p int) float64 { return float64(took[len(took)*p/100].Nanoseconds()) / 1000 }
	b.ReportMetric(us(50), "p50-us")
	b.ReportMetric(us(90), "p90-us")
	b.ReportMetric(0, "ns/op")
}

func execCommand(name string, args ...string) ([]byte, error) {
	path, err := lookPath(name)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p, err := os.StartProcess(path, append([]string{name}, args...), &os.ProcAttr{Files: []*os.File{nil, w, w}})
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	out := make([]byte, 0, 512)
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			break
		}
	}
	r.Close()
	st, err := p.Wait()
	if err == nil && !st.Success() {
		err = fmt.Errorf("%s: %s", name, st)
	}
	return out, err
}

func lookPath(name string) (string, error) {
	for _, d := range []string{"/usr/bin", "/bin"} {
		if _, err := os.Stat(d + "/" + name); err == nil {
			return d + "/" + name, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// pingPong is a process whose stdin and stdout are pipes of the caller's,
// read and written the way a session does: non-blocking, through epoll.
type pingPong struct {
	in, out, ep int
	proc        *os.Process
	buf         []byte
}

func startPingPong(b *testing.B, argv []string, name string) *pingPong {
	path, err := lookPath(name)
	if err != nil {
		b.Skip(err)
	}
	var in, out [2]int
	if err := unix.Pipe2(in[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	if err := unix.Pipe2(out[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	stdin, stdout := os.NewFile(uintptr(in[0]), "in"), os.NewFile(uintptr(out[1]), "out")
	p, err := os.StartProcess(path, argv, &os.ProcAttr{Files: []*os.File{stdin, stdout, os.Stderr}})
	stdin.Close()
	stdout.Close()
	if err != nil {
		b.Fatal(err)
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	unix.SetNonblock(in[1], true)
	unix.SetNonblock(out[0], true)
	if err := epollAdd(ep, out[0], unix.EPOLLIN); err != nil {
		b.Fatal(err)
	}
	return &pingPong{in: in[1], out: out[0], ep: ep, proc: p, buf: make([]byte, 64)}
}

// floorFrame is a bash frame as the session writes one: letter 'e',
// the command's number, the text's length and the text `true`, padded.
func floorFrame() []byte {
	head := fmt.Sprintf("e%015d%04d%s", 1, 4, "true")
	return append([]byte(head), bytes.Repeat([]byte{' '}, bashFrameLen-len(head))...)
}

// startFrameSession starts a bash that reads frames from its stdin and
// runs each as a session's 'e' command does, in a directory on a tmpfs:
// stdin from the link n (to /dev/null), stdout and stderr to the files o
// and e, the status line into the FIFO s, whose read end (with a write
// end held, as the session holds its own) the round trip waits on.
func startFrameSession(b *testing.B) *pingPong {
	dir, err := os.MkdirTemp("/dev/shm", "floor")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Symlink("/dev/null", filepath.Join(dir, "n")); err != nil {
		b.Fatal(err)
	}
	status := filepath.Join(dir, "s")
	if err := unix.Mkfifo(status, 0o600); err != nil {
		b.Fatal(err)
	}
	r, err := unix.Open(status, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	hold, err := unix.Open(status, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(hold) }) // r is the ping-pong's: closed with it
	script := `cd ` + dir + `; command exec 4<&0 <&- >&- 2>&-; while IFS= command read -r -N ` + strconv.Itoa(bashFrameLen) + ` -u 4 f; do ` +
		`{ for a in 1; do for b in 1; do command eval "${f:` + strconv.Itoa(frameHeader) + `:${f:16:4}}" 2>./e; done; done >./o; s=$?; ` +
		`command printf '%s %s\n' "$s" "${f:1:15}" >./s; } <./n; done`
	pp := startPingPong(b, []string{"bash", "--noprofile", "--norc", "-c", script}, "bash")
	unix.EpollCtl(pp.ep, unix.EPOLL_CTL_DEL, pp.out, nil)
	unix.Close(pp.out)
	pp.out = r
	if err := epollAdd(pp.ep, r, unix.EPOLLIN); err != nil {
		b.Fatal(err)
	}
	return pp
}

func (pp *pingPong) roundTrip(b *testing.B, msg []byte, want int) {
	if _, err := unix.Write(pp.in, msg); err != nil {
		b.Fatal(err)
	}
	events := make([]unix.EpollEvent, 2)
	for got := 0; got < want; {
		n, err := unix.Read(pp.out, pp.buf)
		if n > 0 {
			got += n
			continue
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			b.Fatalf("read: %d %v", n, err)
		}
		if _, err := unix.EpollWait(pp.ep, events, -1); err != nil && err != unix.EINTR {
			b.Fatal(err)
		}
	}
}

func (pp *pingPong) close() {
	unix.Close(pp.in)
	pp.proc.Wait()
	unix.Close(pp.out)
	unix.Close(pp.ep)
}

func floorManager(b *testing.B) *Manager {
	dir := "/dev/shm"
	if _, err := os.Stat(dir); err != nil {
		dir = ""
	}
	run, err := os.MkdirTemp(dir, "floor-run")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(run) })
	m, err := NewManager(Config{
		RunDir:      run,
		Workspace:   b.TempDir(),
		DirectSpawn: true,
		BaseEnv:     []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"},
		Reaper:      agenttest.Reaper(b),
		Log:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Close)
	return m
}
