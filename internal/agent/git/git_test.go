package git

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/testgit"
)

// The test binary doubles as the agent binary (git runs through the spawn
// wrapper, /proc/self/exe spawn) and as the cloner: clones run in a child
// process (see clone), because the cloner needs a reaper, which waits for
// every child of its process, and the test's own children (the git server's
// CGI runs of git http-backend) must not be reaped by it.
func TestMain(m *testing.M) {
	agenttest.MainWith(m, func() {
		if os.Getenv(clonerEnv) == "1" {
			os.Exit(clonerMain())
		}
	})
}

const clonerEnv = "SANDBOXD_GIT_TEST_CLONER"

// cloneCall is what the test asks the cloner process for, and cloneAnswer
// what it answers.
type cloneCall struct {
	URL, Branch, Dir string
	Depth            int
	Timeout          time.Duration
	CgroupRoot, Home string
}

type cloneAnswer struct {
	Result Result
	Err    *Error
	Other  string
}

func clonerMain() int {
	var call cloneCall
	if err := json.NewDecoder(os.Stdin).Decode(&call); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := reaper.New(slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go r.Run(context.Background())
	c := New(Config{
		CgroupRoot: call.CgroupRoot,
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + call.Home, "GIT_TRACE=1"},
		Reaper:     r,
	})
	var ans cloneAnswer
	remote, err := ParseURL(call.URL)
	if err == nil {
		ans.Result, err = c.Clone(context.Background(), Options{Remote: remote, Branch: call.Branch, Dir: call.Dir, Depth: call.Depth, Timeout: call.Timeout})
	}
	var ge *Error
	switch {
	case errors.As(err, &ge):
		ans.Err = ge
	case err != nil:
		ans.Other = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(ans)
	return 0
}

func needGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
}

func TestParseURL(t *testing.T) {
	good := map[string]string{
		"https://github.com/user/repo.git":         "https://github.com/user/repo.git",
		"http://alice:pw@10.0.0.1:8080/x/repo":     "http://10.0.0.1:8080/x/repo",
		"https://TOKEN@github.com/org/private.git": "https://github.com/org/private.git",
		"git://example.com/repo":                   "git://example.com/repo",
	}
	for raw, want := range good {
		r, err := ParseURL(raw)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", raw, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseURL(%q) = %q, want %q", raw, r.String(), want)
		}
	}
	for _, raw := range []string{
		"", "github.com/user/repo", "git@github.com:user/repo.git", "ssh://git@github.com/x", "file:///etc",
		"ext::sh -c touch% /tmp/pwned", "-uhttps://x/y", "https://", "https:///path", "https://host",
		"https://host/repo?x=1", "https://host/re po", "https://host/repo\n", "git://u:p@host/repo",
		"https://host/" + strings.Repeat("a", MaxURL),
	} {
		_, err := ParseURL(raw)
		var e *Error
		if !errors.As(err, &e) || e.Kind != InvalidURL {
			t.Errorf("ParseURL(%q) = %v, want InvalidURL", raw, err)
		}
	}
	if r, _ := ParseURL("https://host/a/b/my-repo.git/"); r.Name() != "my-repo" {
		t.Errorf("Name = %q", r.Name())
	}
}

func TestValidBranch(t *testing.T) {
	for _, b := range []string{"main", "feature/x", "v1.2.3", "release-2024"} {
		if !ValidBranch(b) {
			t.Errorf("%q refused", b)
		}
	}
	for _, b := range []string{"", "-x", "--upload-pack=evil", "a..b", "a b", "a:b", "x.lock", "/a", "a/", ".hidden", "a/.b", "a@{1}", "a\x00"} {
		if ValidBranch(b) {
			t.Errorf("%q accepted", b)
		}
	}
}

func TestScrub(t *testing.T) {
	r, _ := ParseURL("https://alice:s3cret-pw@host/repo.git")
	out := r.scrub([]byte("fatal: unable to access 'https://alice:s3cret-pw@host/repo.git/': x\nAuthorization: Basic YWxpY2U6czNjcmV0LXB3\nother https://bob:pw@else/x"))
	for _, leak := range []string{"s3cret-pw", "YWxpY2U6czNjcmV0LXB3", "bob:pw"} {
		if strings.Contains(out, leak) {
			t.Errorf("scrubbed output still has %q: %s", leak, out)
		}
	}
}

// clone clones url in a cloner process and returns its result.
func clone(t *testing.T, url string, o Options) (Result, error) {
	t.Helper()
	if o.Dir == "" {
		if r, err := ParseURL(url); err == nil {
			o.Dir = filepath.Join(t.TempDir(), r.Name())
		}
	}
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	call, _ := json.Marshal(cloneCall{
		URL: url, Branch: o.Branch, Dir: o.Dir, Depth: o.Depth, Timeout: o.Timeout,
		CgroupRoot: filepath.Join(t.TempDir(), "none"), Home: t.TempDir(),
	})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clonerEnv+"=1")
	cmd.Stdin = bytes.NewReader(call)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cloner process: %v", err)
	}
	var ans cloneAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("cloner answer %q: %v", out, err)
	}
	switch {
	case ans.Err != nil:
		return ans.Result, ans.Err
	case ans.Other != "":
		return ans.Result, errors.New(ans.Other)
	}
	return ans.Result, nil
}

func TestClone(t *testing.T) {
	needGit(t)
	srv := testgit.Start(t, "127.0.0.1:0")
	dir := filepath.Join(t.TempDir(), "public")
	res, err := clone(t, srv.URL+"/public.git", Options{Dir: dir})
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	if res.Branch != "main" || len(res.Commit) != 40 {
		t.Errorf("result = %+v", res)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "README.md")); string(data) != "three\nthree\nthree\n" {
		t.Errorf("README = %q", data)
	}

	t.Run("branch", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "dev")
		res, err := clone(t, srv.URL+"/public.git", Options{Dir: dir, Branch: "develop"})
		if err != nil || res.Branch != "develop" {
			t.Fatalf("clone develop = %+v, %v", res, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "DEVELOP")); err != nil {
			t.Error("DEVELOP missing")
		}
	})
	t.Run("shallow", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "shallow")
		if _, err := clone(t, srv.URL+"/public.git", Options{Dir: dir, Depth: 1}); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("git", "-C", dir, "rev-list", "--count", "HEAD").Output()
		if strings.TrimSpace(string(out)) != "1" {
			t.Errorf("%s commits in a depth-1 clone", out)
		}
	})
	for name, tc := range map[string]struct {
		url    string
		branch string
		want   Kind
	}{
		"missing repo":   {srv.URL + "/missing.git", "", RepoNotFound},
		"missing branch": {srv.URL + "/public.git", "nope", BranchNotFound},
		"no credentials": {srv.URL + "/private.git", "", AuthFailed},
		"bad password":   {srv.PrivateURL(testgit.User, "wrong-password"), "", AuthFailed},
		"closed port":    {"http://127.0.0.1:" + closedPort(t) + "/x.git", "", NetworkError},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := clone(t, tc.url, Options{Branch: tc.branch})
			var e *Error
			if !errors.As(err, &e) || e.Kind != tc.want {
				t.Fatalf("err = %#v, want kind %d", err, tc.want)
			}
			if strings.Contains(e.Message+e.Output, "wrong-password") {
				t.Errorf("the password leaked: %s / %s", e.Message, e.Output)
			}
		})
	}
}

// Credentials reach the server, and nothing else: not the command line of
// any process, not the clone's config, not the output.
func TestCloneWithCredentials(t *testing.T) {
	needGit(t)
	srv := testgit.Start(t, "127.0.0.1:0")
	srv.SetDelay(300 * time.Millisecond)
	dir := filepath.Join(t.TempDir(), "private")
	var leaked atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if where := scanCmdlines(testgit.Password); where != "" {
				leaked.Store(where)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	res, err := clone(t, srv.PrivateURL(testgit.User, testgit.Password), Options{Dir: dir})
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	if res.Branch != "main" {
		t.Errorf("result %+v", res)
	}
	if where, _ := leaked.Load().(string); where != "" {
		t.Errorf("the password was on a command line: %s", where)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, ".git", "config"))
	if strings.Contains(string(cfg), testgit.Password) || strings.Contains(string(cfg), testgit.User+"@") {
		t.Errorf(".git/config keeps the credentials:\n%s", cfg)
	}
	for _, uri := range srv.Requests() {
		if strings.Contains(uri, testgit.Password) {
			t.Errorf("request URI %q has the password", uri)
		}
	}
	if len(srv.Auths()) == 0 {
		t.Error("the server never saw credentials")
	}
}

func TestTimeoutKillsGit(t *testing.T) {
	needGit(t)
	srv := testgit.Start(t, "127.0.0.1:0")
	// The server would answer after 10 minutes: a clone that returns
	// within a minute was ended by its timeout (500 ms), whatever a
	// loaded host adds to the kill.
	srv.SetDelay(10 * time.Minute)
	start := time.Now()
	_, err := clone(t, srv.PrivateURL(testgit.User, testgit.Password), Options{Timeout: 500 * time.Millisecond})
	var e *Error
	if !errors.As(err, &e) || e.Kind != TimedOut {
		t.Fatalf("err = %v, want TimedOut", err)
	}
	t.Logf("clone returned after %s", time.Since(start))
	if d := time.Since(start); d > time.Minute {
		t.Errorf("took %s", d)
	}
	// This server's address: another test's clone of its own private.git
	// (e2e clones in sandboxes, whose processes the host lists too) may run.
	if where := scanCmdlines(strings.TrimPrefix(srv.URL, "http://") + "/private.git"); where != "" {
		t.Errorf("git still runs: %s", where)
	}
}

// scanCmdlines returns the first process whose command line contains s.
func scanCmdlines(s string) string {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(data), s) {
			return fmt.Sprintf("pid %s: %q", e.Name(), strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
	return ""
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}
