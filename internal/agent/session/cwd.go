package session

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoCwd is returned by CurrentDir when the shell's working directory
// has been deleted.
var ErrNoCwd = errors.New("the session's working directory no longer exists")

// CurrentDir returns the session's working directory as its shell sees it
// now (after any cd), or, when no shell runs, where the next one will start
// (Cwd). File operations resolve relative paths against it.
//
// It reads /proc/<shell>/cwd, then checks through the shell's pidfd that
// the shell is still alive, so the answer cannot come from an unrelated
// process that was given the PID after the shell died.
func (s *Session) CurrentDir() (string, error) {
	s.shMu.Lock()
	sh := s.sh
	s.shMu.Unlock()
	if sh != nil && !sh.exited.Load() {
		link := "/proc/" + strconv.Itoa(sh.pid) + "/cwd"
		dir, err := os.Readlink(link)
		if errors.Is(err, fs.ErrPermission) && s.acct != nil {
			dir, err = readlinkAs(link, s.acct.UID, s.acct.GID)
		}
		if errors.Is(err, fs.ErrPermission) && s.acct != nil {
			dir, err = readlinkAsReal(link, s.acct.UID, s.acct.GID)
		}
		if err == nil && sh.signal(0) {
			if strings.HasSuffix(dir, " (deleted)") {
				return "", ErrNoCwd
			}
			return dir, nil
		}
	}
	return s.Cwd(), nil
}

// readlinkAs reads the symlink path with the file system identity uid:gid.
//
// Why: /proc/<pid>/cwd of another user's process needs ptrace-read access,
// which a sandbox's root (no CAP_SYS_PTRACE) has only when its file system
// identity matches the process's. setfsuid and setfsgid change that
// identity for the calling thread alone, so this runs on a thread locked
// for the purpose, and gives the thread back only once the identity is
// root's again; a thread that could not be restored ends with its
// goroutine instead of serving other goroutines as that user.
func readlinkAs(path string, uid, gid int) (string, error) {
	return onOwnThread(func() (string, bool, error) {
		prevGID, _ := unix.SetfsgidRetGid(gid)
		prevUID, _ := unix.SetfsuidRetUid(uid)
		dir, err := os.Readlink(path)
		unix.SetfsuidRetUid(prevUID)
		unix.SetfsgidRetGid(prevGID)
		// -1 changes nothing and answers the current identity.
		curUID, _ := unix.SetfsuidRetUid(-1)
		curGID, _ := unix.SetfsgidRetGid(-1)
		return dir, curUID == prevUID && curGID == prevGID, err
	})
}

// readlinkAsReal reads the symlink path with the real and effective IDs
// uid:gid, keeping root as the saved IDs so that the thread can come back.
//
// Why: gVisor checks ptrace-read access with the caller's real IDs (Linux's
// PTRACE_MODE_REALCREDS; it does not implement PTRACE_MODE_FSCREDS), so the
// file system identity of readlinkAs is not enough there. The raw
// setresuid/setresgid system calls change the calling thread alone (Go's
// syscall.Setresuid would change every thread). While the thread is the
// user, the user's processes may signal it (a kill of the agent, which root
// user code can do anyway); they cannot ptrace it: its saved ID is root's
// and the agent is not dumpable. The thread is given back only once all
// its IDs are root's again; otherwise it ends with its goroutine.
func readlinkAsReal(path string, uid, gid int) (string, error) {
	return onOwnThread(func() (string, bool, error) {
		// Group first: changing it needs CAP_SETGID, which the thread
		// loses with a non-root effective UID.
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), 0); e != 0 {
			return "", true, e
		}
		var dir string
		var err error = fs.ErrPermission
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), 0); e == 0 {
			dir, err = os.Readlink(path)
		}
		_, _, e1 := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0)
		_, _, e2 := unix.RawSyscall(unix.SYS_SETRESGID, 0, 0, 0)
		ruid, euid, suid := unix.Getresuid()
		rgid, egid, sgid := unix.Getresgid()
		restored := e1 == 0 && e2 == 0 && ruid == 0 && euid == 0 && suid == 0 && rgid == 0 && egid == 0 && sgid == 0
		return dir, restored, err
	})
}

// onOwnThread runs fn on a goroutine locked to its thread, for fn to change
// that thread's identity. The thread serves other goroutines again only if
// fn reports its identity restored; otherwise it ends with the goroutine.
func onOwnThread(fn func() (dir string, restored bool, err error)) (string, error) {
	type result struct {
		dir string
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		dir, restored, err := fn()
		if restored {
			runtime.UnlockOSThread()
		}
		done <- result{dir, err}
	}()
	r := <-done
	return r.dir, r.err
}
