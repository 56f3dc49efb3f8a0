package agent

import (
	"errors"
	"net/http"
	"path"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/files"
	"github.com/sandboxd/sandboxd/internal/agent/git"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// gitCheckout is POST /git/checkout.
func (s *server) gitCheckout(w http.ResponseWriter, r *http.Request) {
	var req api.GitCheckoutRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return
	}
	remote, err := git.ParseURL(req.RepoURL)
	if err != nil {
		writeError(w, s.gitError(err, nil))
		return
	}
	switch {
	case req.Branch != "" && !git.ValidBranch(req.Branch):
		writeError(w, api.Errorf(api.CodeValidationFailed, "branch %q is not a valid branch or tag name", truncate(req.Branch, 64)))
		return
	case req.Depth < 0 || req.Depth > 1<<30:
		writeError(w, api.Errorf(api.CodeValidationFailed, "depth must be between 0 (whole history) and %d", 1<<30))
		return
	case req.Timeout < 0 || req.Timeout > api.MaxTimeout.Milliseconds():
		writeError(w, api.Errorf(api.CodeValidationFailed, "timeout must be between 0 and %d milliseconds", api.MaxTimeout.Milliseconds()))
		return
	}
	target := req.TargetDir
	if target == "" {
		target = path.Join(s.files.workspace, remote.Name())
	}
	sid := sessionOf(r, req.SessionID)
	dir, aerr := s.resolve(sid, target, "targetDir")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	// Git runs as the session's user, with the session's environment.
	sessID := sid
	if sessID == "" {
		sessID = session.Default
	}
	sess, err := s.sessions.Get(sessID)
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	var gitUser *git.User
	var owner *files.Owner
	if a := sess.Account(); a != nil {
		gitUser, owner = &git.User{UID: a.UID, GID: a.GID}, &files.Owner{UID: a.UID, GID: a.GID}
	}
	if dir == "/" {
		writeError(w, api.Errorf(api.CodeValidationFailed, "targetDir must not be /"))
		return
	}
	existed, mode, err := s.files.fs.Exists(dir)
	if err != nil {
		writeError(w, s.fileError(err))
		return
	}
	if existed {
		empty := false
		if mode.IsDir() {
			entries, _, err := s.files.fs.List(dir, files.ListOptions{Hidden: true, Max: 1})
			empty = err == nil && len(entries) == 0
		}
		if !empty {
			writeError(w, api.Errorf(api.CodeFileExists, "targetDir %s exists and is not an empty directory", dir))
			return
		}
	} else if err := s.files.fs.Mkdir(dir, 0o755, true, owner); err != nil {
		// Made here, empty, so that a session's user can clone into it.
		writeError(w, s.fileError(err))
		return
	}
	timeout := time.Duration(req.Timeout) * time.Millisecond
	if timeout == 0 {
		timeout = api.DefaultGitTimeout * time.Millisecond
	}
	res, err := s.files.git.Clone(r.Context(), git.Options{
		Remote: remote, Branch: req.Branch, Dir: dir, Depth: req.Depth, Timeout: timeout,
		User: gitUser, Env: sess.Environ(sess.Account(), nil),
	})
	if err != nil {
		// Leave nothing half-cloned behind: remove what git made, and the
		// directory unless it was there before (then empty it).
		if rerr := s.files.fs.Remove(dir, true); rerr == nil && existed {
			s.files.fs.Mkdir(dir, mode.Perm(), false, owner)
		}
		if r.Context().Err() != nil {
			return
		}
		writeError(w, s.gitError(err, remote))
		return
	}
	writeJSON(w, http.StatusOK, api.GitCheckoutResult{
		Success: true, RepoURL: remote.String(), Branch: res.Branch, TargetDir: dir, Commit: res.Commit,
	})
}

// gitError classifies a clone's failure; remote (nil before parsing)
// tells whether credentials were given.
func (s *server) gitError(err error, remote *git.Remote) *api.Error {
	var ge *git.Error
	if !errors.As(err, &ge) {
		s.log.Error("git clone failed", "err", err)
		return api.Errorf(api.CodeInternal, "internal error in the sandbox agent")
	}
	code := map[git.Kind]api.Code{
		git.InvalidURL:     api.CodeInvalidGitURL,
		git.RepoNotFound:   api.CodeGitRepositoryNotFound,
		git.BranchNotFound: api.CodeGitBranchNotFound,
		git.AuthFailed:     api.CodeGitAuthFailed,
		git.NetworkError:   api.CodeGitNetworkError,
		git.TimedOut:       api.CodeGitCloneFailed,
		git.Failed:         api.CodeGitCloneFailed,
	}[ge.Kind]
	msg := ge.Message
	if ge.Kind == git.AuthFailed {
		if remote != nil && remote.HasCredentials() {
			msg = "the git server refused the credentials in the URL (" + msg + ")"
		} else {
			msg = "the git server wants credentials; give them in the URL, https://user:token@host/repo.git (" + msg + ")"
		}
	}
	e := api.Errorf(code, "%s", msg)
	if ge.Output != "" {
		e.Details = map[string]any{"output": truncate(ge.Output, 4096)}
	}
	if ge.Kind == git.TimedOut {
		e.Details = map[string]any{"timedOut": true}
	}
	return e
}
