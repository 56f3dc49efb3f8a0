package session

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The shell code the agent generates is POSIX sh, so that it runs in bash
// and in the /bin/sh fallback alike. It is defensive about the state user
// commands leave behind: every expansion is quoted (a user may set IFS),
// `command` skips user functions named cd or printf, ${VAR+x} and ${VAR-}
// are safe under `set -u`, and `command .` keeps a syntax error in a
// command from exiting a POSIX-mode shell.
//
// The line is read by the shell one byte at a time (a shell never reads
// ahead on a pipe), so it is kept short: the command itself, and anything
// large (per-call environment), lives in files the line sources, and the
// sourcing itself is text the shell was given once (dispatchInit).

// Names of the per-command files in the session directory.
const (
	cmdFile     = "cmd" // the command text
	wrapperFile = "w"   // per-call env and cwd, then sources cmd
	stdinFile   = "in"  // the command's stdin
	// The command's output FIFOs. Each command gets new ones at the same
	// paths: a background child of an earlier command keeps the FIFO it
	// was given, which is unlinked by then.
	stdoutFIFO = "o"
	stderrFIFO = "e"
)

// quote makes s one shell word.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dispatchLine is the line that runs command n: evaluate the readonly
// command (see dispatchInit) that sources the command (or its wrapper)
// with stdin and outputs redirected and the status pipe closed, then
// reports the exit status on the status pipe. eval joins its arguments,
// so the n after the variable becomes the status line's last word: the
// number is literal, user code cannot change it, and no assignment is
// needed to carry it.
func (s *Session) dispatchLine(n uint64, wrapped, stdin bool) []byte {
	b := make([]byte, 0, 32)
	b = append(b, `command eval "$`...)
	b = append(b, dispatchVar(wrapped, stdin)...)
	b = append(b, `" `...)
	b = strconv.AppendUint(b, n, 10)
	return append(b, '\n')
}

// dispatchVar names the readonly variable that holds the command the
// dispatch line evaluates.
func dispatchVar(wrapped, stdin bool) string {
	v := "__sbx_c"
	if wrapped {
		v = "__sbx_w"
	}
	if stdin {
		v += "i"
	}
	return v
}

// dispatchInit defines, once per shell, the readonly variables the
// dispatch lines evaluate. Their text is the long part of a dispatch
// (the session directory's paths, four times, and the status report):
// sent once here instead of with every command, it keeps the line that
// the shell reads byte by byte short. Each read is a system call, and on
// gVisor a system call costs tens of microseconds (hundreds on a loaded
// host): a 160-byte line cost about 15 ms of each command there, and the
// 28-byte line is less than half of the shell's system calls per command.
// readonly: user code in the shell cannot change or unset them. eval keeps
// the command at the top level (a function would make the user's declare
// local and hide the shell's positional parameters). The status report is
// "STATUS N", N appended by the dispatch line.
func dispatchInit(dir string) string {
	var b strings.Builder
	b.WriteString("readonly")
	for _, wrapped := range []bool{false, true} {
		for _, stdin := range []bool{false, true} {
			script, in := cmdFile, "/dev/null"
			if wrapped {
				script = wrapperFile
			}
			if stdin {
				in = dir + "/" + stdinFile
			}
			text := "command . " + quote(dir+"/"+script) + " <" + quote(in) +
				" >" + quote(dir+"/"+stdoutFIFO) + " 2>" + quote(dir+"/"+stderrFIFO) + " 3>&-; " +
				`command printf >&3 '%s %s\n' "$?"`
			b.WriteString(" " + dispatchVar(wrapped, stdin) + "=" + quote(text))
		}
	}
	b.WriteString("; ")
	return b.String()
}

// wrapperScript sets the per-call environment and working directory, runs
// the command, and puts back what it changed: variables that were unset
// are unset again, others get their old value; the old working directory
// (and OLDPWD) is restored even if the command changed it. Everything else
// the command did persists. The wrapper returns the command's status.
//
// A variable that was a plain (unexported) shell variable before stays
// exported afterwards: POSIX sh cannot tell whether a variable is exported
// without forking.
//
// persist comes first: changes of the session's own environment (see
// pendingEnv), which stay.
func wrapperScript(cmdPath string, env map[string]string, cwd string, persist []envChange) ([]byte, error) {
	var b strings.Builder
	for _, c := range persist {
		if !ValidEnvName(c.name) {
			return nil, fmt.Errorf("invalid environment variable name %q", c.name)
		}
		if c.value == nil {
			fmt.Fprintf(&b, "unset %s\n", c.name)
			continue
		}
		if strings.IndexByte(*c.value, 0) >= 0 {
			return nil, errors.New("environment value contains NUL")
		}
		fmt.Fprintf(&b, "export %s=%s\n", c.name, quote(*c.value))
	}
	names := make([]string, 0, len(env))
	for k := range env {
		if !ValidEnvName(k) {
			return nil, fmt.Errorf("invalid environment variable name %q", k)
		}
		names = append(names, k)
	}
	slices.Sort(names)
	for _, v := range env {
		if strings.IndexByte(v, 0) >= 0 {
			return nil, errors.New("environment value contains NUL")
		}
	}
	if strings.IndexByte(cwd, 0) >= 0 {
		return nil, errors.New("working directory contains NUL")
	}
	if cwd != "" {
		b.WriteString("__sbx_pwd=$PWD __sbx_oldpwd=${OLDPWD-}\n")
	}
	for i, k := range names {
		fmt.Fprintf(&b, "__sbx_s%d=${%s+x} __sbx_v%d=${%s-}\n", i, k, i, k)
	}
	for _, k := range names {
		fmt.Fprintf(&b, "export %s=%s\n", k, quote(env[k]))
	}
	if cwd != "" {
		fmt.Fprintf(&b, "command cd -- %s && ", quote(cwd))
	}
	fmt.Fprintf(&b, "command . %s\n__sbx_rc=$?\n", quote(cmdPath))
	for i, k := range names {
		fmt.Fprintf(&b, "case $__sbx_s%d in x) %s=$__sbx_v%d ;; *) unset %s ;; esac\n", i, k, i, k)
	}
	var tmp []string
	if cwd != "" {
		b.WriteString("command cd -- \"$__sbx_pwd\"; OLDPWD=$__sbx_oldpwd\n")
		tmp = append(tmp, "__sbx_pwd", "__sbx_oldpwd")
	}
	for i := range names {
		tmp = append(tmp, "__sbx_s"+strconv.Itoa(i), "__sbx_v"+strconv.Itoa(i))
	}
	if len(tmp) > 0 {
		b.WriteString("unset " + strings.Join(tmp, " ") + "\n")
	}
	// Expanded before eval runs, so the variable can go and still be
	// returned.
	b.WriteString("eval \"unset __sbx_rc; return $__sbx_rc\"\n")
	return []byte(b.String()), nil
}

// Stopping a command without losing the shell (bash only).
//
// A timed-out or aborted command runs in the shell itself, sourced from
// DIR/cmd. Killing the processes it started is not enough: the shell
// would go on with the rest of the file (`sleep 20; echo after`). So
// before killing them the agent creates DIR/k and sends the shell
// unwindSignal. Bash runs the trap below once the foreground child it
// waits for is dead (or, in a loop of builtins, before the next command).
// The trap installs a DEBUG trap (inherited by functions through set -T)
// that runs `return` before every command until the shell is back at its
// top level, where it removes itself and puts back the user's DEBUG trap
// and -T. Each `return` ends one function or sourced file, so nothing more
// of the command runs. The wrapper (DIR/w) is not unwound: it puts the
// per-call environment and working directory back.
//
// DIR/k keeps a late or forged signal from stopping a later command: the
// agent removes it before it sends the next one.

// unwindSignal is SIGRTMAX (64 on Linux): user scripts trap SIGINT, SIGTERM
// or SIGUSR1/2; nobody traps the last real-time signal.
const unwindSignal = 64

// Names of the session directory's files used while a command unwinds.
const (
	unwindFile    = "k" // exists while the agent stops a command
	savedTrapFile = "t" // the user's DEBUG trap, while the command unwinds
)

// unwindInit is shell code, run once when a bash session starts, that
// defines the unwinding trap.
func unwindInit(dir string) string {
	marker := quote(dir + "/" + unwindFile)
	saved := quote(dir + "/" + savedTrapFile)
	restore := `trap - DEBUG; command . ` + saved + `; command test -n "$__sbx_dT" || set +T; unset __sbx_dT`
	// At the top level the trap waits for the status line's printf, or,
	// if the signal came before the command began, unwinds the command
	// from its first line; a marker already gone means the command had
	// ended and the signal came late.
	unwind := `if command test "${#BASH_SOURCE[@]}" -gt 0; then ` +
		`if command test "${BASH_SOURCE[0]}" != ` + quote(dir+"/"+wrapperFile) + `; then return 137; fi; ` +
		`else case $BASH_COMMAND in "command printf "*) ` + restore + ` ;; ` +
		`*) command test -e ` + marker + ` || { ` + restore + `; } ;; esac; fi`
	handler := `if command test -e ` + marker + `; then ` +
		`trap -p DEBUG >| ` + saved + `; ` +
		`case $- in *T*) __sbx_dT=1 ;; *) __sbx_dT= ;; esac; ` +
		`trap "$__sbx_unwind" DEBUG; set -T; eval "$__sbx_unwind"; fi`
	return "__sbx_unwind=" + quote(unwind) + "; trap " + quote(handler) + " " + strconv.Itoa(unwindSignal) + "; "
}
