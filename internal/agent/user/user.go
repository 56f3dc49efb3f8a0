// Package user finds the accounts of the sandbox's /etc/passwd and creates
// missing ones on demand, so that sessions and processes can run as a
// non-root user. It edits passwd, group and shadow (and gshadow when
// present) of the sandbox only: the host image synthesises them, and the
// sandbox's disk keeps the edits.
//
// It never runs programs (useradd may not exist in an image) and never
// trusts a name it has not validated: names end up in files other tools
// parse by colons and newlines.
package user

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Account is one user of the sandbox.
type Account struct {
	Name string
	UID  int
	GID  int
	Home string
}

// ErrInvalid: the name is not a valid user name.
var ErrInvalid = errors.New("invalid user name")

// ValidName reports whether name may name a user: [a-z_][a-z0-9_-]*, at
// most 32 characters (the portable subset useradd accepts).
func ValidName(name string) bool {
	if name == "" || len(name) > 32 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case (c >= '0' && c <= '9' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// DB is the account database under one /etc and /home.
type DB struct {
	// Etc is the directory holding passwd, group, shadow; default /etc.
	Etc string
	// HomeRoot is where new home directories go; default /home.
	HomeRoot string

	mu sync.Mutex // serialises edits of the files; guards the cache
	// The accounts of passwd as last read (the first line of each name),
	// and what stat said of the file just before: a lookup of an existing
	// account by name (every process start as a user) reads and parses
	// the file again only when it changed.
	known   map[string]Account
	knownAt passwdStamp
}

// passwdStamp is what stat says of passwd; ok is false when it cannot be
// trusted to change with the file.
type passwdStamp struct {
	ok                 bool
	dev, ino           uint64
	size, mtime, ctime int64
}

// stampSlack is how old a change must be for a stamp to be trusted: the
// kernel stamps times from a coarse clock, so a file rewritten in place
// twice within one tick, at the same size, keeps its stamp.
const stampSlack = time.Second

func stampOf(path string) passwdStamp {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return passwdStamp{}
	}
	changed := time.Unix(0, max(st.Mtim.Nano(), st.Ctim.Nano()))
	return passwdStamp{ok: time.Since(changed) > stampSlack, dev: st.Dev, ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// Ensure returns the account name, creating it (with a group of the same
// name and a home directory) if it does not exist.
func (db *DB) Ensure(name string) (Account, error) {
	if !ValidName(name) {
		return Account{}, fmt.Errorf("%w: %q", ErrInvalid, name)
	}
	return db.ensure(name, -1)
}

// EnsureUID returns the account whose user ID is uid (the first in
// passwd), creating one named "u<uid>" with that ID when passwd has none:
// an image's numeric USER runs as that ID, as Docker runs it, while
// sessions, which run as users by name, get a name for it.
func (db *DB) EnsureUID(uid int) (Account, error) {
	if uid < 1 || uid > 1<<31-2 {
		return Account{}, fmt.Errorf("%w: user ID %d", ErrInvalid, uid)
	}
	name := fmt.Sprintf("u%d", uid)
	acct, err := db.ensure(name, uid)
	if err == nil && acct.UID != uid {
		return Account{}, fmt.Errorf("%w: %s exists with user ID %d, not %d", ErrInvalid, name, acct.UID, uid)
	}
	return acct, err
}

// ensure finds name, or the first account with user ID want when want is
// not negative, and creates name otherwise: with user ID want, or the
// lowest free one from 1000 when want is negative.
func (db *DB) ensure(name string, want int) (Account, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	etc, homeRoot := db.Etc, db.HomeRoot
	if etc == "" {
		etc = "/etc"
	}
	if homeRoot == "" {
		homeRoot = "/home"
	}
	passwdPath := filepath.Join(etc, "passwd")
	stamp := stampOf(passwdPath)
	if want < 0 && stamp.ok && stamp == db.knownAt {
		if acct, ok := db.known[name]; ok {
			return acct, nil
		}
	}
	passwd, err := readLines(passwdPath)
	if err != nil {
		return Account{}, err
	}
	db.known, db.knownAt = map[string]Account{}, stamp
	usedUID := map[int]bool{}
	var found *Account
	for _, line := range passwd {
		f := strings.Split(line, ":")
		if len(f) < 7 {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		acct := Account{Name: f[0], UID: uid, GID: gid, Home: f[5]}
		if _, seen := db.known[acct.Name]; !seen {
			db.known[acct.Name] = acct
		}
		if found == nil && (f[0] == name || (want >= 0 && uid == want)) {
			found = &acct
		}
		usedUID[uid] = true
	}
	if found != nil {
		return *found, nil
	}
	group, err := readLines(filepath.Join(etc, "group"))
	if err != nil {
		return Account{}, err
	}
	usedGID := map[int]bool{}
	gid := -1
	for _, line := range group {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		g, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		usedGID[g] = true
		if f[0] == name {
			gid = g
		}
	}
	uid := want
	if uid < 0 {
		uid = 1000
		for usedUID[uid] || (gid < 0 && usedGID[uid]) {
			uid++
			if uid > 59999 {
				return Account{}, errors.New("no free user ID")
			}
		}
	} else if gid < 0 && usedGID[uid] {
		gid = uid // a group with the ID exists: the new user joins it
	}
	acct := Account{Name: name, UID: uid, GID: gid, Home: filepath.Join(homeRoot, name)}
	if gid < 0 {
		acct.GID = uid
		if err := appendLine(filepath.Join(etc, "group"), fmt.Sprintf("%s:x:%d:", name, uid), 0o644); err != nil {
			return Account{}, err
		}
		if _, err := os.Stat(filepath.Join(etc, "gshadow")); err == nil {
			if err := appendLine(filepath.Join(etc, "gshadow"), name+":!::", 0o640); err != nil {
				return Account{}, err
			}
		}
	}
	days := time.Now().Unix() / 86400
	if err := appendLine(filepath.Join(etc, "shadow"), fmt.Sprintf("%s:!:%d:0:99999:7:::", name, days), 0o640); err != nil {
		return Account{}, err
	}
	shell := "/bin/sh"
	if _, err := os.Stat("/bin/bash"); err == nil {
		shell = "/bin/bash"
	}
	if err := appendLine(filepath.Join(etc, "passwd"), fmt.Sprintf("%s:x:%d:%d::%s:%s", name, acct.UID, acct.GID, acct.Home, shell), 0o644); err != nil {
		return Account{}, err
	}
	if err := os.MkdirAll(homeRoot, 0o755); err != nil {
		return Account{}, fmt.Errorf("creating %s: %w", homeRoot, err)
	}
	if err := os.Mkdir(acct.Home, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		return Account{}, fmt.Errorf("creating home of %s: %w", name, err)
	}
	// Lchown: never follow a link someone planted at the home's path.
	if err := os.Lchown(acct.Home, acct.UID, acct.GID); err != nil {
		return Account{}, fmt.Errorf("giving %s its home: %w", name, err)
	}
	return acct, nil
}

// LoginShell is what bash sets $SHELL to at its start when its
// environment has none (not exported): the shell of the first account in
// etc/passwd (etc "" is /etc) whose user ID is uid, or /bin/sh when that
// is empty or there is none. bash finds it through getpwuid, which on
// every start asks nscd twice and reads nsswitch.conf and passwd, 17
// system calls in all (costly in gVisor); a shell given $SHELL by its
// starter makes none of them.
func LoginShell(etc string, uid int) string {
	if etc == "" {
		etc = "/etc"
	}
	// Read as bash's getpwuid reads it, a line at a time up to the
	// account: passwd is the sandbox's, as large as its root makes it.
	// open(2) and os.NewFile, not os.Open, which tries the runtime's
	// poller on the file and puts it back: five system calls more on the
	// way of a cold start.
	fd, err := syscall.Open(filepath.Join(etc, "passwd"), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "/bin/sh"
	}
	f := os.NewFile(uintptr(fd), "passwd")
	defer f.Close()
	id := strconv.Itoa(uid)
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if fields := strings.Split(sc.Text(), ":"); len(fields) >= 7 && fields[2] == id {
			if fields[6] == "" {
				break
			}
			return fields[6]
		}
	}
	return "/bin/sh"
}

func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	// A buffer as small as the file needs (the scanner's default start,
	// grown as lines require): a 64 KiB one up front, at every process
	// start, was a large allocation whose pages were often faulted in anew.
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// appendLine adds line to the file at path, creating it with mode if it
// does not exist. The new content is written to a temporary file and
// renamed over the old one, so readers never see half a file; where the
// file is a mount point (rename fails), it is rewritten in place.
func appendLine(path, line string, mode os.FileMode) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	data := append(old, line+"\n"...)
	tmp := path + ".sandboxd-tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	os.Chmod(tmp, mode)
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		if err := os.WriteFile(path, data, mode); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}
