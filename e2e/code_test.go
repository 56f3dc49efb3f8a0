package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// The host image is the host's /usr: these tests need python3 with
// IPython, matplotlib, pandas and numpy, and node, as .ci/run installs.
func needCodeRuntimes(t *testing.T) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import IPython, matplotlib, pandas, numpy").Run(); err != nil {
		t.Skip("needs python3-ipython python3-matplotlib python3-pandas python3-numpy on the host:", err)
	}
	if _, err := os.Stat("/usr/bin/node"); err != nil {
		t.Skip("needs nodejs on the host")
	}
}

func codeSandbox(t *testing.T, id string) (*testdaemon.Daemon, *client.Sandbox) {
	t.Helper()
	needCodeRuntimes(t)
	d := daemon(t)
	return d, d.Client.Sandbox(id)
}

func runCode(t *testing.T, sb *client.Sandbox, code string, o client.RunCodeOptions) *api.RunCodeResult {
	t.Helper()
	res, err := sb.RunCode(ctxT(t, 2*time.Minute), code, o)
	if err != nil {
		t.Fatalf("RunCode %q: %v", code, err)
	}
	return res
}

func mainText(res *api.RunCodeResult) string {
	for _, r := range res.Results {
		if r.IsMainResult {
			return r.Text
		}
	}
	return ""
}

// The reference's examples, verbatim.
func TestCodeReferenceExamples(t *testing.T) {
	needCodeRuntimes(t)
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("code-ref")
		ctx := ctxT(t, 2*time.Minute)
		c, err := sb.CreateCodeContext(ctx, client.CodeContextOptions{Language: api.LanguagePython})
		if err != nil {
			t.Fatal(err)
		}
		if c.Language != "python" || c.Cwd != "/workspace" || c.ID == "" || c.CreatedAt.IsZero() {
			t.Errorf("context %+v", c)
		}
		in := client.RunCodeOptions{Context: c.ID}
		runCode(t, sb, "import math; radius = 5", in)
		if got := runCode(t, sb, "math.pi * radius ** 2", in); got.Results[0].Text != "78.53981633974483" {
			t.Errorf("area = %+v", got.Results)
		}

		res := runCode(t, sb, "\ndata = [1, 2, 3, 4, 5]\nprint(f\"Sum: {sum(data)}\")\nsum(data)\n", client.RunCodeOptions{Language: "python"})
		if fmt.Sprint(res.Logs.Stdout) != "[Sum: 15]" || res.Results[0].Text != "15" {
			t.Errorf("print + last expression: %+v", res)
		}

		res = runCode(t, sb, "x = 1 / 0", client.RunCodeOptions{Language: "python"})
		if res.Error == nil || res.Error.Name != "ZeroDivisionError" || res.Error.Value != "division by zero" || len(res.Error.Traceback) == 0 {
			t.Errorf("error = %+v", res.Error)
		}

		res = runCode(t, sb, "\nimport matplotlib.pyplot as plt\nimport numpy as np\n\n\nx = np.linspace(0, 10, 100)\nplt.plot(x, np.sin(x))\nplt.show()\n", client.RunCodeOptions{Language: "python"})
		if len(res.Results) == 0 || res.Results[0].PNG == "" {
			t.Fatalf("sine chart: %+v (stderr %q)", res.Results, res.Logs.Stderr)
		}
		raw, err := base64.StdEncoding.DecodeString(res.Results[0].PNG)
		if err != nil || !bytes.HasPrefix(raw, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("not a PNG: %v", err)
		}
		if img, err := png.Decode(bytes.NewReader(raw)); err != nil || img.Bounds().Dx() < 100 {
			t.Errorf("decoding the chart: %v", err)
		}

		res = runCode(t, sb, "\nimport pandas as pd\ndf = pd.DataFrame({'Name': ['Alice', 'Bob'], 'Age': [25, 30]})\ndf\n", client.RunCodeOptions{Language: "python"})
		if len(res.Results) != 1 || !strings.Contains(res.Results[0].HTML, "<table") || !strings.Contains(res.Results[0].HTML, "Alice") || !strings.Contains(res.Results[0].Text, "Bob") {
			t.Errorf("DataFrame: %+v", res.Results)
		}

		list, err := sb.ListCodeContexts(ctx)
		if err != nil || len(list) != 2 || list[0].ID != c.ID || list[1].ID != "default-python" {
			t.Errorf("list = %+v, %v", list, err)
		}
		if err := sb.DeleteCodeContext(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		if err := sb.DeleteCodeContext(ctx, c.ID); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("second delete: %v", err)
		}
		if _, err := sb.RunCode(ctx, "1", client.RunCodeOptions{Context: c.ID}); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("run in a deleted context: %v", err)
		}
	})
}

func TestCodeStreamsLive(t *testing.T) {
	_, sb := codeSandbox(t, "code-live")
	st, err := sb.RunCodeStream(ctxT(t, 2*time.Minute), "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)\n'done'", client.RunCodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var arrivals []time.Time
	var kinds []string
	for ev, err := range st.All() {
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Type)
		if ev.Type == api.CodeEventStdout {
			arrivals = append(arrivals, time.Now())
		}
	}
	if strings.Join(kinds, ",") != "start,stdout,stdout,stdout,result,complete" {
		t.Fatalf("events %v", kinds)
	}
	if gap := arrivals[2].Sub(arrivals[0]); gap < 500*time.Millisecond {
		t.Errorf("output was buffered: the lines arrived within %s", gap)
	}
}

func TestCodeJavaScriptAndTypeScript(t *testing.T) {
	needCodeRuntimes(t)
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("code-js")
		js := client.RunCodeOptions{Language: api.LanguageJavaScript}
		runCode(t, sb, "const base = await Promise.resolve(40); let n = 1;", js)
		res := runCode(t, sb, "n += 1; console.log('n is', n); ({total: base + n})", js)
		if len(res.Results) != 1 || string(res.Results[0].JSON) != `{"total":42}` || fmt.Sprint(res.Logs.Stdout) != "[n is 2]" {
			t.Errorf("js: %+v", res)
		}
		ts := client.RunCodeOptions{Language: api.LanguageTypeScript}
		res = runCode(t, sb, "interface Point { x: number; y: number }\nconst p: Point = { x: 3, y: 4 };\nconst len: number = Math.hypot(p.x, p.y);\nlen", ts)
		if mainText(res) != "5" || res.Error != nil {
			t.Errorf("ts: %+v", res)
		}
		res = runCode(t, sb, "const wrong: string = 42; wrong", ts)
		if mainText(res) != "42" {
			t.Errorf("a type error blocked the run: %+v", res)
		}
		res = runCode(t, sb, "const = 1", ts)
		if res.Error == nil || res.Error.Name != "SyntaxError" {
			t.Errorf("syntax error: %+v", res.Error)
		}
		// JS and TS default contexts are separate processes.
		if res := runCode(t, sb, "typeof base", ts); mainText(res) != "'undefined'" {
			t.Errorf("ts sees js state: %+v", res)
		}
	})
}

func TestCodeTimeoutKeepsStateAndCrashKillsOnlyItsContext(t *testing.T) {
	_, sb := codeSandbox(t, "code-fail")
	ctx := ctxT(t, 2*time.Minute)
	a, err := sb.CreateCodeContext(ctx, client.CodeContextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := sb.CreateCodeContext(ctx, client.CodeContextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inA, inB := client.RunCodeOptions{Context: a.ID}, client.RunCodeOptions{Context: b.ID}
	runCode(t, sb, "kept = 'a-state'", inA)
	runCode(t, sb, "kept = 'b-state'", inB)

	inA.Timeout = time.Second
	start := time.Now()
	res := runCode(t, sb, "import time\nwhile True: time.sleep(0.05)", inA)
	// Without the timeout the loop runs until ctx's end (2 minutes).
	if res.Error == nil || res.Error.Name != "TimeoutError" || time.Since(start) > 60*time.Second {
		t.Errorf("timeout: %+v after %s", res.Error, time.Since(start))
	}
	inA.Timeout = 0
	if res := runCode(t, sb, "kept", inA); mainText(res) != "'a-state'" {
		t.Errorf("state after the timeout: %+v", res)
	}

	_, err = sb.RunCode(ctx, "import os; os._exit(1)", inA)
	if !errors.Is(err, client.ErrContextTerminated) {
		t.Fatalf("crash: %v", err)
	}
	if c, err := sb.CodeContext(ctx, a.ID); err != nil || c.Status != api.ContextTerminated {
		t.Errorf("crashed context: %+v %v", c, err)
	}
	if _, err := sb.RunCode(ctx, "1", inA); !errors.Is(err, client.ErrContextTerminated) {
		t.Errorf("run in a crashed context: %v", err)
	}
	if res := runCode(t, sb, "kept", inB); mainText(res) != "'b-state'" {
		t.Errorf("the other context: %+v", res)
	}
}

// The reference had a bug with contexts created at once.
func TestCodeParallelContextsAreIsolated(t *testing.T) {
	_, sb := codeSandbox(t, "code-par")
	ctx := ctxT(t, 4*time.Minute)
	const n = 6
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			lang := []api.CodeLanguage{"python", "javascript"}[i%2]
			c, err := sb.CreateCodeContext(ctx, client.CodeContextOptions{Language: lang, Env: map[string]string{"WHO": fmt.Sprint(i)}})
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			ids[i] = c.ID
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[string]bool{}
	for i, id := range ids {
		seen[id] = true
		code := "import os\nmine = os.environ['WHO']\nmine"
		if i%2 == 1 {
			code = "var mine = process.env.WHO; mine"
		}
		runCode(t, sb, code, client.RunCodeOptions{Context: id})
	}
	for i, id := range ids {
		res := runCode(t, sb, "mine", client.RunCodeOptions{Context: id})
		if want := fmt.Sprintf("'%d'", i); mainText(res) != want {
			t.Errorf("context %d: mine = %q, want %q", i, mainText(res), want)
		}
	}
	list, err := sb.ListCodeContexts(ctx)
	if len(seen) != n || err != nil || len(list) != n {
		t.Errorf("ids %v; list %d %v", ids, len(list), err)
	}
	// Deleting a context frees its process.
	res := runCode(t, sb, "import os; os.getpid()", client.RunCodeOptions{Context: ids[0]})
	pid := mainText(res)
	if err := sb.DeleteCodeContext(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	out, err := sb.Exec(ctx, "test -e /proc/"+pid+" && cat /proc/"+pid+"/cmdline; echo gone")
	if err != nil || strings.TrimSpace(out.Stdout) != "gone" {
		t.Errorf("process %s after delete: %q %v", pid, out.Stdout, err)
	}
}

// The CLI is the subject here: run-code streams, prints text results and
// writes images with --out.
func TestCodeCLI(t *testing.T) {
	d, _ := codeSandbox(t, "code-cli")
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(testdaemon.BinDir(t), "sandbox"), "run-code", "--out", out, "code-cli", "-")
	cmd.Env = append(os.Environ(), "SANDBOX_URL="+d.URL, "SANDBOX_TOKEN="+d.Token)
	cmd.Stdin = strings.NewReader("import matplotlib.pyplot as plt\nprint('plotting')\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n6 * 7\n")
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("run-code: %v\n%s", err, stdout)
	}
	img := filepath.Join(out, "result-1.png")
	if want := "plotting\n[" + img + "]\n42\n"; string(stdout) != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(data)); err != nil {
		t.Errorf("image: %v", err)
	}
	list := exec.Command(filepath.Join(testdaemon.BinDir(t), "sandbox"), "contexts", "code-cli")
	list.Env = cmd.Env
	if got, err := list.Output(); err != nil || !strings.Contains(string(got), "default-python") {
		t.Errorf("contexts: %s %v", got, err)
	}
}
