package main

import (
	"fmt"
	"strings"
)

// parseEnv reads --env values: K=V sets K to V; a bare K passes on the
// local value of K (and is an error when K is not set locally), which keeps
// secrets out of the command line and shell history.
func parseEnv(values []string, getenv func(string) string) (map[string]string, error) {
	env := make(map[string]string, len(values))
	for _, kv := range values {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--env %q: want K=V or K", kv)
		}
		if !ok {
			v = getenv(k)
			if v == "" {
				return nil, fmt.Errorf("--env %s: %s is not set here; use %s=VALUE", k, k, k)
			}
		}
		env[k] = v
	}
	return env, nil
}

// parseLabels reads --label values, each K=V.
func parseLabels(values []string) (map[string]string, error) {
	labels := make(map[string]string, len(values))
	for _, kv := range values {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want K=V", kv)
		}
		labels[k] = v
	}
	return labels, nil
}
