package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// chromiumPath is Debian's Chromium (apt-get install chromium); the tests
// never download a browser.
const chromiumPath = "/usr/bin/chromium"

// artifactDir is where browser tests leave their screenshots
// (e2e/testdata/artifacts/<test>, ignored by git).
func artifactDir(t *testing.T) string {
	dir := filepath.Join("testdata", "artifacts", t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	t.Logf("screenshots in %s", abs)
	return abs
}

// browser starts a headless Chromium with a fresh profile and returns a
// chromedp context for one tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Skip("chromium is not installed (apt-get install chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

// waitText polls the text of the element sel until it contains want.
func waitText(t *testing.T, ctx context.Context, sel, want string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		if strings.Contains(text, want) {
			return text
		}
		if time.Now().After(deadline) {
			screenshot(t, ctx, artifactDir(t), "failed")
			t.Fatalf("%s never showed %q; it shows:\n%s\nthe page's state:\n%s", sel, want, text, pageState(ctx))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pageState is what explains a page that never showed what a test waited
// for: every error the console shows (its #...-error elements: a call that
// failed explains a list that never changed), the terminal's status line
// (attached or started anew) and its size in rows.
func pageState(ctx context.Context) string {
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[
		...[...document.querySelectorAll('[id$="-error"]')].filter((e) => e.innerText.trim()).map((e) => e.id + ": " + e.innerText.trim()),
		"terminal: " + (document.querySelector("#term-status") || {}).innerText + ", " + (document.querySelector(".xterm-rows") || {children: []}).children.length + " rows",
	].join("\n")`))
	if err != nil {
		return err.Error()
	}
	return text
}

// screenshot saves what the page shows in its viewport, where the console
// lays everything out. Not a full-page capture: that lays the page out
// anew beyond the viewport for a moment, and on a loaded host the
// console's resize observer ran within that moment, saw the terminal
// collapsed and resized the shell's terminal to 2 columns; bash, at the
// real width again, redrew its prompt by erasing the 12 lines above it,
// and a client that attached later was replayed a screen that showed
// only a prompt.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Error(err)
	}
}

// steps returns a function that runs a step's browser actions and, when
// they fail, leaves a screenshot in shots and fails the test naming the
// step.
func steps(t *testing.T, ctx context.Context, shots string) func(what string, actions ...chromedp.Action[chromedp.Void]) {
	return func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			screenshot(t, ctx, shots, "failed")
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func TestConsoleInABrowser(t *testing.T) {
	d := daemon(t)
	ctx := browser(t)
	shots := artifactDir(t)
	do := steps(t, ctx, shots)
	sockets := recordTerminalSockets(ctx)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the page's terminal sockets:\n%s", sockets)
		}
	})

	// Sign in: a wrong token is refused, the right one lets us in.
	do("open the console", chromedp.Navigate(d.URL+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	do("wrong token", chromedp.SendKeys(chromedp.ID("token"), "not-the-token"), chromedp.Click(chromedp.ID("login")))
	waitText(t, ctx, "#login-error", "not valid")
	screenshot(t, ctx, shots, "01-login-refused")
	do("sign in",
		chromedp.SetValue(chromedp.ID("token"), d.Token),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("main-view")))

	// Create a sandbox; it is listed and opens on its terminal.
	do("create",
		chromedp.SendKeys(chromedp.ID("new-id"), "browser"),
		chromedp.Click(chromedp.ID("create")),
		chromedp.WaitVisible(chromedp.CSS(`#sandbox-list li[data-sandbox="browser"]`)))
	waitText(t, ctx, `#sandbox-list li[data-sandbox="browser"]`, "running")

	// The terminal: type a command, see its output.
	waitText(t, ctx, "#term-status", "terminal")
	waitText(t, ctx, ".xterm-rows", "root@browser:/workspace#")
	typeInTerminal(t, ctx, "echo hello-from-$((1+1))-browser")
	rows := waitText(t, ctx, ".xterm-rows", "hello-from-2-browser")
	if !strings.Contains(rows, "echo hello-from-$((1+1))-browser") {
		t.Errorf("the terminal does not show the typed command:\n%s", rows)
	}
	screenshot(t, ctx, shots, "02-terminal")

	// The terminal's box collapses for a moment (a page laid out anew: a
	// full-page capture did it) and comes back: the shell's size is left
	// alone, so its screen keeps the lines above the prompt. (Resized to 2
	// columns and back, bash erased them.)
	before := len(sockets.resizes())
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(async () => {
		const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
		const box = document.querySelector("#terminal");
		box.style.width = "0px";
		await frames();
		box.style.width = "";
		await frames();
		return true;
	})()`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // for the socket events, and a shell's redraw
	for _, r := range sockets.resizes()[before:] {
		if r.Cols < 10 {
			t.Errorf("a collapsed box resized the shell to %dx%d", r.Cols, r.Rows)
		}
	}
	if rows := waitText(t, ctx, ".xterm-rows", "hello-from-2-browser"); !strings.Contains(rows, "echo hello-from-$((1+1))-browser") {
		t.Errorf("after the box collapsed, the terminal lost the typed command:\n%s", rows)
	}

	// Files: upload a file into /workspace and see it listed; open it.
	local := filepath.Join(t.TempDir(), "from-browser.txt")
	os.WriteFile(local, []byte("uploaded through the console\n"), 0o644)
	do("files tab", chromedp.Click(chromedp.CSS(`.tabs button[data-tab="files"]`)), chromedp.WaitVisible(chromedp.ID("tab-files")))
	do("upload",
		chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{local}),
		chromedp.Click(chromedp.ID("upload")),
		chromedp.WaitVisible(chromedp.CSS(`#file-list tr[data-file="from-browser.txt"]`)))
	do("view", chromedp.Click(chromedp.CSS(`#file-list tr[data-file="from-browser.txt"] a`)))
	waitText(t, ctx, "#viewer-body", "uploaded through the console")
	screenshot(t, ctx, shots, "03-files")
	if got := trim(run(t, d.Client.Sandbox("browser"), "cat /workspace/from-browser.txt")); got != "uploaded through the console" {
		t.Errorf("the sandbox has %q", got)
	}

	// Processes: start a background process and watch its logs arrive
	// live; it is listed with its exit status.
	do("processes tab", chromedp.Click(chromedp.CSS(`.tabs button[data-tab="processes"]`)))
	do("start", chromedp.SendKeys(chromedp.ID("start-command"), "for i in 1 2 3; do echo tick-$i; sleep 0.3; done"),
		chromedp.Click(chromedp.ID("start")))
	waitText(t, ctx, "#log-output", "tick-1")
	waitText(t, ctx, "#log-output", "[completed with status 0]")
	if logs := waitText(t, ctx, "#log-output", "tick-3"); !strings.Contains(logs, "tick-2") {
		t.Errorf("logs: %q", logs)
	}
	waitText(t, ctx, "#proc-list", "completed (0)")
	do("all processes", chromedp.Click(chromedp.CSS("#ps-details summary")))
	waitText(t, ctx, "#ps-list", "/.sandboxd/agent")
	screenshot(t, ctx, shots, "04-processes")

	// Ports: a service in the sandbox, exposed from the console, opened at
	// its preview URL.
	testdaemon.StartTestServer(t, d.Client.Sandbox("browser"), "0.0.0.0:8080")
	do("ports tab", chromedp.Click(chromedp.CSS(`.tabs button[data-tab="ports"]`)))
	do("expose",
		chromedp.SendKeys(chromedp.ID("expose-port"), "8080"),
		chromedp.SendKeys(chromedp.ID("expose-name"), "web"),
		chromedp.Click(chromedp.ID("expose")),
		chromedp.WaitVisible(chromedp.CSS(`#port-list a[data-port="8080"]`)))
	screenshot(t, ctx, shots, "05-ports")
	attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`#port-list a[data-port="8080"]`), "href"))
	if err != nil {
		t.Fatal(err)
	}
	href := attr.Value
	if !strings.Contains(href, "8080-browser-") || !strings.Contains(href, ".localhost:") {
		t.Fatalf("preview link %q", href)
	}
	// *.localhost is loopback to the browser itself.
	do("preview", chromedp.Navigate(href), chromedp.WaitVisible(chromedp.ID("greeting")))
	waitText(t, ctx, "#greeting", "hello from browser")
	screenshot(t, ctx, shots, "06-preview")

	// Back in the console (signed in still: the token is kept for the tab),
	// destroy the sandbox.
	do("back", chromedp.Navigate(d.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`#sandbox-list li[data-sandbox="browser"]`)),
		chromedp.Click(chromedp.CSS(`#sandbox-list li[data-sandbox="browser"]`)))
	// The terminal reattaches and shows the recent screen. (Once in ~10
	// runs under load it showed only a prompt: the shell had erased the
	// lines above it after a resize to 2 columns and back, which a
	// full-page screenshot caused; see screenshot. What the terminal
	// replays, and the page's socket log, tell the agent's side from the
	// page's.)
	t.Cleanup(func() {
		if t.Failed() {
			logTerminalReplay(t, d.Client.Sandbox("browser"), "console")
		}
	})
	waitText(t, ctx, ".xterm-rows", "hello-from-2-browser")
	screenshot(t, ctx, shots, "07-reattached")

	// Destroy it (accepting the confirmation).
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	do("destroy", chromedp.Click(chromedp.ID("destroy")), chromedp.WaitVisible(chromedp.ID("empty")))
	if _, err := d.Client.Sandbox("browser").Info(ctxT(t, 10*time.Second)); err == nil {
		t.Error("the sandbox still exists after Destroy in the console")
	}
	screenshot(t, ctx, shots, "08-destroyed")
}

// socketLog is what the page's terminal WebSockets sent and received,
// as the browser's network domain reports it: it tells what the page got
// from what it showed.
type socketLog struct {
	mu       sync.Mutex
	start    time.Time
	terminal map[network.RequestID]int // terminal sockets, numbered from 1
	events   []socketEvent
}

type socketEvent struct {
	at     time.Duration
	id     network.RequestID
	what   string
	resize *api.TerminalMessage // a resize the page sent
}

// recordTerminalSockets records, until ctx ends, the frames of every
// terminal WebSocket the page opens from now on.
func recordTerminalSockets(ctx context.Context) *socketLog {
	l := &socketLog{start: time.Now(), terminal: map[network.RequestID]int{}}
	add := func(id network.RequestID, resize *api.TerminalMessage, format string, args ...any) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.events = append(l.events, socketEvent{at: time.Since(l.start), id: id, what: fmt.Sprintf(format, args...), resize: resize})
	}
	frame := func(f *network.WebSocketFrame) string {
		if f == nil {
			return "nothing"
		}
		if f.Opcode == 1 {
			return fmt.Sprintf("text %s", f.PayloadData)
		}
		return fmt.Sprintf("binary %d bytes %q", len(f.PayloadData), f.PayloadData)
	}
	// Subscribed before the page can open a socket; read each in its own
	// goroutine.
	created := chromedp.Events(ctx, network.WebSocketCreated)
	received := chromedp.Events(ctx, network.WebSocketFrameReceived)
	sent := chromedp.Events(ctx, network.WebSocketFrameSent)
	closed := chromedp.Events(ctx, network.WebSocketClosed)
	go func() {
		for ev, err := range created {
			if err != nil {
				return
			}
			if strings.Contains(ev.URL, "/terminal") {
				l.mu.Lock()
				l.terminal[ev.RequestID] = len(l.terminal) + 1
				l.mu.Unlock()
				add(ev.RequestID, nil, "created %s", ev.URL)
			}
		}
	}()
	go func() {
		for ev, err := range received {
			if err != nil {
				return
			}
			add(ev.RequestID, nil, "received %s", frame(ev.Response))
		}
	}()
	go func() {
		for ev, err := range sent {
			if err != nil {
				return
			}
			var resize *api.TerminalMessage
			var msg api.TerminalMessage
			if ev.Response != nil && ev.Response.Opcode == 1 && json.Unmarshal(ev.Response.PayloadData, &msg) == nil && msg.Type == api.TerminalResize {
				resize = &msg
			}
			add(ev.RequestID, resize, "sent %s", frame(ev.Response))
		}
	}()
	go func() {
		for ev, err := range closed {
			if err != nil {
				return
			}
			add(ev.RequestID, nil, "closed")
		}
	}()
	return l
}

// resizes returns the resizes the page sent on terminal sockets.
func (l *socketLog) resizes() []api.TerminalMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.TerminalMessage
	for _, e := range l.events {
		if e.resize != nil && l.terminal[e.id] > 0 {
			out = append(out, *e.resize)
		}
	}
	return out
}

func (l *socketLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, e := range l.events {
		if n := l.terminal[e.id]; n > 0 {
			fmt.Fprintf(&b, "%7.3fs socket %d %s\n", e.at.Seconds(), n, e.what)
		}
	}
	return b.String()
}

// logTerminalReplay logs what a new client of terminal id gets first: the
// terminal's replay of its recent output.
func logTerminalReplay(t *testing.T, sb *client.Sandbox, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	term, err := sb.Terminal(ctx, client.TerminalOptions{ID: id})
	if err != nil {
		t.Logf("attaching to terminal %q: %v", id, err)
		return
	}
	defer term.Close()
	r := readTerminal(term)
	time.Sleep(2 * time.Second)
	out := r.String()
	t.Logf("terminal %q replays %d bytes, ending: %q", id, len(out), out[max(0, len(out)-4096):])
}

// typeInTerminal types a line into the xterm.js terminal as a user would:
// the text as one input event, then the Enter key. (chromedp's SendKeys
// sends both a key and a character event per key, which xterm.js takes as
// two keystrokes.)
func typeInTerminal(t *testing.T, ctx context.Context, line string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(".xterm-helper-textarea"))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, input.InsertText, input.InsertTextParams{Text: line}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
		_, err := chromedp.Call(ctx, input.DispatchKeyEvent, input.DispatchKeyEventParams{
			Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsoleShowsTheNewestProcessList: an answer to an older call for the
// process list never replaces a newer one on screen. The browser's
// connections can answer out of order on a loaded host (the thirteenth
// stop's intermediate CI: the list went on showing a process running after
// its log's "[completed with status 0]"). Here the browser holds, by Fetch
// interception, the list asked for when the processes tab opened: it
// reaches the daemon only once the process runs, so it lists it running,
// and the page gets it only after the list asked for at the process's end
// was shown.
func TestConsoleShowsTheNewestProcessList(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("lists")
	if _, err := sb.Ensure(ctxT(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	ctx := browser(t)
	shots := artifactDir(t)
	do := steps(t, ctx, shots)
	do("sign in",
		chromedp.Navigate(d.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), d.Token),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS(`#sandbox-list li[data-sandbox="lists"]`)))

	lists := heldProcessLists(t, ctx, "lists")
	do("open the sandbox's processes",
		chromedp.Click(chromedp.CSS(`#sandbox-list li[data-sandbox="lists"]`)),
		chromedp.Click(chromedp.CSS(`.tabs button[data-tab="processes"]`)))
	opened := nextList(t, lists) // held before it reaches the daemon

	const done = "/tmp/console-list-order-done"
	do("start", chromedp.SendKeys(chromedp.ID("start-command"),
		"echo started; while [ ! -e "+done+" ]; do sleep 0.05; done"),
		chromedp.Click(chromedp.ID("start")))
	nextList(t, lists).pass(t, ctx) // the start's own list
	waitText(t, ctx, "#log-output", "started")
	waitText(t, ctx, "#proc-list", "running")

	// The tab's list reaches the daemon now, while the process runs, and
	// its answer is held on its way back.
	opened.passHoldingTheAnswer(t, ctx)
	answer := nextList(t, lists)
	if body := answer.body(t, ctx); !strings.Contains(body, `"status":"running"`) {
		t.Fatalf("the held answer does not list the process running: %s", body)
	}

	run(t, sb, "touch "+done)
	waitText(t, ctx, "#log-output", "[completed with status 0]")
	nextList(t, lists).pass(t, ctx) // the list asked for at the end
	waitText(t, ctx, "#proc-list", "completed (0)")
	screenshot(t, ctx, shots, "01-completed")

	// The older answer comes last; the page must not show it.
	answer.pass(t, ctx)
	for range 30 {
		time.Sleep(100 * time.Millisecond)
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#proc-list").innerText`))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "completed (0)") {
			screenshot(t, ctx, shots, "failed")
			t.Fatalf("an older answer replaced the newer list; it shows:\n%s", text)
		}
	}
}

// heldList is a call for a sandbox's process list paused by the browser,
// before it was sent (Fetch's request stage) or before its answer reached
// the page (response stage).
type heldList struct{ ev *fetch.EventRequestPaused }

// heldProcessLists pauses every GET of sandbox id's process list and sends
// it on the channel; every other call to the process API goes on.
func heldProcessLists(t *testing.T, ctx context.Context, id string) <-chan heldList {
	t.Helper()
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	pattern := "*/v1/sandboxes/" + id + "/processes"
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern}}}); err != nil {
		t.Fatal(err)
	}
	lists := make(chan heldList, 16)
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			if ev.Request.Method == "GET" {
				lists <- heldList{&ev}
				continue
			}
			chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	}()
	return lists
}

func nextList(t *testing.T, lists <-chan heldList) heldList {
	t.Helper()
	select {
	case l := <-lists:
		return l
	case <-time.After(60 * time.Second):
		t.Fatal("the page asked for no process list for 60 s")
		return heldList{}
	}
}

// pass lets the call go on (its answer, if it is held at the response
// stage).
func (l heldList) pass(t *testing.T, ctx context.Context) {
	t.Helper()
	var err error
	if l.ev.ResponseStatusCode != 0 {
		_, err = chromedp.Call(ctx, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: l.ev.RequestID})
	} else {
		_, err = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: l.ev.RequestID})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// passHoldingTheAnswer sends the call and pauses its answer.
func (l heldList) passHoldingTheAnswer(t *testing.T, ctx context.Context) {
	t.Helper()
	yes := true
	if _, err := chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: l.ev.RequestID, InterceptResponse: &yes}); err != nil {
		t.Fatal(err)
	}
}

func (l heldList) body(t *testing.T, ctx context.Context) string {
	t.Helper()
	res, err := chromedp.Call(ctx, fetch.GetResponseBody, fetch.GetResponseBodyParams{RequestID: l.ev.RequestID})
	if err != nil {
		t.Fatal(err)
	}
	return string(res.Body)
}
