package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
	"github.com/sandboxd/sandboxd/internal/testgit"
)

// gitSandbox starts a git server on the host side of a sandbox link and
// returns a sandbox allowed to reach it (the pattern of the network tests:
// a probe sandbox's gateway is the host address the server listens on).
func gitSandbox(t *testing.T, name string) (*testdaemon.Daemon, *client.Sandbox, *testgit.Server, string) {
	t.Helper()
	d := daemon(t)
	probe, err := d.Client.Sandbox(name+"-probe", client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet})).Ensure(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	gw := probe.Network.Gateway
	if gw == "" {
		t.Fatalf("no gateway: %+v", probe.Network)
	}
	srv := testgit.Start(t, gw+":0")
	sb := d.Client.Sandbox(name, client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet, AllowHostCIDRs: []string{gw + "/32"}}))
	t.Cleanup(func() {
		if logs := d.Logs(); strings.Contains(logs, testgit.Password) {
			t.Error("the daemon's log holds the git password")
		}
		// The agents' logs, kept in the state directory.
		logs := 0
		filepath.WalkDir(d.StateDir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Name() == "agent.log" {
				logs++
				if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(testgit.Password)) {
					t.Errorf("%s holds the git password", p)
				}
			}
			return nil
		})
		if logs == 0 {
			t.Error("no agent log to check")
		}
	})
	return d, sb, srv, gw
}

func TestFilesGitCheckout(t *testing.T) {
	d, sb, srv, gw := gitSandbox(t, "git")
	ctx := ctxT(t, 3*time.Minute)

	res, err := sb.GitCheckout(ctx, srv.URL+"/public.git")
	if err != nil {
		t.Fatal(err)
	}
	if res.TargetDir != "/workspace/public" || res.Branch != "main" || len(res.Commit) != 40 || res.RepoURL != srv.URL+"/public.git" {
		t.Errorf("result = %+v", res)
	}
	if got := trim(run(t, sb, "git -C /workspace/public rev-list --count HEAD; cat /workspace/public/README.md | wc -l")); got != "3\n3" {
		t.Errorf("full clone: %q", got)
	}

	t.Run("shallow", func(t *testing.T) {
		if _, err := sb.GitCheckout(ctx, srv.URL+"/public.git", client.WithDepth(1), client.WithTargetDir("/workspace/shallow")); err != nil {
			t.Fatal(err)
		}
		if got := trim(run(t, sb, "git -C /workspace/shallow rev-list --count HEAD")); got != "1" {
			t.Errorf("%s commits in a depth-1 clone", got)
		}
	})
	t.Run("branch into a relative directory", func(t *testing.T) {
		run(t, sb, "cd /workspace")
		res, err := sb.GitCheckout(ctx, srv.URL+"/public.git", client.WithBranch("develop"), client.WithTargetDir("dev"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Branch != "develop" || res.TargetDir != "/workspace/dev" {
			t.Errorf("result = %+v", res)
		}
		if got := trim(run(t, sb, "cat /workspace/dev/DEVELOP")); got != "dev" {
			t.Errorf("DEVELOP = %q", got)
		}
	})
	t.Run("as a session's user", func(t *testing.T) {
		se, err := sb.CreateSession(ctx, client.WithSessionID("bob-work"), client.AsUser("bob"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := se.GitCheckout(ctx, srv.URL+"/public.git", client.WithTargetDir("/workspace/bobs"))
		if err != nil || res.TargetDir != "/workspace/bobs" {
			t.Fatalf("clone = %+v, %v", res, err)
		}
		if got := trim(run(t, sb, "stat -c %U /workspace/bobs /workspace/bobs/README.md /workspace/bobs/.git/config")); got != "bob\nbob\nbob" {
			t.Errorf("owners: %q", got)
		}
	})
	t.Run("the CLI", func(t *testing.T) {
		out, errOut, code := cli(t, d, "", "git", "clone", "--branch", "develop", "--depth", "1", "--dir", "/workspace/cli-clone", "git", srv.URL+"/public.git")
		if code != 0 || !strings.HasPrefix(out, "cloned "+srv.URL+"/public.git (branch develop, commit ") || !strings.HasSuffix(out, ") into /workspace/cli-clone\n") {
			t.Errorf("sandbox git clone: exit %d, %q %s", code, out, errOut)
		}
		_, errOut, code = cli(t, d, "", "git", "clone", "git", srv.URL+"/missing.git")
		if code != 125 || !strings.Contains(errOut, "GIT_REPOSITORY_NOT_FOUND") {
			t.Errorf("missing repository: exit %d, %s", code, errOut)
		}
	})
	t.Run("private repository with credentials", func(t *testing.T) {
		srv.SetDelay(700 * time.Millisecond)
		defer srv.SetDelay(0)
		// Every process on the host, the sandbox's included, is checked
		// while the clone runs.
		var leaked atomic.Value
		stop := make(chan struct{})
		scanned := make(chan struct{})
		go func() {
			defer close(scanned)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if where := cmdlineContaining(testgit.Password); where != "" {
					leaked.Store(where)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		res, err := sb.GitCheckout(ctx, srv.PrivateURL(testgit.User, testgit.Password), client.WithTargetDir("/workspace/private"))
		close(stop)
		<-scanned
		if err != nil {
			t.Fatal(err)
		}
		if where, _ := leaked.Load().(string); where != "" {
			t.Errorf("the password was on a command line: %s", where)
		}
		if strings.Contains(res.RepoURL, testgit.Password) || strings.Contains(res.RepoURL, testgit.User) {
			t.Errorf("result URL %q carries the credentials", res.RepoURL)
		}
		if code, out := exitOf(t, sb, "grep -r "+testgit.Password+" /workspace/private/.git"); code == 0 {
			t.Errorf("the clone stores the password: %s", out)
		}
		if len(srv.Auths()) == 0 {
			t.Error("the server saw no credentials")
		}
	})
	t.Run("failures", func(t *testing.T) {
		cases := []struct {
			url  string
			opts []client.GitOption
			want api.Code
		}{
			{srv.URL + "/missing.git", nil, api.CodeGitRepositoryNotFound},
			{srv.URL + "/public.git", []client.GitOption{client.WithBranch("no-such-branch"), client.WithTargetDir("/workspace/nobranch")}, api.CodeGitBranchNotFound},
			{srv.URL + "/private.git", []client.GitOption{client.WithTargetDir("/workspace/noauth")}, api.CodeGitAuthFailed},
			{srv.PrivateURL(testgit.User, "wrong-"+testgit.Password), []client.GitOption{client.WithTargetDir("/workspace/badauth")}, api.CodeGitAuthFailed},
			{fmt.Sprintf("http://%s:1/x.git", gw), nil, api.CodeGitNetworkError},
			{"file:///etc", nil, api.CodeInvalidGitURL},
			{"ext::sh -c touch% /tmp/pwned", nil, api.CodeInvalidGitURL},
			{"git@github.com:user/repo.git", nil, api.CodeInvalidGitURL},
			{srv.URL + "/public.git", []client.GitOption{client.WithTargetDir("/workspace/public")}, api.CodeFileExists},
			{srv.URL + "/public.git", []client.GitOption{client.WithBranch("--upload-pack=touch /tmp/pwned")}, api.CodeValidationFailed},
		}
		for _, c := range cases {
			_, err := sb.GitCheckout(ctx, c.url, c.opts...)
			if codeOf(err) != c.want {
				t.Errorf("%s: %v, want %s", c.url, err, c.want)
			}
			var e *client.Error
			if err != nil && (strings.Contains(err.Error(), testgit.Password) || errors.As(err, &e) && strings.Contains(fmt.Sprint(e.Details), testgit.Password)) {
				t.Errorf("%s: the error shows the password: %v", c.url, err)
			}
		}
		for _, dir := range []string{"/workspace/nobranch", "/workspace/noauth", "/workspace/badauth", "/tmp/pwned"} {
			if ok, _ := sb.Exists(ctx, dir); ok {
				t.Errorf("%s is left behind", dir)
			}
		}
	})
}

// cmdlineContaining returns a process of this host whose command line holds
// s.
func cmdlineContaining(s string) string {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(data), s) {
			return fmt.Sprintf("pid %s: %q", e.Name(), strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
	return ""
}
