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
// How a shell takes its commands (see dispatchLoop). Every system call of
// the shell or the agent on a command's way is a trip through gVisor's
// Sentry (tens of microseconds quiet, hundreds loaded), and bash reads a
// pipe one byte per call, so the shell reads each command as one
// fixed-size frame (`read -N`, one call) from a pipe of its own, runs a
// loop that was parsed once, and moves its descriptors with `exec` rather
// than with redirections that are saved and put back around every
// command. The command itself, and anything large (per-call environment),
// lives in files the loop sources.

// Names of the per-command files in the session directory.
const (
	cmdFile     = "cmd" // the command text
	wrapperFile = "w"   // per-call env and cwd, then sources cmd
	stdinFile   = "in"  // the command's stdin
	nullLink    = "n"   // a link to /dev/null, variant 'e''s stdin (see stdinLink)
	// The commands' output FIFOs, kept from one command to the next while
	// only the shell writes to them (see outFIFO); a background child of
	// a command keeps the FIFO it was given, which is then unlinked, and
	// the next command gets a new one at the same path.
	stdoutFIFO = "o"
	stderrFIFO = "e"
	// statusFIFO is where the shell reports "ready" and each command's
	// status: its stdout between commands. The agent holds it open for
	// reading and writing for the shell's life, so the shell's opening it
	// never blocks and it never reports end of file.
	statusFIFO = "s"
)

// frameFD is the shell's descriptor for the pipe its frames come on, its
// stdin at start, which the loop moves here. Not 0: commands get /dev/null
// or their stdin file there without a redirection per command. For bash 10: above the descriptors scripts use
// by habit (3-9), and bash gives its own saved descriptors and {var}
// redirections the lowest free one from 10 up, so it never takes this
// one. dash, the /bin/sh fallback, takes only one digit: 9 there.
// Children inherit it (a shell cannot mark a descriptor close-on-exec);
// reading it would take frames meant for the shell, which only a program
// told to do so does.
func frameFD(bash bool) int {
	if bash {
		return 10
	}
	return 9
}

// frameLen is the length of a line frame, the /bin/sh fallback's: a
// variant letter, the command's number in 15 digits, and a newline (dash
// reads lines). Bash reads fixed-size frames (bashFrameLen) in one system
// call with `read -N`.
const frameLen = 17

// bashFrameLen is the size of a bash frame: the letter and the number as
// in a line frame, the length of the text it carries in 4 characters
// (space-padded), the text, and spaces up to the size. The text is the
// command itself for variant 'e' (see inFrame), nothing for the others.
// Bash's read builtin handles a frame a character at a time (about 50 ns
// each, on gVisor as natively: it runs on the host's CPU), so the size
// trades that against how many commands fit. At 128 a frame costs the
// shell no more CPU than the 17-byte frame and the sourced file did (the
// crun path must not get slower), and carries the short commands that
// most calls are; at 256 the shell took 7 us more per command.
const bashFrameLen = 128

// frameHeader is what precedes the text in a bash frame.
const frameHeader = 1 + 15 + 4

// maxFrameText is the longest command text a bash frame carries.
const maxFrameText = bashFrameLen - frameHeader

// inFrame reports whether a command's text can travel in its frame and be
// run with eval (variant 'e') rather than sourced from DIR/cmd: it fits,
// and it is plain ASCII without NUL, so that bash counts as many
// characters as the agent wrote bytes whatever the shell's locale. Texts
// that could tell eval from a sourced file still go through the file:
// `return` (it ends a sourced file, but only complains at eval's top
// level), the names that describe where code comes from (BASH_SOURCE,
// BASH_LINENO, LINENO, FUNCNAME, caller), $_ (the file's path at its first
// line), and the agent's own __sbx_ names.
func inFrame(text string) bool {
	if len(text) > maxFrameText {
		return false
	}
	for i := 0; i < len(text); i++ {
		if c := text[i]; c == 0 || c >= 0x80 {
			return false
		}
	}
	for _, w := range []string{"return", "BASH_", "LINENO", "FUNCNAME", "caller", "$_", "${_", "__sbx"} {
		if strings.Contains(text, w) {
			return false
		}
	}
	return true
}

// quote makes s one shell word.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// variant is the frame letter of a command (see dispatchVariants).
func variant(wrapped, stdin, text bool) byte {
	switch {
	case text:
		return 'e'
	case wrapped && stdin:
		return 'j'
	case wrapped:
		return 'w'
	case stdin:
		return 'i'
	}
	return 'c'
}

// frame is what the agent writes to the shell to run command n: the
// variant v, the number its status line carries and, in a bash frame, the
// text of a command of variant 'e'.
func frame(n uint64, v byte, bash bool, text string) []byte {
	if !bash {
		return fmt.Appendf(make([]byte, 0, frameLen), "%c%015d\n", v, n%1e15)
	}
	b := fmt.Appendf(make([]byte, 0, bashFrameLen), "%c%015d%4d%s", v, n%1e15, len(text), text)
	for len(b) < bashFrameLen {
		b = append(b, ' ')
	}
	return b
}

// dispatchVariants are the texts the loop evaluates for each frame
// letter, readonly variables set once per shell: user code in the shell
// cannot change or unset them. eval joins its arguments, so the command's
// number, appended by the loop from the frame, becomes the status line's
// last word; it is read before the command runs, so the command cannot
// change it. eval keeps the command at the top level (a function would
// make the user's declare local and hide the shell's positional
// parameters).
//
// Between commands the shell's stdin, stdout and stderr are closed, so
// that each redirection of a command opens its file straight onto the
// descriptor it is for: bash then neither saves the descriptor nor moves
// the new one (dup2), and putting it back is one close. A redirection
// onto an open descriptor costs five calls more (save, dup2, close of the
// copy...), and `exec`'s own redirections are saved too, in case a
// command given to exec fails. Per command the shell makes about 25
// system calls (runsc --strace), against 43 when it moved stdout with
// exec and 83 when each command came as a line:
//
//	{                       stdin (below) first: the lowest free descriptor
//	for..for.. . cmd 2>e; done; done >o
//	                        stdout and stderr of the command, each one open
//	                        and one close; stderr on the sourcing, so that
//	                        `set -x` traces the agent's lines below nowhere
//	__sbx_s=$?
//	printf '%s %s\n' "$__sbx_s" >s N   the status line ("STATUS N") on the
//	                        status FIFO, whose open lands on stdout
//	} </dev/null            or <in when the call gives stdin
//
// The group's stdin is opened for every command, so that a command's
// `exec <file` does not become the next command's stdin. The number N is
// appended by the loop, between the text up to the status line and the
// closing of the group (dispatchSuffix).
//
// Two one-pass loops around the sourcing take a `break` or `continue` in
// the command (even `break 2`), which would otherwise reach the dispatch
// loop and skip the status line.
func dispatchVariants(dir string) map[byte]string {
	out := map[byte]string{}
	for _, v := range []byte("cwije") {
		run := "command . " + quote(dir+"/"+cmdFile)
		switch v {
		case 'w', 'j':
			run = "command . " + quote(dir+"/"+wrapperFile)
		case 'e':
			run = `command eval "${__sbx_f:` + strconv.Itoa(frameHeader) + `:${__sbx_f:16:4}}"`
		}
		status := "__sbx_s=$?; "
		if v == 'e' {
			status = "__sbx_s=$? __sbx_f=; " // the text is kept no longer than the file's
		}
		out[v] = "{ for __sbx_a in 1; do for __sbx_b in 1; do " +
			run + " 2>" + quote(dir+"/"+stderrFIFO) + "; " +
			"done; done >" + quote(dir+"/"+stdoutFIFO) + "; " + status +
			`command printf '%s %s\n' "$__sbx_s" >` + quote(dir+"/"+statusFIFO)
	}
	return out
}

// dispatchSuffix is what follows the number after variant v's text: the
// end of the group, with its stdin: /dev/null, the call's stdin file, or
// for variant 'e' the link DIR/n to /dev/null, whose access time tells
// that the shell began the command (see stdinLink).
func dispatchSuffix(dir string, v byte) string {
	switch v {
	case 'i', 'j':
		return "; } <" + quote(dir+"/"+stdinFile)
	case 'e':
		return "; } <" + quote(dir+"/"+nullLink)
	}
	return "; } </dev/null"
}

// suffixVar names the shell variable that holds variant v's suffix.
func suffixVar(v byte) string {
	switch v {
	case 'i', 'j':
		return "__sbx_zi"
	case 'e':
		return "__sbx_zn"
	}
	return "__sbx_z"
}

// dispatchLoop is the shell code that defines the variants (see
// dispatchVariants), says "ready", and then runs one frame after another
// until the agent closes the pipe. It is parsed once, when the shell
// starts: nothing of it is read per command. A read interrupted by a
// signal (a late unwind, see unwindInit, in POSIX mode) is tried again;
// at end of file the shell exits, as it did at the end of its input.
func dispatchLoop(dir string, bash bool) string {
	var b strings.Builder
	b.WriteString("readonly")
	variants := dispatchVariants(dir)
	letters := []byte("cwij")
	if bash {
		letters = append(letters, 'e')
	}
	for _, v := range letters {
		b.WriteString(" " + dispatchVar(v) + "=" + quote(variants[v]))
	}
	for _, v := range []byte("cie") {
		b.WriteString(" " + suffixVar(v) + "=" + quote(dispatchSuffix(dir, v)))
	}
	// Stdout (the status FIFO) and stdin are closed once "ready" is out:
	// see dispatchVariants. The loop's condition is a command of its own
	// that the unwinding trap knows (see unwindInit).
	b.WriteString("; command printf 'ready\\n'; command exec >&- <&-; while " + loopTop + "; do ")
	if bash {
		// The whole frame in one read (one system call). A shell killed
		// while it waits can still take a frame that arrives before it
		// dies; the agent then tells a command that never ran from one
		// that did by whether the command file was read, or the link
		// DIR/n followed (see commandFile.neverRead, stdinLink).
		fmt.Fprintf(&b, `command read -r -N %d -u %d __sbx_f || { if command test "$?" -gt 128; then continue; fi; command exit 0; }; `, bashFrameLen, frameFD(bash))
	} else {
		fmt.Fprintf(&b, `IFS= command read -r __sbx_f <&%d || { if command test "$?" -gt 128; then continue; fi; command exit 0; }; `, frameFD(bash))
	}
	b.WriteString(`case $__sbx_f in `)
	// The number: the frame's 15 digits after its letter.
	number := `"${__sbx_f:1:15}"`
	if !bash {
		number = `"${__sbx_f#?}"` // a line: the letter, no newline
	}
	for _, v := range letters {
		fmt.Fprintf(&b, `%c*) command eval "$%s" %s "$%s" ;; `, v, dispatchVar(v), number, suffixVar(v))
	}
	b.WriteString("*) command exit 70 ;; esac; done; command exit 71\n")
	return b.String()
}

// loopTop is the dispatch loop's condition, where a command unwound with
// `continue` ends up (see unwindInit).
const loopTop = ": __sbx_top"

// dispatchVar names the shell variable that holds variant v's code.
func dispatchVar(v byte) string { return "__sbx_" + string(v) }

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
	if err := writeEnvChanges(&b, persist); err != nil {
		return nil, err
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

// writeEnvChanges writes the shell lines that make changes of the
// session's own environment (see pendingEnv): an export or an unset each.
func writeEnvChanges(b *strings.Builder, changes []envChange) error {
	for _, c := range changes {
		if !ValidEnvName(c.name) {
			return fmt.Errorf("invalid environment variable name %q", c.name)
		}
		if c.value == nil {
			fmt.Fprintf(b, "unset %s\n", c.name)
			continue
		}
		if strings.IndexByte(*c.value, 0) >= 0 {
			return errors.New("environment value contains NUL")
		}
		fmt.Fprintf(b, "export %s=%s\n", c.name, quote(*c.value))
	}
	return nil
}

// envChangesInFrame is text preceded by the lines that make changes
// (writeEnvChanges), if the whole still goes in a frame (inFrame). A
// command whose only reason to be wrapped is such changes then takes the
// frame way, eval'd with them as its first lines, instead of the agent
// writing DIR/cmd and DIR/w and the shell sourcing both: the first call to
// a sandbox taken from the warm pool, which carries its new HOSTNAME
// (about 9 system calls more, each a trip through the Sentry on gVisor).
// The lines run first, each parsed and run before the next line is read,
// so a syntax error further on does not undo them, as it does not in the
// wrapper.
func envChangesInFrame(changes []envChange, text string) (string, bool) {
	var b strings.Builder
	if writeEnvChanges(&b, changes) != nil {
		return "", false
	}
	b.WriteString(text)
	return b.String(), inFrame(b.String())
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
// agent removes it before it sends the next one. It holds the command's
// number as the frame gave it, because at the top level the trap tells a
// command that has ended by its status line's printf being the last
// command bash ran (BASH_COMMAND), and that alone also matches the
// previous command's status line or the shell's "ready": bash runs a
// trap when the builtin it was in returns, and a shell descheduled right
// after the write of a status line (the agent's wake-up on the status
// FIFO preempts it) could still be inside that printf when the next
// command's frame came and its timeout passed. The trap then took the
// signal for a late one, put the DEBUG trap back and let the whole
// command run (TestTimeoutStopsTheWholeCommand under load;
// TestUnwindSignalRightAfterTheStatusLine).
//
// The trap's first command is a plain `:` whose status nothing reads,
// because bash (5.2) may run the trap between the forks of a pipeline
// (`sleep 20 | cat`: the signal came while it forked sleep). It then
// still counts itself as making the pipeline's children, and the first
// simple command the trap runs waits for the child it made last and
// takes that child's status as its own. When that command was the test
// of DIR/k, the child killed by the agent made it false: the trap did
// nothing and the rest of the command ran (a pipeline went on after its
// timeout in about 1 of 20 tries under load;
// TestUnwindSignalBetweenAPipelinesForks). The `:` takes the wait, which
// ends as soon as the agent has killed that child.

// unwindSignal is SIGRTMAX (64 on Linux): user scripts trap SIGINT, SIGTERM
// or SIGUSR1/2; nobody traps the last real-time signal.
const unwindSignal = 64

// Names of the session directory's files used while a command unwinds.
const (
	unwindFile    = "k" // exists while the agent stops a command
	savedTrapFile = "t" // the user's DEBUG trap, while the command unwinds
)

// DIR/t is the shell's alone: the trap writes it (>|) each time it saves
// the user's DEBUG trap, sources it to put the trap back and then empties
// it (a trap's text may hold what a per-call variable gave it), and it
// goes with the session's directory. The agent used to remove it with the
// command's other files once it had the status line; a late signal (the
// status line already written, DIR/k still there) makes the trap save
// and put back at once, beside that removal: removed between the save and
// the source, the user's trap was lost; removed before the save, the file
// was left behind (TestUnwindLeavesTheSavedTrapToTheShell).

// unwindMarker is what DIR/k holds while command n is stopped: its number
// as the shell has it from the frame (see dispatchLoop), which is the
// first argument after the format of its status line's printf.
func unwindMarker(n uint64) []byte { return fmt.Appendf(nil, "%015d\n", n%1e15) }

// unwindInit is shell code, run once when a bash session starts, that
// defines the unwinding trap.
func unwindInit(dir string) string {
	marker := quote(dir + "/" + unwindFile)
	saved := quote(dir + "/" + savedTrapFile)
	// extdebug is the user's again (turning it off also turns off -T and
	// -E), then -E and -T.
	putBack := `trap - DEBUG; command . ` + saved + `; command : >| ` + saved + `; command test -n "$__sbx_dX" || shopt -u extdebug; ` +
		`command test -z "$__sbx_dE" || set -E; if command test -n "$__sbx_dT"; then set -T; else set +T; fi`
	forget := `unset __sbx_dT __sbx_dE __sbx_dX __sbx_k __sbx_u`
	restore := putBack + "; " + forget
	// A command of variant 'e' (its text from the frame, eval'd at the top
	// level) has no sourced file to return from: the trap leaves it with
	// `continue` to the dispatch loop's top (any count above the loops'
	// depth resumes the outermost loop), where it writes the status line
	// the skipped group did not; __sbx_u says it came there that way. The
	// trap's status is then 1 (`!`), which under extdebug (turned on there,
	// off again with the restore) skips the command the trap ran before;
	// without it that one command would still run. Only once the shell has read that
	// command's frame, and never in a subshell (a pipeline's child, say),
	// which would resume the loop in a copy of the shell: that exits.
	stop := `case $__sbx_f in "e$__sbx_k"*) case $BASH_COMMAND in __sbx_s=*) ;; *) ` +
		`if command test "$BASH_SUBSHELL" -gt 0; then exit 137; fi; __sbx_u=1; shopt -s extdebug; ! continue 1000000 ;; esac ;; esac`
	// The status line comes after the user's trap is back, as it does
	// in the sourced path (the trap restores before the status line's
	// printf): once the agent has the line, the command is over for it.
	// (Before DIR/t was the shell's alone, the agent removed it as soon
	// as it had the line, and a shell still to source it lost the user's
	// DEBUG trap: about 9 runs in 10 of TestTimeoutStopsACommandFromItsFrame
	// on a quiet host.)
	stopped := putBack + `; command printf '%s %s\n' 137 "$__sbx_k" >` + quote(dir+"/"+statusFIFO) + `; ` + forget
	// At the top level the trap waits for this command's status line's
	// printf (its number is __sbx_k, from the marker), or, if the signal
	// came before the command began, unwinds the command from its first
	// line; a marker already gone means the command had ended and the
	// signal came late.
	unwind := `if command test "${#BASH_SOURCE[@]}" -gt 0; then ` +
		`if command test "${BASH_SOURCE[0]}" != ` + quote(dir+"/"+wrapperFile) + `; then return 137; fi; ` +
		`else case $BASH_COMMAND in "command printf '%s %s\n' \"\$__sbx_s\" $__sbx_k "*) ` + restore + ` ;; ` +
		`"` + loopTop + `") if command test -n "${__sbx_u-}"; then ` + stopped + `; else command test -e ` + marker + ` || { ` + restore + `; }; fi ;; ` +
		`*) if command test -e ` + marker + `; then ` + stop + `; else ` + restore + `; fi ;; esac; fi`
	// The `:` first: see "The trap's first command" above.
	handler := `command :; if command test -e ` + marker + ` && command read -r __sbx_k <` + marker + `; then ` +
		`trap -p DEBUG >| ` + saved + `; ` +
		`case $- in *T*) __sbx_dT=1 ;; *) __sbx_dT= ;; esac; case $- in *E*) __sbx_dE=1 ;; *) __sbx_dE= ;; esac; ` +
		`__sbx_dX=; if command shopt -q extdebug; then __sbx_dX=1; fi; ` +
		`trap "$__sbx_unwind" DEBUG; set -T; eval "$__sbx_unwind"; fi`
	return "__sbx_unwind=" + quote(unwind) + "; trap " + quote(handler) + " " + strconv.Itoa(unwindSignal) + "; "
}
