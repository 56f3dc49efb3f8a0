package api

import "net/http"

// Error codes of git checkout.
const (
	CodeInvalidGitURL         Code = "INVALID_GIT_URL"          // not an http, https or git URL, or malformed
	CodeGitRepositoryNotFound Code = "GIT_REPOSITORY_NOT_FOUND" // the server has no such repository
	CodeGitBranchNotFound     Code = "GIT_BRANCH_NOT_FOUND"     // the repository has no such branch or tag
	CodeGitAuthFailed         Code = "GIT_AUTH_FAILED"          // the server wants credentials, or refused the ones given
	CodeGitNetworkError       Code = "GIT_NETWORK_ERROR"        // the server could not be reached (DNS, connect, TLS, timeout)
	CodeGitCloneFailed        Code = "GIT_CLONE_FAILED"         // anything else; the message carries git's own words
)

func init() {
	RegisterStatus(CodeInvalidGitURL, http.StatusBadRequest)
	RegisterStatus(CodeGitRepositoryNotFound, http.StatusNotFound)
	RegisterStatus(CodeGitBranchNotFound, http.StatusNotFound)
	RegisterStatus(CodeGitAuthFailed, http.StatusForbidden)
	RegisterStatus(CodeGitNetworkError, http.StatusBadGateway)
	RegisterStatus(CodeGitCloneFailed, http.StatusInternalServerError)
}

// Git checkout bounds.
const (
	// DefaultGitTimeout is how long a clone may take unless the call says.
	DefaultGitTimeout = 10 * 60 * 1000 // ms
	// MaxGitURLBytes bounds the repository URL.
	MaxGitURLBytes = 8192
)

// GitCheckoutRequest is the body of POST /v1/sandboxes/{id}/git/checkout.
// Credentials may be given in the URL (https://user:token@host/repo.git);
// they are used for this clone only: never stored in the clone's
// .git/config, never passed on a command line, never logged or echoed.
type GitCheckoutRequest struct {
	// RepoURL is an http, https or git URL.
	RepoURL string `json:"repoUrl"`
	// Branch is a branch or tag to check out; default the remote's HEAD.
	Branch string `json:"branch,omitempty"`
	// TargetDir is where to clone; default /workspace/<repository name>.
	// It must not exist or be an empty directory.
	TargetDir string `json:"targetDir,omitempty"`
	// Depth makes a shallow clone of that many commits; 0 is the whole
	// history.
	Depth int `json:"depth,omitempty"`
	// Timeout in milliseconds; default DefaultGitTimeout, at most 24h.
	Timeout   int64  `json:"timeout,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
}

// GitCheckoutResult answers a successful clone.
type GitCheckoutResult struct {
	Success bool `json:"success"`
	// RepoURL is the URL cloned, without credentials.
	RepoURL string `json:"repoUrl"`
	// Branch is the branch checked out (the requested one, or the
	// remote's default).
	Branch string `json:"branch"`
	// TargetDir is the absolute path of the clone.
	TargetDir string `json:"targetDir"`
	// Commit is the commit checked out.
	Commit string `json:"commit"`
}
