package api

import "fmt"

// CodeNoMatchingNode: a create's nodeSelector names labels no node of
// the cluster has (docs/cluster.md). Nodes that match but are full,
// cordoned or unavailable are CAPACITY_EXCEEDED instead.
const CodeNoMatchingNode Code = "NO_MATCHING_NODE"

func init() { RegisterStatus(CodeNoMatchingNode, 400) }

// MaxNodeLabels bounds a node's labels and a create's nodeSelector.
const MaxNodeLabels = 16

// ValidateNodeLabels checks node labels or a node selector (what names
// them: "node label" or "nodeSelector"): at most MaxNodeLabels, keys and
// values as Kubernetes labels have them (a key of up to 63 bytes after
// an optional DNS prefix and '/', a value of up to 63 bytes; letters,
// digits, '-', '_' and '.', alphanumeric at both ends). The error is an
// *Error (VALIDATION_FAILED).
func ValidateNodeLabels(what string, labels map[string]string) error {
	if len(labels) > MaxNodeLabels {
		return Errorf(CodeValidationFailed, "%s: %d labels; at most %d are allowed", what, len(labels), MaxNodeLabels)
	}
	for k, v := range labels {
		name := k
		if i := lastSlash(k); i >= 0 {
			prefix := k[:i]
			name = k[i+1:]
			if len(prefix) == 0 || len(prefix) > 253 || !labelChars(prefix, false) {
				return Errorf(CodeValidationFailed, "%s key %.80q: the prefix before '/' must be a DNS name", what, k)
			}
		}
		if len(name) == 0 || len(name) > 63 || !labelChars(name, true) {
			return Errorf(CodeValidationFailed, "%s key %.80q: want 1-63 letters, digits, '-', '_' or '.', alphanumeric at both ends", what, k)
		}
		if len(v) > 63 || v != "" && !labelChars(v, true) {
			return Errorf(CodeValidationFailed, "%s %s=%.80q: want a value of 0-63 letters, digits, '-', '_' or '.', alphanumeric at both ends", what, k, v)
		}
	}
	return nil
}

func lastSlash(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}

// labelChars reports whether s has only label characters (with '_' and
// upper case when name) and is alphanumeric at both ends.
func labelChars(s string, name bool) bool {
	alnum := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || name && c >= 'A' && c <= 'Z'
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !alnum(c) && c != '-' && c != '.' && (c != '_' || !name) {
			return false
		}
	}
	return alnum(s[0]) && alnum(s[len(s)-1])
}

// NodeLabelsMatch reports whether labels has every pair of selector.
func NodeLabelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseNodeLabel reads one "k=v" of a --node-label or --node-selector flag.
func ParseNodeLabel(kv string, into map[string]string) error {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			into[kv[:i]] = kv[i+1:]
			return nil
		}
	}
	return fmt.Errorf("%q: want KEY=VALUE", kv)
}
