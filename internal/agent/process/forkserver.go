package process

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// A fork server is the long-lived login shell that login processes
// (StartOptions.Login: `bash -l -c CMD`, as E2B's envd runs every command)
// are forked from. The spawn wrapper starts it once, as the user, in the
// user cgroup, in its own session, with the directory and environment of
// a login process: the login profile (/etc/profile, profile.d,
// ~/.profile ...) runs once, and then the shell reads commands from a
// pipe and forks a child for each, which opens its own stdin, stdout and
// stderr (FIFOs the agent made for it), leads a process group of its own,
// and evaluates the command. A builtin (true) then costs two forks of a
// warm shell, and any other command one exec more: no Go start-up and no
// profile on the caller's time, and no wait for a spare between two
// commands sent back to back.
//
// Each command is forked twice (a subshell with job control that forks
// the command's process into a group of its own and exits): the
// command's process is re-parented to the agent, whose reaper stays its
// only waiter and sees its real wait status (exit code or signal). The
// process waits for the agent before it runs anything: its open of its
// stdin FIFO returns only once the agent saw it re-parented and opened
// the FIFO's other end, so that no status can be reaped by the subshell.
//
// What the command sees is what the login spare gave it (the shell
// after the profile: its variables, functions and options), in a
// subshell of that shell: $$ and PPID name the fork server (BASHPID is
// the command's own PID), BASH_SUBSHELL is 2, the EXIT trap of a profile
// does not run, and the process shares the server's session. The server
// is used only for processes of the same user, directory and environment
// (the profile ran with them), only while none of the profile's files
// changed since it started (loginFiles, stat'ed at each use), and only if
// its profile wrote nothing (output a fresh `bash -l -c` would print
// first on every command's stdout): otherwise login processes use the
// login spare (login.go).
type forkServer struct {
	sp     *spare // its process, request pipe (fd 4) and answers (stdout)
	key    loginKey
	stamps []fileStamp
	dir    string // where its commands' FIFOs are made
	// account owns its processes' FIFOs; nil: root.
	account *user.Account

	reqMu   sync.Mutex // one request and its answer at a time
	answers *lineReader
	once    sync.Once // closes its files

	// The process forked ahead for the next command (see readyProc).
	readyMu  sync.Mutex
	ready    *readyProc
	readying chan struct{} // closed when the fork ahead in flight is over
	closed   bool
}

// forkServerScript runs in the login shell once its profile ran: it says
// it is ready on stdout, keeps stdout as fd 5 for its answers and gives up
// its stdio, and forks a process for each FIFO path prefix that comes on
// fd 4, ended by NUL: ahead of the command that process will run (see
// readyProc). For each, a subshell with job control (set -m: the
// process leads a group of its own, and gets SIGINT and SIGQUIT as a
// foreground command would) holds the .mid FIFO open, forks the process,
// answers its PID and exits. The process first waits for that exit (end
// of file on .mid), so that it is the agent's before it runs anything;
// then it opens its stdout and stderr and the .cmd FIFO, and waits there
// for its stdin's path (the .in FIFO, or /dev/null) and its command, each
// ended by NUL (an empty path first asks it to warm up: warmUpScript).
// Those opens by path never wait for the agent: an open of one end of a
// FIFO blocks until the other end is open, and an agent
// killed before them (a test's agent on the host; in a sandbox the
// process dies with the agent's PID namespace) would leave the process
// waiting for ever. So it first opens each FIFO read-write (which never
// blocks) on the descriptor the open by path then replaces, or closes
// once the path is open: its own end is the other end at the moment of
// that open, and then the agent's alone, whose end of file or broken pipe
// ends the process if the agent is gone; it opens its stdin, sets
// BASH_EXECUTION_STRING to the command and evaluates it, unless its
// stdout is not the FIFO. A process whose FIFOs the agent removed (it gave
// up on it) cannot open them (only root may create files in their
// directory) and exits without running anything. The variable names start
// as the login spare's (both loaders are found by them), and the command
// sees none. After the command, the process reports its status (see
// reportScript), unless it exited on its own (exit, exec, a signal).
const forkServerScript = `printf 'sandboxd-fork-server\n'; exec 5>&1 </dev/null >/dev/null 2>&1
while IFS= read -r -d '' __sandboxd_fifo <&4; do
(set -m; exec 6<>"$__sandboxd_fifo.mid"
(set +m; exec 4<&- 5>&- 6<"$__sandboxd_fifo.mid" 7<>"$__sandboxd_fifo.cmd" 8<>"$__sandboxd_fifo.out" 9<>"$__sandboxd_fifo.err" || exit 1
read -r -u 6 __sandboxd_mid || :
exec 6<&- 7<"$__sandboxd_fifo.cmd" >"$__sandboxd_fifo.out" 2>"$__sandboxd_fifo.err" 8>&- 9>&- || exit 1
while IFS= read -r -d '' -u 7 __sandboxd_in && \builtin [ -z "$__sandboxd_in" ]; do { WARMUP; } >/dev/null 2>&1; done; IFS= read -r -d '' -u 7 __sandboxd_cmd || exit 1
exec 7<&- <"$__sandboxd_in"; [ -p /dev/fd/1 ] || exit 1
EXECSTRING; eval "unset __sandboxd_fifo __sandboxd_in __sandboxd_cmd __sandboxd_mid; $__sandboxd_cmd"
{ \builtin . REPORT "$?"; } >/dev/null 2>&1) &
printf '%d\n' "$!" >&5)
done`

// serverScript is forkServerScript with the path of the report script
// (see reportScript), the warm-up (warmUpScript) and the setting of
// BASH_EXECUTION_STRING (execStringScript) in place.
func serverScript(report string) string {
	return strings.NewReplacer("REPORT", shellQuote(report), "WARMUP", warmUpScript, "EXECSTRING", execStringScript).Replace(forkServerScript)
}

// warmUpScript is what a process forked ahead runs when the agent asks
// it to (an empty stdin path on its .cmd FIFO, written warmUpAfter after
// the fork unless a command took the process: see warmLater): the code
// its command's evaluation and report will run (test, eval, unset, a
// builtin, a sourced file, trap -p, printf into a read-write redirection),
// against /dev/null. A forked process faults on the first run of every
// text page and the first write of every copied page, and on a PVM guest
// each fault costs tens of microseconds: this moves most of the ones after
// the command (p50 8-17 per process without it, 1-6 with it) to the time
// it waits anyway. It sets nothing the command can see: no variable (the
// unset names one that is not set), every builtin called as \builtin,
// its output on /dev/null; it runs on the script line of the command's
// read, so that LINENO is the same. (Not a timeout of that read: read -t
// leaves bash catching the terminating signals for good.)
const warmUpScript = `\builtin [ -p /dev/null ] || :; \builtin eval '\builtin unset __sandboxd_warm; \builtin true'; \builtin . /dev/null; { \builtin trap -p EXIT; \builtin printf '\0%d\n' 0; } 1<>/dev/null`

// reportName is the report script's name in the FIFOs' directory.
const reportName = "report"

// reportScript is what a process the fork server forked sources once its
// command returned: it writes its EXIT trap (as trap -p prints it) and
// its status, "\0STATUS\n", to its status FIFO, DIR/PID.st (readyProc),
// and returns that status, which the process then exits with. The agent
// ends the process's record at that report (awaitReport), without waiting
// for the kernel's teardown of the shell (~0.5-0.7 ms between its exit
// and any sign of it, on a PVM guest where page table work is costly):
// its output is complete then, and nothing of its command runs any more.
// A process with an EXIT trap reports it first and is left to the reaper:
// the trap runs after the report. One that exits on its own (exit, exec,
// a signal) reports nothing.
//
// What the command leaves set must not change what it prints or how it
// exits, hence: no variable (the status is the script's $1, and `return`
// gives it back), every word quoted, builtins called as \builtin (a
// function or alias of the user's can shadow a name), the loader's
// stdout and stderr on /dev/null while it runs (set -x traces it, and a
// DEBUG or RETURN trap of the command runs for its commands), a failed
// open ignored (|| : under set -e), and the FIFO opened read-write (an
// open that never waits). ${BASHPID-} because set -u would make an unset
// BASHPID fatal.
func reportScript(dir string) string {
	return `{ \builtin trap -p EXIT; \builtin printf '\0%d\n' "$1"; } 1<>` + shellQuote(dir) + `"/${BASHPID-}.st" || \builtin :
\builtin return "$1"
`
}

// shellQuote quotes s for a shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// forkServerReady is what the script prints when its profile ran.
const forkServerReady = "sandboxd-fork-server\n"

// forkVeto remembers a profile that wrote output, so that the next login
// processes of that key use the login spare rather than forking servers
// that cannot be used.
type forkVeto struct {
	key    loginKey
	stamps []fileStamp
}

// usableForFork reports whether a command can be handed to a fork server.
func usableForFork(o StartOptions) bool {
	return len(o.Command) <= maxLoginCommand && strings.IndexByte(o.Command, 0) < 0
}

// loginEnded keeps a login shell ready for the next login process like o:
// the fork server, or the login spare where a fork server cannot serve.
//
// It runs on the way to the process's exit event. The server that serves
// processes like o forks the next process at once; whether the profile's
// files changed since it started is checked when the next command claims
// it (claimForkServer), not here: their stat costs a dozen system calls,
// which would delay every command's end.
func (m *Manager) loginEnded(o StartOptions) {
	if m.forkDir == "" || m.forkVetoed(o) {
		m.startLoginSpare(o)
		return
	}
	m.spareMu.Lock()
	fs := m.fork
	m.spareMu.Unlock()
	if fs != nil && fs.key.servesLike(keyOf(o)) {
		m.refillReady(fs)
		return
	}
	m.startForkServer(o)
}

func (m *Manager) forkVetoed(o StartOptions) bool {
	m.spareMu.Lock()
	v := m.forkVeto
	m.spareMu.Unlock()
	return v != nil && v.key.equal(keyOf(o)) && slices.Equal(v.stamps, loginFilesOf(o))
}

// startForkServer starts a fork server for processes like o in the
// background, unless one is starting or one serves them already; a
// server for other processes is replaced.
func (m *Manager) startForkServer(o StartOptions) {
	key := keyOf(o)
	m.spareMu.Lock()
	if m.forkStarting != nil || m.spareClosed {
		m.spareMu.Unlock()
		return
	}
	old := m.fork
	if old != nil && old.key.servesLike(key) && slices.Equal(old.stamps, loginFilesOf(o)) {
		m.spareMu.Unlock()
		m.refillReady(old) // the next process, while this one's end travels
		return
	}
	m.fork = nil
	started := make(chan struct{})
	m.forkStarting = started
	m.wg.Add(1) // under spareMu, as in startSpare
	m.spareMu.Unlock()
	if old != nil {
		old.discard()
	}
	go func() {
		defer m.wg.Done()
		defer close(started)
		fs, printed := m.newForkServer(o)
		m.spareMu.Lock()
		m.forkStarting = nil
		keep := fs != nil && !m.spareClosed && !fs.sp.dead
		if keep {
			m.fork = fs
		}
		if printed {
			m.forkVeto = &forkVeto{key: key, stamps: loginFilesOf(o)}
		}
		m.spareMu.Unlock()
		if fs != nil && !keep {
			fs.discard()
		}
		if keep {
			m.refillReady(fs)
		}
		if printed {
			m.startLoginSpare(o)
		}
	}()
}

// newForkServer starts a fork server for processes like o and waits for
// its profile to run. It returns nil when it could not, and whether that
// was because the profile wrote output.
func (m *Manager) newForkServer(o StartOptions) (*forkServer, bool) {
	if m.PrepareDirs() != nil {
		return nil, false
	}
	fs := &forkServer{sp: &spare{}, key: keyOf(o), stamps: loginFilesOf(o), dir: m.forkDir, account: o.Account}
	so := spawn.Options{CgroupRoot: m.cfg.CgroupRoot, ErrFD: spareErrFD, CloseErrFD: true}
	if o.Account != nil {
		so.UID, so.GID = &o.Account.UID, &o.Account.GID
	}
	argv := spawn.Argv(m.cfg.Self, so, m.cfg.Shell, "-l", "-c", serverScript(filepath.Join(m.forkDir, reportName)))
	sp := fs.sp
	if !m.startSpareProcess(sp, argv, o.Cwd, o.Env, func(st reaper.Status) { m.forkServerExited(fs) }) {
		return nil, false
	}
	sp.stdin.Close()
	// The wrapper's error pipe to its end (the exec closes it), the first
	// line on stdout, and stderr to its end (the script closes it once the
	// profile ran): the ready line must be all the profile wrote.
	deadline := time.Now().Add(m.cfg.StartTimeout)
	sp.errR.SetReadDeadline(deadline)
	wrapperErr, _ := io.ReadAll(io.LimitReader(sp.errR, 4096))
	sp.errR.Close()
	sp.stdout.SetReadDeadline(deadline)
	fs.answers = &lineReader{f: sp.stdout}
	first, err := fs.answers.next()
	sp.stderr.SetReadDeadline(deadline)
	stderr, _ := io.ReadAll(io.LimitReader(sp.stderr, 4096))
	sp.stderr.Close()
	if len(wrapperErr) > 0 || err != nil || first+"\n" != forkServerReady || len(stderr) > 0 {
		fs.discard()
		printed := len(wrapperErr) == 0 && (len(stderr) > 0 || strings.HasSuffix(first+"\n", forkServerReady))
		return nil, printed
	}
	return fs, false
}

// PrepareLogin starts the fork server for login processes like o ahead
// of the first (o's Command is not used), and waits until it is ready or
// ctx is done. It reports whether one is ready: false when there is no
// fork server (no RunDir, or the profile prints), which is no error, the
// processes start another way.
func (m *Manager) PrepareLogin(ctx context.Context, o StartOptions) bool {
	if m.forkDir == "" || m.forkVetoed(o) {
		return false
	}
	m.startForkServer(o)
	m.spareMu.Lock()
	starting := m.forkStarting
	m.spareMu.Unlock()
	if starting != nil {
		select {
		case <-starting:
		case <-ctx.Done():
			return false
		}
	}
	m.spareMu.Lock()
	fs := m.fork
	m.spareMu.Unlock()
	if fs == nil || !fs.key.servesLike(keyOf(o)) {
		return false
	}
	m.refillReady(fs)
	fs.readyMu.Lock()
	readying := fs.readying
	fs.readyMu.Unlock()
	if readying != nil {
		select {
		case <-readying:
		case <-ctx.Done():
		}
	}
	return true
}

// forkServerExited forgets a fork server that died. It runs on the
// reaper's goroutine.
func (m *Manager) forkServerExited(fs *forkServer) {
	m.spareMu.Lock()
	fs.sp.dead = true
	if m.fork == fs {
		m.fork = nil
	}
	m.spareMu.Unlock()
	fs.closeFiles()
}

// discard kills the fork server. The processes it forked are the agent's.
func (fs *forkServer) discard() {
	fs.sp.proc.Signal(syscall.SIGKILL)
	fs.closeFiles()
}

// closeFiles closes the server's files, and kills its ready process: it
// is of use only through the server.
func (fs *forkServer) closeFiles() {
	fs.once.Do(func() {
		fs.sp.closeFiles()
		fs.readyMu.Lock()
		fs.closed = true
		rp := fs.ready
		fs.ready = nil
		fs.readyMu.Unlock()
		if rp != nil {
			rp.discard()
		}
	})
}

// claimForkServer returns the fork server when it serves processes like
// o, waiting for one that is starting, or starting one when there is
// none (the first login process then pays the server's start instead of
// a start of its own, and the next one does not wait for a second); a
// server started for other processes, or before the profile's files
// changed, is killed.
func (m *Manager) claimForkServer(o StartOptions) *forkServer {
	if m.forkDir == "" || !usableForFork(o) {
		return nil
	}
	m.spareMu.Lock()
	fs, starting := m.fork, m.forkStarting
	m.spareMu.Unlock()
	if fs == nil && starting == nil && !m.forkVetoed(o) {
		m.startForkServer(o)
		m.spareMu.Lock()
		fs, starting = m.fork, m.forkStarting
		m.spareMu.Unlock()
	}
	if fs == nil && starting != nil {
		select {
		case <-starting:
		case <-time.After(m.cfg.StartTimeout):
		}
		m.spareMu.Lock()
		fs = m.fork
		m.spareMu.Unlock()
	}
	if fs == nil {
		return nil
	}
	if fs.key.servesLike(keyOf(o)) && slices.Equal(fs.stamps, loginFilesOf(o)) {
		return fs
	}
	m.spareMu.Lock()
	if m.fork == fs {
		m.fork = nil
	}
	m.spareMu.Unlock()
	fs.discard()
	return nil
}

// fork has the server fork a process whose FIFOs are at base plus .mid,
// .cmd, .out and .err, and returns its PID.
func (fs *forkServer) fork(base string, deadline time.Time) (int, error) {
	fs.reqMu.Lock()
	defer fs.reqMu.Unlock()
	fs.sp.req.SetWriteDeadline(deadline)
	if _, err := fs.sp.req.WriteString(base + "\x00"); err != nil {
		return 0, err
	}
	fs.sp.stdout.SetReadDeadline(deadline)
	line, err := fs.answers.next()
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(line)
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("the fork server answered %q", line)
	}
	return pid, nil
}

// A readyProc is a process the fork server forked ahead of the command it
// will run: it waits, re-parented to the agent, its stdout and stderr
// open, for its stdin's path and its command on its .cmd FIFO. A login
// process takes the one that is ready (its start is then one write to
// that FIFO: no fork, no wait for the server's answer or for the
// process's hand-over), and the next is forked when it ends, while its
// exit travels to the caller. What it runs in is what a fork at the
// command's start would give it: the server's shell, which changes
// nothing between its requests; its key and the profile's stamps are
// checked at the take as for the server.
type readyProc struct {
	fp  *forkedProc
	out [2]*os.File // read ends of stdout's and stderr's FIFOs

	mu    sync.Mutex
	owner *Proc          // the process it runs, once taken
	ended *reaper.Status // it ended before it was taken
	warm  *time.Timer    // asks it to warm up (warmLater)
}

// warmUpAfter is how long a process forked ahead waits for a command
// before the agent asks it to warm up: longer than calls sent back to
// back take, so that the warm-up never runs beside the next call, and the
// command of a program that paused finds the process warm.
const warmUpAfter = 20 * time.Millisecond

// warmLater asks the process to run warmUpScript after warmUpAfter,
// unless it was taken or ended by then: an empty stdin path on its .cmd
// FIFO, which it reads before its command's (a command taken after it
// waits for the warm-up, at most about a millisecond).
func (rp *readyProc) warmLater() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.warm = time.AfterFunc(warmUpAfter, func() {
		rp.mu.Lock()
		defer rp.mu.Unlock()
		if rp.owner == nil && rp.ended == nil {
			rp.fp.cmd.Write([]byte{0})
		}
	})
}

// forkReady forks a process ahead (see readyProc). Its status goes to
// its owner once it is taken; one that ends before is cleaned up.
func (m *Manager) forkReady(fs *forkServer) (*readyProc, error) {
	var name [8]byte
	rand.Read(name[:])
	rp := &readyProc{fp: &forkedProc{base: filepath.Join(fs.dir, hex.EncodeToString(name[:])), stdinDone: make(chan struct{})}}
	fp := rp.fp
	fail := func(err error) (*readyProc, error) {
		rp.closeFiles()
		fp.remove()
		return nil, err
	}
	o := StartOptions{Account: fs.account}
	for _, n := range []string{"mid", "cmd"} {
		if _, err := fp.mkfifo(n, o); err != nil {
			return fail(err)
		}
	}
	var err error
	if fp.cmd, err = openFIFO(fp.base+".cmd", unix.O_RDWR); err != nil {
		return fail(err)
	}
	for i, n := range []string{"out", "err"} {
		path, err := fp.mkfifo(n, o)
		if err != nil {
			return fail(err)
		}
		if rp.out[i], err = openFIFO(path, unix.O_RDONLY); err != nil {
			return fail(err)
		}
		if fp.holds[i], err = openFIFO(path, unix.O_WRONLY); err != nil {
			return fail(err)
		}
	}
	deadline := time.Now().Add(m.cfg.StartTimeout)
	pid, err := m.cfg.Reaper.Start(func() (int, error) {
		return fs.fork(fp.base, deadline)
	}, rp.exited)
	if err != nil {
		// A server that forks nothing in StartTimeout is of no use. (A
		// process it forked after that cannot open its FIFOs.)
		m.dropForkServer(fs)
		return fail(err)
	}
	fp.pid, fp.expiry = pid, deadline
	m.kickAtExit(pid)
	rp.makeStatusFIFO(fs.dir, o)
	rp.warmLater()
	return rp, nil
}

// makeStatusFIFO makes the FIFO the process reports its status to (see
// reportScript), named by its PID: the one name the process knows without
// a variable the command would see. A file an earlier process of that PID
// left there is replaced. The agent opens it when the process is taken:
// an open FIFO holds a pipe buffer, which counts against its user's pipe
// pages (fs.pipe-user-pages-soft), and a process forked ahead may wait
// long. Without it the process reports nothing (its open fails: only
// root may create files in the directory) and its end is the reaper's.
func (rp *readyProc) makeStatusFIFO(dir string, o StartOptions) {
	path := filepath.Join(dir, strconv.Itoa(rp.fp.pid)+".st")
	err := unix.Mkfifo(path, 0o600)
	if errors.Is(err, unix.EEXIST) {
		os.Remove(path)
		err = unix.Mkfifo(path, 0o600)
	}
	if err == nil && o.Account != nil {
		err = os.Lchown(path, o.Account.UID, o.Account.GID)
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.ended != nil {
		// Gone already: exited removed the others.
		os.Remove(path)
		return
	}
	rp.fp.made = append(rp.fp.made, path)
	if err == nil {
		rp.fp.statusPath = path
	}
}

// kickAtExit has the reaper reap pid as soon as it exits: Go's poller
// watches its pidfd, beside the SIGCHLD the reaper waits for. On the way
// of every login command's end: at load 21 the reaper's wait4 came 127 us
// p50, 1.4 ms p90 after the exit showed on a pidfd. Best effort: without
// a pidfd the signal alone serves.
func (m *Manager) kickAtExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer f.Close()
		waited := false
		// Read waits for readability (the process exited) when the
		// function answers false, then calls it again.
		if rc.Read(func(uintptr) bool { done := waited; waited = true; return done }) == nil {
			m.cfg.Reaper.Kick()
		}
	}()
}

// exited takes the process's status: its owner's, or the end of a process
// that was never taken. It runs on the reaper's goroutine.
func (rp *readyProc) exited(st reaper.Status) {
	rp.mu.Lock()
	p := rp.owner
	if p == nil {
		rp.ended = &st
	}
	rp.mu.Unlock()
	if p != nil {
		select {
		case <-p.done:
			// Its report ended the record (awaitReport), and the manager
			// may be closed: no work to add. While done is open, the
			// report's goroutine, if any, is counted in wg.
			return
		default:
		}
		p.m.wg.Add(1)
		go func() { defer p.m.wg.Done(); p.finish(st) }()
		return
	}
	rp.closeFiles()
	rp.fp.remove()
}

// take makes p the process's owner, unless it already ended.
func (rp *readyProc) take(p *Proc) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.ended != nil {
		return false
	}
	rp.owner = p
	rp.warm.Stop()
	return true
}

// hasEnded reports whether the process ended before it was taken.
func (rp *readyProc) hasEnded() bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.ended != nil
}

// discard kills a process that was never taken; exited cleans up.
func (rp *readyProc) discard() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.warm.Stop()
	if rp.owner == nil && rp.ended == nil {
		// Not reaped yet: the PID is still this process's.
		unix.Kill(rp.fp.pid, unix.SIGKILL)
	}
}

func (rp *readyProc) closeFiles() {
	for _, f := range append(rp.out[:], append(rp.fp.holds[:], rp.fp.cmd, rp.fp.status)...) {
		if f != nil {
			f.Close()
		}
	}
}

// refillReady forks the next ready process in the background, unless one
// is ready or being forked, or the server is closed.
func (m *Manager) refillReady(fs *forkServer) {
	fs.readyMu.Lock()
	// One that ended before it was taken (exited cleaned it up) is
	// replaced, or the next process would pay its fork on its own time.
	if (fs.ready != nil && !fs.ready.hasEnded()) || fs.readying != nil || fs.closed {
		fs.readyMu.Unlock()
		return
	}
	done := make(chan struct{})
	fs.readying = done
	m.wg.Add(1)
	fs.readyMu.Unlock()
	go func() {
		defer m.wg.Done()
		rp, err := m.forkReady(fs)
		fs.readyMu.Lock()
		fs.readying = nil
		keep := err == nil && !fs.closed
		if keep {
			fs.ready = rp
		}
		fs.readyMu.Unlock()
		close(done)
		if err == nil && !keep {
			rp.discard()
		}
	}()
}

// takeReady returns the ready process for p, waiting for one being
// forked, or forking one now when there is none. It returns nil when
// the server could not fork one.
func (m *Manager) takeReady(fs *forkServer, p *Proc) *readyProc {
	for range 2 {
		fs.readyMu.Lock()
		rp, waiting := fs.ready, fs.readying
		fs.ready = nil
		closed := fs.closed
		fs.readyMu.Unlock()
		if closed {
			return nil
		}
		if rp == nil && waiting != nil {
			select {
			case <-waiting:
			case <-time.After(m.cfg.StartTimeout):
				return nil
			}
			continue
		}
		if rp == nil {
			var err error
			if rp, err = m.forkReady(fs); err != nil {
				return nil
			}
		}
		if rp.take(p) {
			return rp
		}
	}
	return nil
}

// A forkedProc is what the agent keeps of a process a fork server forked
// while it starts: its FIFOs, until it ends.
type forkedProc struct {
	base   string   // FIFO path prefix
	made   []string // FIFOs to remove at the end
	pid    int
	holds  [2]*os.File // write ends of stdout's and stderr's FIFOs, see start
	cmd    *os.File    // the .cmd FIFO, opened read-write (see readyProc)
	expiry time.Time   // of the hand-over wait
	// statusPath is the FIFO the process reports its status to (PID.st,
	// see reportScript); status is it opened read-write, at the take.
	statusPath string
	status     *os.File
	// devNull: the process's stdin is /dev/null (CloseStdin), and there
	// is no .in FIFO.
	devNull bool

	handover sync.Once
	// stdinDone is closed when the agent's open of the stdin FIFO
	// returned (the process opened its end, or finish unblocked it).
	stdinDone chan struct{}
	// Guarded by Proc.mu.
	stdinOpened, closeStdinOnOpen bool
}

func (fp *forkedProc) mkfifo(name string, o StartOptions) (string, error) {
	path := fp.base + "." + name
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return "", fmt.Errorf("creating a FIFO: %w", err)
	}
	fp.made = append(fp.made, path)
	if o.Account != nil {
		if err := os.Lchown(path, o.Account.UID, o.Account.GID); err != nil {
			return "", fmt.Errorf("giving a FIFO to the user: %w", err)
		}
	}
	return path, nil
}

// openFIFO opens a FIFO the agent made, non-blocking: a read end never
// waits, a write end fails unless there is a reader.
func openFIFO(path string, flag int) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("opening a FIFO: %w", err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// errNotForked: the fork server did not fork the command; it can start
// another way.
var errNotForked = errors.New("the fork server did not take the command")

// startFromForkServer runs o's command in the process the fork server fs
// forked ahead (readyProc). It returns errNotForked when the command
// certainly never ran (the caller starts it another way).
//
// Only a write to the process's .cmd FIFO is on the caller's time. The
// agent holds a write end of stdout's and stderr's FIFOs until the
// process ends, so that the pumps never see an end of file before the
// process opened its own; and it opens the stdin FIFO's write end in the
// background, an open that returns when the process opens the read end
// (a FIFO's two ends meet).
func (p *Proc) startFromForkServer(o StartOptions, fs *forkServer) error {
	m := p.m
	rp := m.takeReady(fs, p)
	if rp == nil {
		return errNotForked
	}
	fp := rp.fp
	inPath := os.DevNull
	if o.CloseStdin {
		fp.devNull, fp.stdinOpened = true, true
		close(fp.stdinDone)
	} else {
		var err error
		if inPath, err = fp.mkfifo("in", o); err != nil {
			// The process is p's now: it ends as an error.
			p.failForked(rp, err)
			return nil
		}
	}
	if fp.statusPath != "" {
		// Open before the command comes: a report written while no one
		// held the FIFO open would be dropped with it.
		fp.status, _ = openFIFO(fp.statusPath, unix.O_RDWR)
	}
	// It fits the FIFO's buffer (maxLoginCommand): the write never waits
	// for the process. The agent keeps its end open until the process
	// ends: a FIFO that no one holds open drops what it holds, and the
	// process may not have opened it yet.
	fp.cmd.SetWriteDeadline(time.Now().Add(m.cfg.StartTimeout))
	_, err := fp.cmd.WriteString(inPath + "\x00" + hostnamePrelude(fs.key, keyOf(o)) + o.Command + "\x00")
	if err != nil {
		p.failForked(rp, err)
		return nil
	}
	p.mu.Lock()
	p.forked = fp
	p.mu.Unlock()
	proc, _ := os.FindProcess(fp.pid)
	p.run(o, proc, fp.pid, nil, rp.out, nil)
	if fp.status != nil {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); p.awaitReport(fp) }()
	}
	if fp.devNull {
		return nil
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f, err := os.OpenFile(inPath, os.O_WRONLY|syscall.O_CLOEXEC, 0)
		p.mu.Lock()
		fp.stdinOpened = true
		switch {
		case err != nil:
		case fp.closeStdinOnOpen:
			f.Close()
		default:
			p.stdin = f
		}
		p.mu.Unlock()
		close(fp.stdinDone)
	}()
	return nil
}

// awaitReport ends the process's record when the process reports its
// status (reportScript): "\0STATUS\n", nothing before it (an EXIT trap's
// text would be: the trap runs after the report). Anything else is read
// to its end and ignored, so that the process never waits on a full
// FIFO: the reaper then ends the record. It returns when the record ended
// (release closes the FIFO).
//
// The reaper remains the process's one waiter; its status, which comes
// later, finds the record ended (finish runs once). A process of the user
// could write a status for the process (the FIFO is the user's): that
// only ends the record early, as a command that exits while a child it
// started runs on.
func (p *Proc) awaitReport(fp *forkedProc) {
	var buf [64]byte
	n := 0
	for {
		k, err := fp.status.Read(buf[n:])
		n += k
		if code, ok := parseReport(buf[:n]); ok {
			p.m.reports.Add(1)
			p.finish(reaper.Status{PID: fp.pid, WS: unix.WaitStatus(code << 8)})
			return
		}
		if err != nil {
			return
		}
		if buf[0] != 0 || bytes.IndexByte(buf[:n], '\n') >= 0 || n == len(buf) {
			break
		}
	}
	for {
		if _, err := fp.status.Read(buf[:]); err != nil {
			return
		}
	}
}

// parseReport parses "\0STATUS\n".
func parseReport(b []byte) (int, bool) {
	if len(b) < 3 || len(b) > 5 || b[0] != 0 || b[len(b)-1] != '\n' {
		return 0, false
	}
	code, err := strconv.Atoi(string(b[1 : len(b)-1]))
	if err != nil || code < 0 || code > 255 || strconv.Itoa(code) != string(b[1:len(b)-1]) {
		return 0, false
	}
	return code, true
}

// failForked records that the taken process rp could not be given its
// command: it is killed, and p ends as an error once it is reaped.
func (p *Proc) failForked(rp *readyProc, err error) {
	fp := rp.fp
	p.mu.Lock()
	p.forked = fp
	p.info.Status, p.info.Reason = Error, "starting the process: "+err.Error()
	if !fp.stdinOpened {
		fp.stdinOpened = true
		close(fp.stdinDone)
	}
	p.mu.Unlock()
	unix.Kill(fp.pid, unix.SIGKILL)
	proc, _ := os.FindProcess(fp.pid)
	p.run(StartOptions{}, proc, fp.pid, nil, rp.out, nil)
}

// handOver waits (once, boundedly) until the process is the agent's:
// its parent, the fork server's subshell, exits right after the fork,
// and a signal that killed the process before that would leave its
// status to the subshell.
func (fp *forkedProc) handOver() {
	fp.handover.Do(func() { waitReparented(fp.pid, fp.expiry) })
}

// waitStdin waits until the process opened its stdin, or ctx is done. A
// bare close (closeStdin at start) is recorded for the open instead, and
// then reported done.
func (p *Proc) waitStdin(ctx context.Context, fp *forkedProc, bareClose bool) (closed bool, err error) {
	p.mu.Lock()
	if !fp.stdinOpened && bareClose {
		fp.closeStdinOnOpen = true
		p.mu.Unlock()
		return true, nil
	}
	p.mu.Unlock()
	select {
	case <-fp.stdinDone:
		return false, nil
	case <-ctx.Done():
		return false, ErrTimeout
	}
}

// release ends what the agent holds for the process once it ended: the
// write ends it kept (the pumps then end with the process's last
// writer) and an open of stdin the process never met. Its FIFOs are
// removed (fp.remove) once the process's end is told: nothing opens
// them after the process ended, and their unlinks need not delay its
// exit event.
func (p *Proc) release(fp *forkedProc) {
	for _, f := range append(fp.holds[:], fp.cmd, fp.status) {
		if f != nil {
			f.Close()
		}
	}
	p.mu.Lock()
	opened := fp.stdinOpened
	fp.closeStdinOnOpen = true
	p.mu.Unlock()
	if !opened {
		if r, err := openFIFO(fp.base+".in", unix.O_RDONLY); err == nil {
			select {
			case <-fp.stdinDone:
			case <-time.After(5 * time.Second):
			}
			r.Close()
		}
	}
}

func (fp *forkedProc) remove() {
	for _, path := range fp.made {
		os.Remove(path)
	}
	fp.made = nil
}

// dropForkServer forgets and kills a fork server that failed a request.
func (m *Manager) dropForkServer(fs *forkServer) {
	m.spareMu.Lock()
	if m.fork == fs {
		m.fork = nil
	}
	m.spareMu.Unlock()
	fs.discard()
}

// waitReparented waits until pid's parent is the agent, it is gone, or
// the deadline passed.
func waitReparented(pid int, deadline time.Time) {
	self := strconv.Itoa(os.Getpid())
	stat := "/proc/" + strconv.Itoa(pid) + "/stat"
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return
		}
		// pid (comm) state ppid ...: comm may hold anything but ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 || f[1] == self || time.Now().After(deadline) {
			return
		}
		time.Sleep(wait)
	}
}

// lineReader reads lines from a pipe, without reading past what was
// written (the writer writes one line at a time).
type lineReader struct {
	f   *os.File
	buf []byte
}

func (r *lineReader) next() (string, error) {
	var b [64]byte
	for {
		if i := bytes.IndexByte(r.buf, '\n'); i >= 0 {
			line := string(r.buf[:i])
			r.buf = r.buf[i+1:]
			return line, nil
		}
		if len(r.buf) > 4096 {
			return "", errors.New("an answer too long")
		}
		n, err := r.f.Read(b[:])
		r.buf = append(r.buf, b[:n]...)
		if err != nil && n == 0 {
			return "", err
		}
	}
}
