package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigFile: every key is a flag's name, the file sets what the command
// line does not, and the command line wins.
func TestConfigFile(t *testing.T) {
	path := writeConfig(t, `
# sandboxd's configuration
listen: 0.0.0.0:8080
state-dir: /srv/sandboxd
default-memory: 2Gi
max-memory: 8Gi
sleep-after: 30m
warm-pool: 4
dns: [1.1.1.1, 9.9.9.9]
log-format: json
`)
	o, err := parseFlags("serve", []string{"--config", path, "--agent", "/bin/true", "--warm-pool", "1"})
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Listen != "0.0.0.0:8080" || c.StateDir != "/srv/sandboxd" || c.SleepAfter != 30*time.Minute {
		t.Errorf("listen %q, state dir %q, sleep-after %s: the file's values were not applied", c.Listen, c.StateDir, c.SleepAfter)
	}
	if c.DefaultLimits.MemoryBytes != 2<<30 || c.MaxLimits.MemoryBytes != 8<<30 {
		t.Errorf("memory %d / %d, want 2Gi / 8Gi", c.DefaultLimits.MemoryBytes, c.MaxLimits.MemoryBytes)
	}
	if strings.Join(c.DNS, ",") != "1.1.1.1,9.9.9.9" {
		t.Errorf("dns %q from a list", c.DNS)
	}
	if c.WarmPool != 1 {
		t.Errorf("warm-pool %d: the command line's 1 should override the file's 4", c.WarmPool)
	}
	if o.logFormat != "json" {
		t.Errorf("log-format %q, want json", o.logFormat)
	}
}

// TestConfigFileErrors: a bad file stops the start with an error naming the
// file, the line and the key.
func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unknown key", "listen: 127.0.0.1:7070\nlisten-addr: x\n", []string{":2:", `unknown key "listen-addr"`}},
		{"bad value", "warm-pool: many\n", []string{":1:", "warm-pool"}},
		{"invalid setting", "runtime: podman\n", []string{"--runtime", "podman"}},
		{"twice", "warm-pool: 1\nwarm-pool: 2\n", []string{":2:", "twice"}},
		{"not a mapping", "- listen\n", []string{"mapping"}},
		{"nested", "listen:\n  host: x\n", []string{":1:", "listen"}},
		{"config key", "config: /etc/other.yaml\n", []string{`unknown key "config"`}},
		{"tls half", "tls-cert: /etc/cert.pem\n", []string{"--tls-cert and --tls-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text)
			_, err := parseFlags("serve", []string{"--config", path, "--agent", "/bin/true"})
			if err == nil {
				t.Fatalf("no error for %q", tc.text)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestConfigFileMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	if _, err := parseFlags("serve", []string{"--config", missing, "--agent", "/bin/true"}); err == nil {
		t.Error("a --config file that does not exist was accepted")
	}
	if _, err := parseFlags("serve", []string{"--config", "", "--agent", "/bin/true"}); err != nil {
		t.Errorf("--config '' (no file): %v", err)
	}
	// An empty file is a valid configuration of defaults.
	if _, err := parseFlags("serve", []string{"--config", writeConfig(t, "# nothing yet\n"), "--agent", "/bin/true"}); err != nil {
		t.Errorf("an empty config file: %v", err)
	}
}

// TestExampleConfig: deploy/config.yaml, which `make install` puts in
// /etc/sandboxd, parses as it is, and every key it lists (commented out)
// is a flag, so that uncommenting one never stops the daemon. It logs the
// flags it does not list yet.
func TestExampleConfig(t *testing.T) {
	const example = "../../deploy/config.yaml"
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags("serve", []string{"--config", example, "--agent", "/bin/true"})
	if err != nil {
		t.Fatalf("the example config does not parse: %v", err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		key, _, ok := strings.Cut(strings.TrimPrefix(line, "# "), ":")
		if !ok || !strings.HasPrefix(line, "# ") || strings.ContainsAny(key, " /") {
			continue
		}
		listed[key] = true
		if o.flags.Lookup(key) == nil || notInConfig[key] {
			t.Errorf("deploy/config.yaml lists %q, which is not a flag", key)
		}
	}
	o.flags.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] && !notInConfig[f.Name] {
			t.Logf("deploy/config.yaml does not list %q yet", f.Name)
		}
	})
}
