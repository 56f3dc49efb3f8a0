package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent/transpile"
)

var helperBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "transpile-helper")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helperBin = filepath.Join(dir, "sandbox-transpile")
	build := exec.Command("go", "build", "-o", helperBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the helper: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestServe sends the real binary cells as the agent does, one after the
// other on one process, and checks its replies.
func TestServe(t *testing.T) {
	reqs := []transpile.Request{
		{Language: transpile.TypeScript, Code: "const n: number = 2\nn * 3"},
		{Language: transpile.TypeScript, Code: "const = ;"},
		{Language: transpile.TypeScript, Code: "import os from 'os'\nexport const x: number = 1"},
		{Language: transpile.JavaScript, Code: "import os from 'os'\nos.platform()"},
	}
	var in bytes.Buffer
	for _, r := range reqs {
		if err := transpile.WriteFrame(&in, r); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(helperBin, transpile.Arg)
	cmd.Stdin = &in
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	var replies []transpile.Reply
	for {
		var r transpile.Reply
		if err := transpile.ReadFrame(&out, &r); err != nil {
			break
		}
		replies = append(replies, r)
	}
	if len(replies) != len(reqs) {
		t.Fatalf("%d replies to %d requests: %+v", len(replies), len(reqs), replies)
	}
	if r := replies[0]; r.Error != nil || strings.Contains(r.Code, "number") || !strings.Contains(r.Code, "n * 3") {
		t.Errorf("types not stripped: %+v", r)
	}
	if r := replies[1]; r.Error == nil || r.Error.Name != "SyntaxError" || len(r.Error.Traceback) == 0 {
		t.Errorf("syntax error: %+v", r)
	}
	for _, r := range replies[2:] {
		if r.Error != nil || !strings.Contains(r.Code, "require(\"os\")") {
			t.Errorf("imports not made CommonJS: %+v", r)
		}
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{}, {"extra"}, {transpile.Arg, "extra"}} {
		cmd := exec.Command(helperBin, args...)
		if err := cmd.Run(); cmd.ProcessState.ExitCode() != 2 {
			t.Errorf("%q: exit %d (%v), want 2", args, cmd.ProcessState.ExitCode(), err)
		}
	}
}

// TestOversizedFrame: a frame over the bound ends the helper with an
// error, without reading or allocating it.
func TestOversizedFrame(t *testing.T) {
	cmd := exec.Command(helperBin, transpile.Arg)
	cmd.Stdin = bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff})
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("exit %d (%v), want 1", cmd.ProcessState.ExitCode(), err)
	}
}

// TestStatic: the helper runs in any image, as the agent does.
func TestStatic(t *testing.T) {
	f, err := elf.Open(helperBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the helper is dynamically linked (%s)", p.Type)
		}
	}
}
