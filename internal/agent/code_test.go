package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func needCodeRuntimes(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs /usr/bin/python3 with IPython (apt-get install python3-ipython)")
	}
	if _, code := runViaReaper(t, "/usr/bin/python3", "-c", "import IPython"); code != 0 {
		t.Skip("needs /usr/bin/python3 with IPython (apt-get install python3-ipython)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node (apt-get install nodejs)")
	}
}

func startCodeAgent(t *testing.T) *testAgent {
	needCodeRuntimes(t)
	return startAgent(t, func(c *Config) { c.Code.NoSpares = true })
}

func (ta *testAgent) do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, "http://agent"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ta.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func decodeInto[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decoding %T: %v: %s", v, err, body)
	}
	return v
}

// codeStream runs req on /code/run/stream and returns its events.
func (ta *testAgent) codeStream(t testing.TB, req api.RunCodeRequest) []api.CodeEvent {
	t.Helper()
	data, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hr, _ := http.NewRequestWithContext(ctx, "POST", "http://agent/code/run/stream", bytes.NewReader(data))
	resp, err := ta.client.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var out []api.CodeEvent
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading stream: %v", err)
		}
		var e api.CodeEvent
		if err := ev.Decode(&e); err != nil || e.Type != ev.Name {
			t.Fatalf("event %s: %v %+v", ev.Name, err, e)
		}
		out = append(out, e)
	}
}

// types lists the events' types; adjacent output chunks of a stream count
// once, since chunks are cut wherever a pipe was read.
func types(evs []api.CodeEvent) string {
	var s []string
	for _, e := range evs {
		if n := len(s); n > 0 && s[n-1] == e.Type && (e.Type == "stdout" || e.Type == "stderr") {
			continue
		}
		s = append(s, e.Type)
	}
	return strings.Join(s, ",")
}

func TestCodeRoutes(t *testing.T) {
	ta := startCodeAgent(t)

	status, body := ta.do(t, "POST", "/code/contexts", api.CreateCodeContextRequest{Language: "javascript", Cwd: "/tmp", Env: map[string]string{"GREETING": "hi"}})
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	js := decodeInto[api.CodeContext](t, body)
	if js.Language != api.LanguageJavaScript || js.Cwd != "/tmp" || js.Status != api.ContextReady || js.ID == "" {
		t.Errorf("created %+v", js)
	}

	evs := ta.codeStream(t, api.RunCodeRequest{Code: "console.log(process.env.GREETING); const o = {a: [1]}; o", ContextID: js.ID})
	if types(evs) != "start,stdout,result,complete" {
		t.Fatalf("events %s: %+v", types(evs), evs)
	}
	if evs[0].ContextID != js.ID || evs[1].Data != "hi\n" || string(evs[2].Result.JSON) != `{"a":[1]}` || !evs[2].Result.IsMainResult || evs[3].ExecutionCount != 1 {
		t.Errorf("events %+v", evs)
	}

	// Buffered, in the default python context, created by the run.
	status, body = ta.do(t, "POST", "/code/run", api.RunCodeRequest{Code: "data = [1, 2, 3, 4, 5]\nprint(f\"Sum: {sum(data)}\")\nsum(data)\n"})
	if status != http.StatusOK {
		t.Fatalf("run: %d %s", status, body)
	}
	res := decodeInto[api.RunCodeResult](t, body)
	if res.ContextID != "default-python" || len(res.Logs.Stdout) != 1 || res.Logs.Stdout[0] != "Sum: 15" || len(res.Results) != 1 || res.Results[0].Text != "15" || res.ExecutionCount != 1 {
		t.Errorf("buffered result %+v", res)
	}
	status, body = ta.do(t, "POST", "/code/run", api.RunCodeRequest{Code: "x = 1 / 0", Language: "python"})
	res = decodeInto[api.RunCodeResult](t, body)
	if status != http.StatusOK || res.Error == nil || res.Error.Name != "ZeroDivisionError" || res.Error.Value != "division by zero" || len(res.Error.Traceback) == 0 {
		t.Errorf("error result %d %+v", status, res)
	}

	// An execution error is an event followed by complete.
	evs = ta.codeStream(t, api.RunCodeRequest{Code: "print('a'); raise ValueError('v')"})
	if types(evs) != "start,stdout,execution_error,complete" || evs[2].Error.Name != "ValueError" || evs[2].Code != "" {
		t.Errorf("error events %s %+v", types(evs), evs)
	}

	status, body = ta.do(t, "GET", "/code/contexts", nil)
	list := decodeInto[api.CodeContextList](t, body)
	if status != 200 || len(list.Contexts) != 2 || list.Contexts[0].ID != js.ID || list.Contexts[1].ExecutionCount != 3 {
		t.Errorf("list %d %+v", status, list)
	}

	// A crash: the run ends with CONTEXT_TERMINATED, the context is listed
	// as terminated, later runs are refused, and the default python
	// context is replaced on the next run.
	evs = ta.codeStream(t, api.RunCodeRequest{Code: "import os; os._exit(9)"})
	if last := evs[len(evs)-1]; last.Type != "error" || last.Code != api.CodeContextTerminated {
		t.Errorf("crash events %+v", evs)
	}
	_, body = ta.do(t, "GET", "/code/contexts/default-python", nil)
	if c := decodeInto[api.CodeContext](t, body); c.Status != api.ContextTerminated {
		t.Errorf("after crash %+v", c)
	}
	status, body = ta.do(t, "POST", "/code/run", api.RunCodeRequest{Code: "1", ContextID: "default-python"})
	if e := decodeInto[api.Error](t, body); status != http.StatusGone || e.Code != api.CodeContextTerminated {
		t.Errorf("run on a dead context: %d %+v", status, e)
	}
	status, body = ta.do(t, "POST", "/code/run", api.RunCodeRequest{Code: "2"})
	if res := decodeInto[api.RunCodeResult](t, body); status != 200 || res.Results[0].Text != "2" || res.ExecutionCount != 1 {
		t.Errorf("fresh default context: %d %s", status, body)
	}

	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		code         api.Code
	}{
		{"POST", "/code/run", api.RunCodeRequest{Code: "1", ContextID: "nope"}, 404, api.CodeContextNotFound},
		{"POST", "/code/run", api.RunCodeRequest{Code: "1", ContextID: "../x"}, 404, api.CodeContextNotFound},
		{"POST", "/code/run", api.RunCodeRequest{Code: " "}, 400, api.CodeValidationFailed},
		{"POST", "/code/run", api.RunCodeRequest{Code: "1", Language: "cobol"}, 400, api.CodeValidationFailed},
		{"POST", "/code/run", api.RunCodeRequest{Code: "1", ContextID: js.ID, Language: "python"}, 400, api.CodeValidationFailed},
		{"POST", "/code/run", api.RunCodeRequest{Code: "1", Timeout: -1}, 400, api.CodeValidationFailed},
		{"POST", "/code/run", api.RunCodeRequest{Code: strings.Repeat("1", api.MaxCodeBytes+1)}, 400, api.CodeValidationFailed},
		{"POST", "/code/run", "not json", 400, api.CodeInvalidJSON},
		{"POST", "/code/contexts", api.CreateCodeContextRequest{Language: "ruby"}, 400, api.CodeValidationFailed},
		{"POST", "/code/contexts", api.CreateCodeContextRequest{Cwd: "relative"}, 400, api.CodeValidationFailed},
		{"POST", "/code/contexts", api.CreateCodeContextRequest{Cwd: "/no/such/dir"}, 400, api.CodeValidationFailed},
		{"POST", "/code/contexts", api.CreateCodeContextRequest{Env: map[string]string{"A-B": "x"}}, 400, api.CodeValidationFailed},
		{"DELETE", "/code/contexts/nope", nil, 404, api.CodeContextNotFound},
		{"GET", "/code/contexts/nope", nil, 404, api.CodeContextNotFound},
	} {
		status, body := ta.do(t, tc.method, tc.path, tc.body)
		if e := decodeInto[api.Error](t, body); status != tc.status || e.Code != tc.code {
			t.Errorf("%s %s %+v: %d %s, want %d %s", tc.method, tc.path, tc.body, status, e.Code, tc.status, tc.code)
		}
	}

	if status, _ := ta.do(t, "DELETE", "/code/contexts/"+js.ID, nil); status != http.StatusNoContent {
		t.Errorf("delete: %d", status)
	}
	if status, _ := ta.do(t, "GET", "/code/contexts/"+js.ID, nil); status != http.StatusNotFound {
		t.Errorf("get after delete: %d", status)
	}
}

func TestActivityCountsCodeRuns(t *testing.T) {
	ta := startCodeAgent(t)
	activity := func() api.AgentActivity {
		_, body := ta.do(t, "GET", "/internal/activity", nil)
		return decodeInto[api.AgentActivity](t, body)
	}
	if a := activity(); a.Busy || a.RunningExecutions != 0 {
		t.Fatalf("idle activity %+v", a)
	}
	done := make(chan []api.CodeEvent)
	go func() {
		done <- ta.codeStream(t, api.RunCodeRequest{Code: "import time; time.sleep(1.5)"})
	}()
	eventually(t, 60*time.Second, "a running code run is counted", func() bool {
		a := activity()
		return a.Busy && a.RunningExecutions == 1
	})
	evs := <-done
	if types(evs) != "start,complete" {
		t.Errorf("events %s", types(evs))
	}
	if a := activity(); a.Busy || a.RunningExecutions != 0 {
		t.Errorf("activity after the run %+v", a)
	}
}

func TestCodeStreamClientGoneInterruptsTheRun(t *testing.T) {
	ta := startCodeAgent(t)
	ta.do(t, "POST", "/code/run", api.RunCodeRequest{Code: "n = 0"})
	ctx, cancel := context.WithCancel(context.Background())
	data, _ := json.Marshal(api.RunCodeRequest{Code: "import time\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.01)"})
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://agent/code/run/stream", bytes.NewReader(data))
	resp, err := ta.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := sse.NewReader(resp.Body)
	for i := 0; i < 5; i++ {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	resp.Body.Close()
	// The interrupt stops the loop; the context keeps n.
	var res api.RunCodeResult
	eventually(t, 30*time.Second, "the context is free again", func() bool {
		_, body := ta.do(t, "POST", "/code/run", api.RunCodeRequest{Code: "n"})
		res = decodeInto[api.RunCodeResult](t, body)
		return len(res.Results) == 1
	})
	if res.Results[0].Text == "0" {
		t.Errorf("n = %s", res.Results[0].Text)
	}
}
