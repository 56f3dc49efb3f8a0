package runtime

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestSpecGolden pins the OCI spec every sandbox runs with: namespaces,
// capabilities, mounts, masked paths, limits. A change to it is a change
// to the sandbox's isolation and must show up in review as a diff of
// testdata/*.golden.json (go test ./internal/runtime -run TestSpecGolden
// -update rewrites them). The seccomp profile is moby's default, pinned by
// go.mod; the golden file records its default action and size, not its
// several hundred rules.
func TestSpecGolden(t *testing.T) {
	tests := []struct {
		name string
		opts SpecOptions
	}{
		{"host-kernel", SpecOptions{
			ProcOptions: HidePIDOptions,
			Hostname:    "demo",
			Rootfs:      "/var/lib/sandboxd/sandboxes/abcdefghij/rootfs",
			Args:        []string{AgentPath, "--listen-fd", "3"},
			Env:         []string{"HOSTNAME=demo", "PATH=/usr/local/bin:/usr/bin:/bin"},
			Mounts: []specs.Mount{{Destination: AgentPath, Type: "bind", Source: "/run/sandboxd/agent/sandbox-agent",
				Options: []string{"bind", "ro", "nosuid", "nodev"}}},
			NetnsPath:   "/run/netns/sbxabcdefghij",
			CgroupsPath: "/sandboxd/abcdefghij",
			Resources:   Resources{MemoryBytes: 1 << 30, MilliCPU: 1000, Pids: 1024, CPUs: "0-1"},
			Annotations: map[string]string{"dev.sandboxd.id": "demo"},
		}},
		{"gvisor", SpecOptions{
			Hostname:    "demo",
			Rootfs:      "/var/lib/sandboxd/sandboxes/abcdefghij/rootfs",
			Args:        []string{AgentPath, "--socket", GVisorAgentSocket},
			Env:         []string{"HOSTNAME=demo"},
			NetnsPath:   "/run/netns/sbxabcdefghij",
			CgroupsPath: "/sandboxd/abcdefghij",
			Resources:   Resources{MemoryBytes: 256 << 20, MilliCPU: 250, Pids: 256},
			Annotations: map[string]string{"dev.sandboxd.id": "demo"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := NewSpec(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := goldenForm(t, spec)
			path := filepath.Join("testdata", "spec-"+tt.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("the spec differs from %s; if the change is meant, run with -update and review the diff.\ngot:\n%s", path, got)
			}
		})
	}
}

// goldenForm is the spec as JSON, with what depends on the host made
// constant: the open-files limit follows the daemon's own hard limit when
// that is lower, and the seccomp rules are summarised.
func goldenForm(t *testing.T, spec *specs.Spec) []byte {
	t.Helper()
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	for i, l := range spec.Process.Rlimits {
		if l.Type == "RLIMIT_NOFILE" && l.Hard == min(rl.Max, 1<<20) && l.Soft == l.Hard {
			spec.Process.Rlimits[i].Hard, spec.Process.Rlimits[i].Soft = 1<<20, 1<<20
		}
	}
	sc := spec.Linux.Seccomp
	if sc == nil || sc.DefaultAction != specs.ActErrno || len(sc.Syscalls) == 0 {
		t.Fatalf("seccomp profile: %+v; want moby's default (deny by default, with rules)", sc)
	}
	spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: sc.DefaultAction, DefaultErrnoRet: sc.DefaultErrnoRet,
		Syscalls: []specs.LinuxSyscall{{Names: []string{fmt.Sprintf("(%d rules of moby's default profile)", len(sc.Syscalls))}}}}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(data, '\n')
}
