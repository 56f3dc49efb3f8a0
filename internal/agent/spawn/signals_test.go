package spawn

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// signalState is what /proc/self/status says the program running it
// blocks and ignores.
func signalState(t *testing.T, status []byte) string {
	t.Helper()
	var got []string
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "SigBlk:") || strings.HasPrefix(line, "SigIgn:") {
			got = append(got, strings.Join(strings.Fields(line), " "))
		}
	}
	if len(got) != 2 {
		t.Fatalf("no SigBlk and SigIgn in:\n%s", status)
	}
	return strings.Join(got, ", ")
}

const defaultSignals = "SigBlk: 0000000000000000, SigIgn: 0000000000000000"

// TestResetSignalsLeavesNoneIgnored: a wrapper started with every signal
// ignored and blocked (env(1) sets them before it executes the wrapper)
// runs its program with none, directly and as a spare. It also pins what
// goLeavesIgnored says of the Go runtime.
func TestResetSignalsLeavesNoneIgnored(t *testing.T) {
	env, err := exec.LookPath("env")
	if err != nil || exec.Command(env, "--ignore-signal", "--block-signal", "true").Run() != nil {
		t.Skip("needs GNU env with --ignore-signal and --block-signal (coreutils 8.31)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := []string{env, "--ignore-signal", "--block-signal", self}
	t.Run("direct", func(t *testing.T) {
		argv := append(wrapper, Argv("", Options{CgroupRoot: t.TempDir()}, "/bin/cat", "/proc/self/status")[1:]...)
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("spawn: %v: %s", err, out)
		}
		if got := signalState(t, out); got != defaultSignals {
			t.Errorf("the program: %s, want %s", got, defaultSignals)
		}
	})
	t.Run("spare", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		argv := append(wrapper, SpareArgv("", Options{CgroupRoot: t.TempDir(), RequestFD: 3})[1:]...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.ExtraFiles = []*os.File{r}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		WriteRequest(w, Request{Argv: []string{"/bin/cat", "/proc/self/status"}})
		w.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("spare: %v: %s", err, out.String())
		}
		if got := signalState(t, []byte(out.String())); got != defaultSignals {
			t.Errorf("the spare's program: %s, want %s", got, defaultSignals)
		}
	})
}
