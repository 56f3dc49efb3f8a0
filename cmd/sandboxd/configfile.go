package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sandboxd/sandboxd/internal/bounded"
)

// defaultConfigFile is read when it exists and --config is not given.
const defaultConfigFile = "/etc/sandboxd/config.yaml"

// maxConfigBytes bounds the config file: it holds a few dozen keys.
const maxConfigBytes = 1 << 20

// notInConfig are the flags a config file cannot set: where the config file
// is, and per-invocation switches.
var notInConfig = map[string]bool{"config": true, "json": true}

// applyConfigFile sets, from the YAML file at path, every flag the command
// line did not set: the file's keys are the flags' names (state-dir,
// max-memory, ...), so every flag has a key and the command line wins. A
// missing file is an error only when required (given with --config). The
// values go through the flags' own parsing, so the file is validated exactly
// as the command line is; errors name the file and line.
func applyConfigFile(flags *flag.FlagSet, path string, required bool) error {
	data, err := bounded.ReadFile(path, maxConfigBytes)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s:%d: want a mapping of keys to values (state-dir: /var/lib/sandboxd)", path, root.Line)
	}
	onCommandLine := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	seen := map[string]bool{}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, value := root.Content[i], root.Content[i+1]
		if err := applyKey(flags, key, value, seen, onCommandLine); err != nil {
			errs = append(errs, fmt.Errorf("config file %s:%d: %w", path, key.Line, err))
		}
	}
	return errors.Join(errs...)
}

// applyKey sets one flag from one key unless the command line set it.
func applyKey(flags *flag.FlagSet, key, value *yaml.Node, seen, onCommandLine map[string]bool) error {
	name := key.Value
	if flags.Lookup(name) == nil || notInConfig[name] {
		return fmt.Errorf("unknown key %q (keys are the flags' names without dashes: sandboxd --help)", name)
	}
	if seen[name] {
		return fmt.Errorf("key %q given twice", name)
	}
	seen[name] = true
	text, err := scalarText(value)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if onCommandLine[name] {
		return nil
	}
	if err := flags.Set(name, text); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// scalarText turns a value into a flag's text: a scalar as written, a
// list of scalars joined with commas (dns: [1.1.1.1, 9.9.9.9]).
func scalarText(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "", nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		var parts []string
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return "", errors.New("a list may hold only plain values")
			}
			parts = append(parts, item.Value)
		}
		return strings.Join(parts, ","), nil
	}
	return "", errors.New("want a value or a list of values")
}
