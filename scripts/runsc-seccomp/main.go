//go:build sandboxd_precompile

// Command runsc-seccomp fills gVisor's runsc/boot/filter/filter_precompiled.go
// (given as its argument) with the Sentry's seccomp programs compiled ahead:
// gVisor's Bazel build does this; a build from its Go module ships none, so
// runsc compiles its filter at every boot and restore (2130 BPF instructions
// optimized to about 600: 0.1-0.4 s of CPU on a 2-vCPU VM, on the sandbox's
// CPU, before the restored kernel can load). scripts/deps.sh copies this file
// into gVisor's source and runs it there.
package main

import (
	"fmt"
	"os"
	"strings"

	"gvisor.dev/gvisor/runsc/boot/filter/config"
)

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "runsc-seccomp:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	programs, err := config.SandboxdPrograms()
	if err != nil {
		return err
	}
	var reg strings.Builder
	for _, p := range programs {
		reg.WriteString(p.Registration("\t", "precompiledseccomp", "programs"))
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(src)
	// Each edit must apply exactly once: a gVisor whose file changed shape
	// fails the build rather than shipping runsc without the programs.
	for _, e := range [][2]string{
		{"const PrecompilationDisabledAtBuildTime = true", "const PrecompilationDisabledAtBuildTime = false"},
		{"\tprograms := make(map[string]precompiledseccomp.Program)\n", "\tprograms := make(map[string]precompiledseccomp.Program)\n" + reg.String()},
	} {
		if strings.Count(s, e[0]) != 1 {
			return fmt.Errorf("%s: %q is not there once", path, e[0])
		}
		s = strings.Replace(s, e[0], e[1], 1)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "runsc-seccomp: %d Sentry seccomp programs compiled ahead\n", len(programs))
	return nil
}
