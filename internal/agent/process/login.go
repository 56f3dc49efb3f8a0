package process

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

// A login spare is a login shell started ahead of the next login process
// (StartOptions.Login: `bash -l -c CMD`, as E2B's envd runs every
// command) where the fork server (forkserver.go) cannot serve: when the
// login profile prints. It is the spawn wrapper's exec of `bash -l -c LOADER` as the
// user, in the user cgroup, in its own session, with the directory and
// environment of the last login process, and with the process's pipes:
// the login profile (/etc/profile, profile.d, ~/.profile ...) has run
// when the command comes, and the loader reads the command from a pipe
// and evaluates it in that same shell. A command that is a builtin (true)
// then costs no exec at all, and any other command one fork and exec
// instead of the wrapper's, bash's and the profile's execs.
//
// What the command sees is what `bash -l -c CMD` started then would show
// it: the same shell, the profile's variables, functions and options, the
// same PID as its process, pipes and session; profile output comes first
// on its stdout. The spare is used only for a process of the same user,
// directory and environment (the profile ran with them), and only if none
// of the profile's files changed since it started (loginFiles, compared
// by stat); otherwise it is killed and the process starts the ordinary
// way. The next spare is started when a login process ends, so that it
// sources the profile after what that command changed. Differences that
// remain: /proc/PID/cmdline shows the loader,
// and a syntax error is reported by eval rather than by -c.
//
// Like every process of the user, it can be traced or have its pipes
// opened by the user's other processes: it runs as that user and holds
// nothing the user could not reach anyway (the generic spare, which waits
// as root, is not dumpable for that reason).
type loginSpare struct {
	sp     *spare
	key    loginKey
	stamps []fileStamp
}

// loginKey is what the profile ran with.
type loginKey struct {
	uid, gid int // -1: root without an account
	cwd      string
	env      []string
}

func keyOf(o StartOptions) loginKey {
	k := loginKey{uid: -1, gid: -1, cwd: o.Cwd, env: o.Env}
	if o.Account != nil {
		k.uid, k.gid = o.Account.UID, o.Account.GID
	}
	return k
}

func (k loginKey) equal(o loginKey) bool {
	return k.uid == o.uid && k.gid == o.gid && k.cwd == o.cwd && slices.Equal(k.env, o.env)
}

// servesLike reports whether a fork server whose profile ran with k can
// serve a process of o: the same key, but for the value of HOSTNAME when
// both have one, which the forked process exports (see hostnamePrelude).
// A warm pool's sandbox gets its name, and HOSTNAME, when it is taken,
// after its fork server for the E2B layer's default user started
// (PrepareLogin); no login profile of the supported images reads it.
func (k loginKey) servesLike(o loginKey) bool {
	if k.uid != o.uid || k.gid != o.gid || k.cwd != o.cwd || len(k.env) != len(o.env) {
		return false
	}
	for i, kv := range k.env {
		if kv != o.env[i] && !(strings.HasPrefix(kv, hostnameEq) && strings.HasPrefix(o.env[i], hostnameEq)) {
			return false
		}
	}
	return true
}

const hostnameEq = "HOSTNAME="

// hostnamePrelude is what a process forked by a server whose profile ran
// with k runs before its command so that it sees o's HOSTNAME: nothing
// when they agree. It ends with "; ", so that the command's line numbers
// stay as they are.
func hostnamePrelude(k, o loginKey) string {
	v, ok := spawn.LookupEnv(o.env, "HOSTNAME")
	if was, had := spawn.LookupEnv(k.env, "HOSTNAME"); !ok || had && was == v {
		return ""
	}
	return "export HOSTNAME=" + shellQuote(v) + "; "
}

// loginLoader is the script the login shell runs once its profile ran:
// read the command from fd 4 to its end, close it, and evaluate the
// command in this shell with no trace of the loader's variable.
const loginLoader = `IFS= read -r -d '' __sandboxd_cmd <&4; exec 4<&-; ` + execStringScript + `; eval "unset __sandboxd_cmd; $__sandboxd_cmd"`

// execStringScript sets BASH_EXECUTION_STRING to the command read into
// __sandboxd_cmd, as `bash -c COMMAND` sets it, where it would otherwise
// show the loader or the fork server's script. The variable keeps its
// attributes: a profile that leaves allexport on (set -a) does not export
// it, as bash, which sets it before the profile runs, does not.
const execStringScript = `case $- in *a*) \builtin set +a; BASH_EXECUTION_STRING=$__sandboxd_cmd; \builtin set -a;; *) BASH_EXECUTION_STRING=$__sandboxd_cmd;; esac`

// maxLoginCommand bounds a command handed to a login spare: it must fit
// the request pipe's buffer, so that handing it over never waits for the
// shell (which reads it byte by byte). Longer commands start the ordinary
// way.
const maxLoginCommand = 32 << 10

// loginArgs is the argv after the shell for a process of o.
func loginArgs(o StartOptions) []string {
	if o.Login {
		return []string{"-l", "-c", o.Command}
	}
	return []string{"-c", o.Command}
}

// fileStamp is what stat said of one file a login shell reads.
type fileStamp struct {
	path               string
	ok                 bool
	dev, ino           uint64
	size, mtime, ctime int64
}

func stampOf(path string) fileStamp {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileStamp{path: path}
	}
	return fileStamp{path: path, ok: true, dev: st.Dev, ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// loginFiles are the files bash reads as a login shell for a user whose
// home is home (and which Debian's profiles source), the profile.d
// directory and its entries, and the directory itself by identity.
func loginFiles(home, cwd string) []fileStamp {
	paths := []string{"/etc/profile", "/etc/bash.bashrc", "/etc/profile.d"}
	if home != "" {
		for _, f := range []string{".bash_profile", ".bash_login", ".profile", ".bashrc"} {
			paths = append(paths, filepath.Join(home, f))
		}
	}
	if entries, err := os.ReadDir("/etc/profile.d"); err == nil {
		for _, e := range entries {
			paths = append(paths, filepath.Join("/etc/profile.d", e.Name()))
		}
	}
	stamps := make([]fileStamp, 0, len(paths)+1)
	for _, p := range paths {
		stamps = append(stamps, stampOf(p))
	}
	// The directory by identity only: commands change what is in it.
	d := stampOf(cwd)
	d.size, d.mtime, d.ctime = 0, 0, 0
	return append(stamps, d)
}

func loginFilesOf(o StartOptions) []fileStamp {
	home, _ := spawn.LookupEnv(o.Env, "HOME")
	return loginFiles(home, o.Cwd)
}

// startLoginSpare starts a login spare for processes like o, in the
// background, replacing the one there is; unless one is starting or the
// manager is closed.
func (m *Manager) startLoginSpare(o StartOptions) {
	m.spareMu.Lock()
	if m.loginStarting != nil || m.spareClosed {
		m.spareMu.Unlock()
		return
	}
	old := m.login
	m.login = nil
	started := make(chan struct{})
	m.loginStarting = started
	m.wg.Add(1) // under spareMu, as in startSpare
	m.spareMu.Unlock()
	if old != nil {
		old.discard()
	}
	go func() {
		defer m.wg.Done()
		defer close(started)
		ls := m.newLoginSpare(o)
		m.spareMu.Lock()
		m.loginStarting = nil
		keep := ls != nil && !m.spareClosed && !ls.sp.dead
		if keep {
			m.login = ls
		}
		m.spareMu.Unlock()
		if ls != nil && !keep {
			ls.discard()
		}
	}()
}

// newLoginSpare forks a login spare for processes like o, or returns nil
// when it cannot.
func (m *Manager) newLoginSpare(o StartOptions) *loginSpare {
	// Stamped before the shell can read them: a change after this is seen
	// at the claim.
	ls := &loginSpare{sp: &spare{}, key: keyOf(o), stamps: loginFilesOf(o)}
	so := spawn.Options{CgroupRoot: m.cfg.CgroupRoot, ErrFD: spareErrFD, CloseErrFD: true}
	if o.Account != nil {
		so.UID, so.GID = &o.Account.UID, &o.Account.GID
	}
	argv := spawn.Argv(m.cfg.Self, so, m.cfg.Shell, "-l", "-c", loginLoader)
	if !m.startSpareProcess(ls.sp, argv, o.Cwd, o.Env, func(st reaper.Status) { m.spareExited(ls.sp, st) }) {
		return nil
	}
	return ls
}

// discard kills an unclaimed login spare and closes its files.
func (ls *loginSpare) discard() {
	ls.sp.proc.Signal(syscall.SIGKILL)
	ls.sp.closeFiles()
}

// claimLogin gives the login spare to p when it was started for a process
// like o and the profile's files did not change since; otherwise it kills
// it (the next login process starts another) and returns nil.
func (m *Manager) claimLogin(p *Proc, o StartOptions) *spare {
	if len(o.Command) > maxLoginCommand {
		return nil
	}
	m.spareMu.Lock()
	ls, starting := m.login, m.loginStarting
	m.login = nil
	m.spareMu.Unlock()
	if ls == nil && starting != nil {
		// One is being forked (the last login process just ended): waiting
		// for the fork costs less than a start of our own, which would
		// also compete with it for the CPU.
		select {
		case <-starting:
		case <-time.After(m.cfg.StartTimeout):
		}
		m.spareMu.Lock()
		ls, m.login = m.login, nil
		m.spareMu.Unlock()
	}
	if ls == nil {
		return nil
	}
	if !ls.key.equal(keyOf(o)) || !slices.Equal(ls.stamps, loginFilesOf(o)) {
		ls.discard()
		return nil
	}
	m.spareMu.Lock()
	dead := ls.sp.dead
	if !dead {
		ls.sp.owner = p
	}
	m.spareMu.Unlock()
	if dead {
		ls.sp.closeFiles()
		return nil
	}
	return ls.sp
}

// startFromLogin hands o's command to the claimed login spare sp; the rest
// is as for a process forked for o.
func (p *Proc) startFromLogin(o StartOptions, sp *spare) {
	sp.req.SetWriteDeadline(time.Now().Add(p.m.cfg.StartTimeout))
	_, err := sp.req.WriteString(o.Command)
	sp.req.Close()
	if err != nil {
		// The shell died before the command came (the pipe holds it
		// otherwise): what is left of it is an error, as a spare's.
		sp.proc.Signal(syscall.SIGKILL)
		p.mu.Lock()
		p.info.Status, p.info.Reason = Error, "starting the process: the login shell did not take it"
		p.mu.Unlock()
	}
	p.run(o, sp.proc, sp.pid, sp.stdin, [2]*os.File{sp.stdout, sp.stderr}, sp.errR)
}
