package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
)

func newGitCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "git",
		Short: "Git operations in a sandbox: clone",
	}
	cmd.AddCommand(newGitCloneCommand(g))
	return cmd
}

func newGitCloneCommand(g *globals) *cobra.Command {
	var (
		branch, dir, session, authEnv string
		depth                         int
		timeout                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "clone [--branch B] [--depth N] [--dir D] ID URL",
		Short: "Clone a repository into a sandbox",
		Long: `Clone the repository URL (http, https or git) into the sandbox, by default
into /workspace/<repository name>, and print what was checked out.

Credentials for a private repository may be in the URL
(https://user:token@host/repo.git), or, to keep them off this machine's
command line too, in an environment variable named by --auth-env, as
user:token. Either way the sandbox uses them for this clone only: they are
not stored in the clone, not logged, and never on a command line there.`,
		Example: `  sandbox git clone demo https://github.com/user/repo
  sandbox git clone --branch develop --depth 1 --dir /workspace/app demo https://github.com/user/app.git
  GIT_AUTH=alice:ghp_xxx sandbox git clone --auth-env GIT_AUTH demo https://github.com/org/private.git`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo := args[1]
			if authEnv != "" {
				cred := g.e.getenv(authEnv)
				user, pass, ok := strings.Cut(cred, ":")
				if !ok || user == "" {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--auth-env %s: the variable must hold user:token", authEnv)}
				}
				u, err := url.Parse(repo)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--auth-env needs an http or https URL")}
				}
				u.User = url.UserPassword(user, pass)
				repo = u.String()
			}
			var opts []client.GitOption
			if branch != "" {
				opts = append(opts, client.WithBranch(branch))
			}
			if depth != 0 {
				opts = append(opts, client.WithDepth(depth))
			}
			if dir != "" {
				opts = append(opts, client.WithTargetDir(dir))
			}
			if timeout != 0 {
				opts = append(opts, client.WithCloneTimeout(timeout))
			}
			if session != "" {
				opts = append(opts, client.InSession(session))
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.Sandbox(args[0]).GitCheckout(cmd.Context(), repo, opts...)
			if err != nil {
				return err
			}
			commit := res.Commit
			if len(commit) > 12 {
				commit = commit[:12]
			}
			fmt.Fprintf(g.e.stdout, "cloned %s (branch %s, commit %s) into %s\n", oneLine(res.RepoURL), oneLine(res.Branch), commit, oneLine(res.TargetDir))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&branch, "branch", "b", "", "branch or tag to check out (default: the remote's default branch)")
	fl.IntVar(&depth, "depth", 0, "shallow clone with this many commits")
	fl.StringVar(&dir, "dir", "", "directory to clone into (default /workspace/<repository name>)")
	fl.DurationVar(&timeout, "timeout", 0, "stop the clone after this long (default 10m)")
	fl.StringVar(&session, "session", "", "resolve a relative --dir in this session")
	fl.StringVar(&authEnv, "auth-env", "", "environment variable holding user:token for the repository")
	return cmd
}
