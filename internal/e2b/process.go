package e2b

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// The messages of envd's process.Process service, in their proto3 JSON
// mapping (E2B's spec/envd/process/process.proto).

type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  *string           `json:"cwd,omitempty"`
}

type ptySize struct {
	Cols uint32 `json:"cols"`
	Rows uint32 `json:"rows"`
}

type ptyConfig struct {
	Size ptySize `json:"size"`
}

type startRequest struct {
	Process processConfig `json:"process"`
	PTY     *ptyConfig    `json:"pty,omitempty"`
	Tag     *string       `json:"tag,omitempty"`
	Stdin   *bool         `json:"stdin,omitempty"`
}

type processSelector struct {
	PID *uint32 `json:"pid,omitempty"`
	Tag *string `json:"tag,omitempty"`
}

type selectorRequest struct {
	Process processSelector `json:"process"`
}

type processInput struct {
	Stdin []byte `json:"stdin,omitempty"`
	PTY   []byte `json:"pty,omitempty"`
}

type sendInputRequest struct {
	Process processSelector `json:"process"`
	Input   processInput    `json:"input"`
}

type sendSignalRequest struct {
	Process processSelector `json:"process"`
	Signal  any             `json:"signal"`
}

type updateRequest struct {
	Process processSelector `json:"process"`
	PTY     *ptyConfig      `json:"pty,omitempty"`
}

type startEvent struct {
	PID uint32 `json:"pid"`
}

type dataEvent struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	PTY    []byte `json:"pty,omitempty"`
}

type endEvent struct {
	ExitCode int32   `json:"exitCode"`
	Exited   bool    `json:"exited"`
	Status   string  `json:"status"`
	Error    *string `json:"error,omitempty"`
}

type processEvent struct {
	Start     *startEvent `json:"start,omitempty"`
	Data      *dataEvent  `json:"data,omitempty"`
	End       *endEvent   `json:"end,omitempty"`
	Keepalive *struct{}   `json:"keepalive,omitempty"`
}

// eventMessage is StartResponse and ConnectResponse.
type eventMessage struct {
	Event processEvent `json:"event"`
}

type processInfo struct {
	Config processConfig `json:"config"`
	PID    uint32        `json:"pid"`
	Tag    *string       `json:"tag,omitempty"`
}

// Bounds of a Start request.
const (
	maxCmdBytes  = 256 << 10
	maxArgs      = 4096
	maxEnvs      = 1024
	maxTagLength = api.MaxProcessIDLength
)

// processBook remembers, per sandbox, what E2B asked each of its
// processes to run (sandboxd returns neither argv nor env values) and the
// record behind each PID.
type processBook struct {
	mu    sync.Mutex
	boxes map[string]map[string]*bookedProcess
	seq   atomic.Uint64
}

type bookedProcess struct {
	recordID string
	pid      uint32
	tag      *string
	config   processConfig
}

func newProcessBook() *processBook {
	return &processBook{boxes: map[string]map[string]*bookedProcess{}}
}

func (b *processBook) add(sandboxID string, p *bookedProcess) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.boxes[sandboxID]
	if m == nil {
		m = map[string]*bookedProcess{}
		b.boxes[sandboxID] = m
	}
	// Bounded by sandboxd's own record limit: records beyond it are gone.
	if len(m) >= 4*api.MaxProcessRecords {
		for k := range m {
			delete(m, k)
			break
		}
	}
	m[p.recordID] = p
}

func (b *processBook) get(sandboxID, recordID string) (*bookedProcess, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.boxes[sandboxID][recordID]
	return p, ok
}

func (b *processBook) forget(sandboxID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.boxes, sandboxID)
}

func (c *call) serveProcess(w http.ResponseWriter, r *http.Request, method string) {
	switch method {
	case "Start":
		c.start(w, r)
	case "Connect":
		c.attach(w, r)
	case "List":
		c.unary(w, r, new(struct{}), func(ctx context.Context) (any, error) { return c.listProcesses(ctx) })
	case "SendInput":
		var req sendInputRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return struct{}{}, c.sendInput(ctx, req) })
	case "CloseStdin":
		var req selectorRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) {
			return struct{}{}, c.stdin(ctx, req.Process, api.StdinRequest{Close: true})
		})
	case "SendSignal":
		var req sendSignalRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return struct{}{}, c.signal(ctx, req) })
	case "Update":
		var req updateRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return struct{}{}, c.update(ctx, req) })
	default:
		writeUnaryError(w, rpcErrorf(codeUnimplemented, "process.Process/%s is not served by sandboxd's E2B layer", method))
	}
}

// unary decodes req, runs f and answers its result.
func (c *call) unary(w http.ResponseWriter, r *http.Request, req any, f func(context.Context) (any, error)) {
	if err := c.s.readUnary(w, r, req); err != nil {
		writeUnaryError(w, err)
		return
	}
	out, err := f(r.Context())
	if err != nil {
		writeUnaryError(w, err)
		return
	}
	writeUnary(w, out)
}

func validateStart(req *startRequest) error {
	pc := req.Process
	switch {
	case pc.Cmd == "":
		return rpcErrorf(codeInvalidArgument, "process.cmd is required")
	case len(pc.Args) > maxArgs:
		return rpcErrorf(codeInvalidArgument, "at most %d args", maxArgs)
	case len(pc.Envs) > maxEnvs:
		return rpcErrorf(codeInvalidArgument, "at most %d envs", maxEnvs)
	case req.Tag != nil && (len(*req.Tag) > maxTagLength || !validTag(*req.Tag)):
		return rpcErrorf(codeInvalidArgument, "tag %q: 1-%d of [A-Za-z0-9._-], starting with a letter or digit", *req.Tag, maxTagLength)
	}
	n := len(pc.Cmd)
	for _, a := range pc.Args {
		n += len(a)
	}
	if n > maxCmdBytes {
		return rpcErrorf(codeInvalidArgument, "command and args over %d bytes", maxCmdBytes)
	}
	return nil
}

func validTag(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

// shellQuote quotes s for bash.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// commandLine is the line sandboxd's bash -c runs: exec of E2B's argv, so
// the process's PID is the program's (bash -l for the SDK's commands).
func commandLine(pc processConfig) string {
	var b strings.Builder
	b.WriteString("exec ")
	b.WriteString(shellQuote(pc.Cmd))
	for _, a := range pc.Args {
		b.WriteByte(' ')
		b.WriteString(shellQuote(a))
	}
	return b.String()
}

// loginCommand returns CMD when pc is `/bin/bash -l -c CMD`, how the SDK's
// commands.run starts every command.
func loginCommand(pc processConfig) (string, bool) {
	if pc.Cmd != "/bin/bash" || len(pc.Args) != 3 || pc.Args[0] != "-l" || pc.Args[1] != "-c" ||
		strings.TrimSpace(pc.Args[2]) == "" || strings.IndexByte(pc.Args[2], 0) >= 0 {
		return "", false
	}
	return pc.Args[2], true
}

// start serves Start: the process runs as a sandboxd background process
// (its own bash, as envd's) and its log stream is relayed as events.
func (c *call) start(w http.ResponseWriter, r *http.Request) {
	var req startRequest
	deadline, err := c.s.readStreamCall(w, r, &req)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	if err := validateStart(&req); err != nil {
		writeStreamError(w, err)
		return
	}
	if req.PTY != nil {
		c.startPTY(w, r, req, deadline)
		return
	}
	cwd := home(c.user)
	if req.Process.Cwd != nil && *req.Process.Cwd != "" {
		if cwd, err = c.resolve(*req.Process.Cwd); err != nil {
			writeStreamError(w, err)
			return
		}
	}
	recordID := fmt.Sprintf("e2b-%d", c.s.procs.seq.Add(1))
	if req.Tag != nil {
		recordID = *req.Tag
	}
	// envd gives a process started without stdin /dev/null; sandboxd
	// gives every process a pipe, closed here as it starts.
	preq := api.StartProcessRequest{
		Command: commandLine(req.Process), ProcessID: recordID, Env: req.Process.Envs, Cwd: cwd,
		User: c.user, Timeout: deadline.Milliseconds(), AutoCleanup: true, CloseStdin: req.Stdin == nil || !*req.Stdin,
	}
	if cmd, ok := loginCommand(req.Process); ok {
		// The SDK's form: sandboxd's login process runs it in a login
		// shell started ahead of it.
		preq.Command, preq.Login = cmd, true
	}
	if c.user == "root" {
		preq.User = ""
	}
	// One call starts the process and streams its log, which opens with
	// the started record.
	st, err := c.openStream(r, http.MethodPost, sandboxPath(c.id, "processes/start/stream"), preq)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	defer st.close()
	var first api.ProcessEvent
	if ev, err := st.rd.Next(); err != nil || ev.Decode(&first) != nil || first.Type != api.EventProcessInfo || first.Process == nil {
		writeStreamError(w, rpcErrorf(codeUnavailable, "the process's output stream broke before its start"))
		return
	}
	p := *first.Process
	if p.Status == api.ProcessError {
		writeStreamError(w, rpcErrorf(codeInvalidArgument, "starting the process: %s", p.StatusReason))
		return
	}
	c.s.procs.add(c.id, &bookedProcess{recordID: p.ID, pid: uint32(p.PID), tag: req.Tag, config: req.Process})
	c.relayFrom(w, r, st, p, deadline, nil)
}

// attach serves Connect: live output of a running process (what it wrote
// before is skipped), then its end.
func (c *call) attach(w http.ResponseWriter, r *http.Request) {
	var req selectorRequest
	deadline, err := c.s.readStreamCall(w, r, &req)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	p, err := c.find(r.Context(), req.Process)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	if c.s.ptys.has(c.id, uint32(p.PID)) {
		c.attachPTY(w, r, uint32(p.PID), deadline)
		return
	}
	var logs api.ProcessLogs
	if err := c.s.up.call(r.Context(), http.MethodGet, sandboxPath(c.id, "processes/"+p.ID+"/logs"), nil, &logs); err != nil {
		writeStreamError(w, err)
		return
	}
	skip := &[2]int{logLen(logs.Stdout, logs.Encoding), logLen(logs.Stderr, logs.Encoding)}
	c.relay(w, r, *p, deadline, skip)
}

func logLen(s, enc string) int {
	if enc == "base64" {
		return base64.StdEncoding.DecodedLen(len(s)) - strings.Count(s[max(0, len(s)-2):], "=")
	}
	return len(s)
}

// relay streams the process's log events as envd events: start, data
// chunks, keepalives, then end, or a deadline_exceeded end of stream
// when Connect-Timeout-Ms passed (sandboxd's process timeout killed it).
// skip drops that many leading bytes of stdout and stderr (Connect).
func (c *call) relay(w http.ResponseWriter, r *http.Request, p api.Process, deadline time.Duration, skip *[2]int) {
	st, err := c.openStream(r, http.MethodGet, sandboxPath(c.id, "processes/"+p.ID+"/logs/stream"), nil)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	defer st.close()
	c.relayFrom(w, r, st, p, deadline, skip)
}

// logStream is a process's log stream from the daemon's API. Its call
// may outlive the handler by the read of its end (close).
type logStream struct {
	resp   *http.Response
	rd     *sse.Reader
	cancel context.CancelFunc
	unlink func() bool // stops the cancel at the handler's end
	// exited: the exit event came, and the stream's end follows.
	exited bool
}

// openStream opens an event stream of the daemon's API for r's handler:
// it is cancelled when r's call ends, unless close takes it over.
func (c *call) openStream(r *http.Request, method, path string, in any) (*logStream, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	unlink := context.AfterFunc(r.Context(), cancel)
	resp, err := c.s.up.stream(ctx, method, path, in)
	if err != nil {
		unlink()
		cancel()
		return nil, err
	}
	return &logStream{resp: resp, rd: sse.NewReader(resp.Body), cancel: cancel, unlink: unlink}, nil
}

// close ends the stream. One that delivered its exit event is read to
// its end first, in the background (the SDK's answer does not wait for
// it): a response read to its end leaves its connections for the next
// call (the in-memory one to the daemon's API, and the API's to the
// agent); one closed before its end is dropped, and every command would
// dial both anew. Bounded: a few events (the daemon's API may send a
// keepalive comment first), and drainTimeout.
func (s *logStream) close() {
	if !s.exited || !s.unlink() {
		s.resp.Body.Close()
		s.cancel()
		return
	}
	go func() {
		t := time.AfterFunc(drainTimeout, s.cancel)
		defer t.Stop()
		for range 4 {
			if _, err := s.rd.Next(); err != nil {
				break
			}
		}
		s.resp.Body.Close()
		s.cancel()
	}()
}

// drainTimeout bounds close's read of a stream's end, which follows the
// exit event at once.
const drainTimeout = 100 * time.Millisecond

// relayFrom is relay on a log stream already open (its process_info
// event, if still unread, is skipped).
func (c *call) relayFrom(w http.ResponseWriter, r *http.Request, st *logStream, p api.Process, deadline time.Duration, skip *[2]int) {
	rd := st.rd
	sw := newStreamWriter(w)
	if err := sw.send(eventMessage{Event: processEvent{Start: &startEvent{PID: uint32(p.PID)}}}); err != nil {
		return
	}
	stopKeepalive := keepalive(r, sw, func() any { return eventMessage{Event: processEvent{Keepalive: &struct{}{}}} })
	defer stopKeepalive()
	for {
		ev, err := rd.Next()
		if err != nil {
			sw.end(rpcErrorf(codeUnavailable, "the process's output stream broke: %v", err))
			return
		}
		var pe api.ProcessEvent
		if ev.Decode(&pe) != nil {
			continue
		}
		switch pe.Type {
		case "stdout", "stderr":
			data, err := chunkBytes(pe.Data, pe.Encoding)
			if err != nil {
				continue
			}
			i := 0
			if pe.Type == "stderr" {
				i = 1
			}
			if skip != nil && skip[i] > 0 {
				n := min(skip[i], len(data))
				data, skip[i] = data[n:], skip[i]-n
			}
			if len(data) == 0 {
				continue
			}
			de := &dataEvent{Stdout: data}
			if i == 1 {
				de = &dataEvent{Stderr: data}
			}
			if sw.send(eventMessage{Event: processEvent{Data: de}}) != nil {
				return
			}
		case api.EventExit:
			if pe.Process != nil && pe.Process.Status == api.ProcessKilled && pe.Process.StatusReason == "timeout" && deadline > 0 {
				sw.end(rpcErrorf(codeDeadlineExceeded, "the command ran past its timeout of %s and was killed", deadline))
				return
			}
			// The handler returns at once: the end goes out with the
			// response's end.
			sw.finish(eventMessage{Event: processEvent{End: endOf(pe)}})
			st.exited = true
			return
		case "error":
			sw.end(toRPCError(&api.Error{Code: pe.Code, Message: pe.Message}))
			return
		}
	}
}

// endOf maps sandboxd's exit event onto envd's EndEvent: an exit status
// is exited with its code; death by signal is "signal: <name>", not
// exited, as Go's os/exec (which envd uses) words it.
func endOf(pe api.ProcessEvent) *endEvent {
	code := -1
	if pe.ExitCode != nil {
		code = *pe.ExitCode
	}
	status := pe.Status
	if pe.Process != nil {
		status = pe.Process.Status
	}
	switch status {
	case api.ProcessCompleted, api.ProcessFailed:
		return &endEvent{ExitCode: int32(code), Exited: true, Status: "exit status " + strconv.Itoa(code)}
	case api.ProcessKilled:
		e := &endEvent{ExitCode: -1, Status: "signal: killed"}
		if code > 128 && code < 128+65 {
			e.Status = "signal: " + signalName(code-128)
		}
		return e
	}
	msg := "the process could not be started"
	if pe.Process != nil && pe.Process.StatusReason != "" {
		msg = pe.Process.StatusReason
	}
	return &endEvent{ExitCode: -1, Status: "error", Error: &msg}
}

func signalName(n int) string {
	switch n {
	case 9:
		return "killed"
	case 15:
		return "terminated"
	case 2:
		return "interrupt"
	case 1:
		return "hangup"
	}
	return "signal " + strconv.Itoa(n)
}

func chunkBytes(data, enc string) ([]byte, error) {
	if enc == "base64" {
		return base64.StdEncoding.DecodeString(data)
	}
	return []byte(data), nil
}

// keepalive sends a keepalive message after each interval of the
// request's Keepalive-Ping-Interval (seconds) until stopped. It is a
// timer, not a goroutine: stop runs as the handler returns, before
// net/http writes the answer's last bytes (a command's end), and waiting
// there for a goroutine to wake and exit put a scheduling round on every
// command's time. After stop, no keepalive is written: a tick that fires
// meanwhile finds it stopped (or stop waits for its write to end).
func keepalive(r *http.Request, sw *streamWriter, msg func() any) (stop func()) {
	secs, err := strconv.Atoi(r.Header.Get("Keepalive-Ping-Interval"))
	if err != nil || secs <= 0 {
		return func() {}
	}
	k := &keepaliveTimer{sw: sw, msg: msg, every: time.Duration(min(secs, 3600)) * time.Second}
	k.mu.Lock()
	k.t = time.AfterFunc(k.every, k.tick)
	k.mu.Unlock()
	return k.stop
}

type keepaliveTimer struct {
	sw    *streamWriter
	msg   func() any
	every time.Duration

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (k *keepaliveTimer) tick() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.stopped && k.sw.send(k.msg()) == nil {
		k.t.Reset(k.every)
	}
}

func (k *keepaliveTimer) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.t.Stop()
}

// find returns the running process a selector names.
func (c *call) find(ctx context.Context, sel processSelector) (*api.Process, error) {
	if sel.PID == nil && sel.Tag == nil {
		return nil, rpcErrorf(codeInvalidArgument, "process selector needs a pid or a tag")
	}
	var list api.ProcessList
	if err := c.s.up.call(ctx, http.MethodGet, sandboxPath(c.id, "processes")+"?status=running", nil, &list); err != nil {
		return nil, err
	}
	for i := range list.Processes {
		p := &list.Processes[i]
		if p.Status.Done() {
			continue
		}
		if sel.PID != nil && uint32(p.PID) == *sel.PID || sel.Tag != nil && p.ID == *sel.Tag {
			return p, nil
		}
	}
	if sel.PID != nil {
		if c.s.ptys.has(c.id, *sel.PID) {
			return &api.Process{PID: int(*sel.PID)}, nil
		}
		return nil, rpcErrorf(codeNotFound, "process with pid %d not found", *sel.PID)
	}
	return nil, rpcErrorf(codeNotFound, "process with tag %q not found", *sel.Tag)
}

func (c *call) listProcesses(ctx context.Context) (any, error) {
	var list api.ProcessList
	if err := c.s.up.call(ctx, http.MethodGet, sandboxPath(c.id, "processes")+"?status=running", nil, &list); err != nil {
		return nil, err
	}
	out := []processInfo{}
	for _, p := range list.Processes {
		if p.Status.Done() || p.ID == warmUpID {
			continue
		}
		info := processInfo{PID: uint32(p.PID), Config: processConfig{Cmd: "/bin/bash", Args: []string{"-c", p.Command}}}
		if b, ok := c.s.procs.get(c.id, p.ID); ok {
			info.Config, info.Tag = b.config, b.tag
		} else {
			id := p.ID
			info.Tag = &id
		}
		out = append(out, info)
	}
	out = append(out, c.s.ptys.list(c.id)...)
	return struct {
		Processes []processInfo `json:"processes"`
	}{out}, nil
}

func (c *call) sendInput(ctx context.Context, req sendInputRequest) error {
	if req.Input.PTY != nil {
		if req.Process.PID == nil {
			return rpcErrorf(codeInvalidArgument, "pty input needs a pid")
		}
		return c.s.ptys.input(c.id, *req.Process.PID, req.Input.PTY)
	}
	return c.stdin(ctx, req.Process, api.StdinRequest{Data: base64.StdEncoding.EncodeToString(req.Input.Stdin), Encoding: "base64"})
}

func (c *call) stdin(ctx context.Context, sel processSelector, in api.StdinRequest) error {
	p, err := c.find(ctx, sel)
	if err != nil {
		return err
	}
	if c.s.ptys.has(c.id, uint32(p.PID)) {
		return nil // a terminal's input has no end to close
	}
	return c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "processes/"+p.ID+"/stdin"), in, nil)
}

// signal serves SendSignal: SIGKILL or SIGTERM to the process's tree.
func (c *call) signal(ctx context.Context, req sendSignalRequest) error {
	sig := "SIGKILL"
	switch v := req.Signal.(type) {
	case string:
		switch v {
		case "SIGNAL_SIGTERM":
			sig = "SIGTERM"
		case "SIGNAL_SIGKILL", "SIGNAL_UNSPECIFIED", "":
		default:
			return rpcErrorf(codeInvalidArgument, "signal %q: SIGNAL_SIGKILL or SIGNAL_SIGTERM", v)
		}
	case float64:
		switch v {
		case 15:
			sig = "SIGTERM"
		case 9, 0:
		default:
			return rpcErrorf(codeInvalidArgument, "signal %v: 9 or 15", v)
		}
	case nil:
	default:
		return rpcErrorf(codeInvalidArgument, "signal must be a name or a number")
	}
	p, err := c.find(ctx, req.Process)
	if err != nil {
		return err
	}
	if c.s.ptys.has(c.id, uint32(p.PID)) {
		return c.s.ptys.kill(ctx, c, uint32(p.PID))
	}
	err = c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "processes/"+p.ID+"/kill"), api.KillProcessRequest{Signal: sig}, nil)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeProcessNotRunning {
		return rpcErrorf(codeNotFound, "process with pid %d not found", p.PID)
	}
	return err
}

// update serves Update: a PTY's new size.
func (c *call) update(ctx context.Context, req updateRequest) error {
	if req.PTY == nil {
		return nil
	}
	if req.Process.PID == nil || !c.s.ptys.has(c.id, *req.Process.PID) {
		return rpcErrorf(codeNotFound, "no PTY with that pid")
	}
	return c.s.ptys.resize(c.id, *req.Process.PID, req.PTY.Size)
}
