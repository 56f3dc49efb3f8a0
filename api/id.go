package api

// MaxSandboxIDLength is the longest sandbox ID: the length limit of one DNS
// label, because IDs appear in preview hostnames.
const MaxSandboxIDLength = 63

// ValidateSandboxID reports whether id is a valid sandbox ID: a DNS label of
// 1-63 characters from [a-z0-9-] that neither starts nor ends with '-'. IDs
// appear in paths on the host and in preview hostnames, so this is the one
// rule every component (daemon, agent, SDK, CLI) applies. The error is an
// *Error with code INVALID_SANDBOX_ID and a message safe to show to a user.
func ValidateSandboxID(id string) error {
	switch {
	case id == "":
		return Errorf(CodeInvalidSandboxID, "sandbox ID is empty")
	case len(id) > MaxSandboxIDLength:
		return Errorf(CodeInvalidSandboxID, "sandbox ID is %d bytes long; at most %d are allowed", len(id), MaxSandboxIDLength)
	case id[0] == '-' || id[len(id)-1] == '-':
		return Errorf(CodeInvalidSandboxID, "sandbox ID %q starts or ends with '-'", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' {
			continue
		}
		return Errorf(CodeInvalidSandboxID, "sandbox ID %q has the character %q at byte %d; only a-z, 0-9 and '-' are allowed", id, c, i)
	}
	return nil
}
