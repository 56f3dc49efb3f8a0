package e2b

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// E2B's lifecycle bounds, in seconds.
const (
	defaultTimeout = 300
	maxTimeout     = 24 * 60 * 60
	// maxControlBody bounds a control-plane request body.
	maxControlBody = 1 << 20
	// maxListLimit bounds a list page (E2B's own maximum).
	maxListLimit = 100
	idLength     = 20
)

// controlError is a control-plane error: E2B's {"code": <HTTP status>,
// "message"}; the SDK tests the integer code (404, 409) to raise its
// typed errors.
type controlError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *controlError) Error() string { return e.Message }

func controlErrorf(status int, format string, args ...any) *controlError {
	return &controlError{Code: status, Message: fmt.Sprintf(format, args...)}
}

// toControlError classifies an error of the daemon's API for the
// control plane.
func toControlError(err error) *controlError {
	var ce *controlError
	if errors.As(err, &ce) {
		return ce
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return &controlError{Code: ae.Code.HTTPStatus(), Message: string(ae.Code) + ": " + ae.Message}
	}
	return &controlError{Code: http.StatusInternalServerError, Message: err.Error()}
}

func writeControlError(w http.ResponseWriter, err error) {
	ce := toControlError(err)
	writeControlJSON(w, ce.Code, ce)
}

func writeControlJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveControl serves the control plane (path without the prefix).
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request, p string) {
	ns, ok := s.callerNamespace(r)
	if !ok {
		writeControlError(w, controlErrorf(http.StatusUnauthorized, "missing or invalid API key: send X-API-KEY with a sandboxd API key"))
		return
	}
	r = r.WithContext(withTenant(r.Context(), ns))
	seg := strings.Split(strings.Trim(p, "/"), "/")
	if len(seg) > 0 && seg[0] == "v2" {
		seg = seg[1:]
	}
	if len(seg) >= 2 && seg[0] == "sandboxes" {
		// Another tenant's sandbox is one this caller does not have.
		if e, ok := s.table.get(seg[1]); ok && e.Tenant != ns {
			writeControlError(w, controlErrorf(http.StatusNotFound, "sandbox %q not found", seg[1]))
			return
		}
	}
	if len(seg) == 0 || seg[0] != "sandboxes" {
		writeControlError(w, controlErrorf(http.StatusNotFound, "no route %s %s", r.Method, p))
		return
	}
	var err error
	switch {
	case len(seg) == 1 && r.Method == http.MethodPost:
		err = s.create(w, r)
	case len(seg) == 1 && r.Method == http.MethodGet:
		err = s.list(w, r)
	case len(seg) == 2 && r.Method == http.MethodGet:
		err = s.getInfo(w, r, seg[1])
	case len(seg) == 2 && r.Method == http.MethodDelete:
		err = s.killRoute(w, r, seg[1])
	case len(seg) == 3 && r.Method == http.MethodPost && seg[2] == "timeout":
		err = s.setTimeout(w, r, seg[1])
	case len(seg) == 3 && r.Method == http.MethodPost && (seg[2] == "connect" || seg[2] == "resume"):
		err = s.connect(w, r, seg[1])
	case len(seg) == 3 && r.Method == http.MethodPost && seg[2] == "pause":
		err = s.pauseRoute(w, r, seg[1])
	case len(seg) == 3 && r.Method == http.MethodPut && seg[2] == "network":
		err = s.updateNetwork(w, r, seg[1])
	case len(seg) == 3 && r.Method == http.MethodGet && seg[2] == "metrics":
		err = s.metrics(w, r, seg[1])
	default:
		err = controlErrorf(http.StatusNotFound, "%s %s is not served by sandboxd's E2B layer (see docs/e2b.md for what is)", r.Method, p)
	}
	if err != nil {
		writeControlError(w, err)
	}
}

// decodeControl reads a bounded JSON body, within the body timeout; an
// empty body is allowed.
func (s *Server) decodeControl(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := s.readBody(w, r, maxControlBody+1)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return controlErrorf(http.StatusRequestTimeout, "the body did not arrive within %s", s.bodyTimeout())
	}
	if err != nil {
		return controlErrorf(http.StatusBadRequest, "reading the body: %v", err)
	}
	if len(b) > maxControlBody {
		return controlErrorf(http.StatusRequestEntityTooLarge, "body over %d bytes", maxControlBody)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return controlErrorf(http.StatusBadRequest, "body is not valid JSON: %v", err)
	}
	return nil
}

// newSandboxRequest is E2B's NewSandbox (POST /v2/sandboxes).
type newSandboxRequest struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int64            `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Network             *struct {
		egressRequest
		AllowPublicTraffic *bool `json:"allowPublicTraffic"`
	} `json:"network"`
	AutoPause *bool `json:"autoPause"`
	// AutoPauseMemory false pauses at the timeout without memory.
	AutoPauseMemory *bool             `json:"autoPauseMemory"`
	VolumeMounts    []json.RawMessage `json:"volumeMounts"`
	MCP             json.RawMessage   `json:"mcp"`
}

// sandboxAnswer is E2B's Sandbox (create and connect answers).
type sandboxAnswer struct {
	SandboxID          string `json:"sandboxID"`
	TemplateID         string `json:"templateID"`
	ClientID           string `json:"clientID"`
	EnvdVersion        string `json:"envdVersion"`
	EnvdAccessToken    string `json:"envdAccessToken"`
	TrafficAccessToken string `json:"trafficAccessToken,omitempty"`
	Domain             string `json:"domain,omitempty"`
}

// clientID is E2B's (deprecated) client field; one host, one client.
const clientID = "sandboxd"

func (s *Server) answer(e entry) sandboxAnswer {
	a := sandboxAnswer{
		SandboxID: e.ID, TemplateID: e.TemplateID, ClientID: clientID, EnvdVersion: envdVersion,
		EnvdAccessToken: s.table.token("envd", e.ID), Domain: s.opts.Domain,
	}
	if e.PrivateTraffic {
		a.TrafficAccessToken = s.table.token("traffic", e.ID)
	}
	return a
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) error {
	var req newSandboxRequest
	if err := s.decodeControl(w, r, &req); err != nil {
		return err
	}
	timeout := int64(defaultTimeout)
	if req.Timeout != nil {
		timeout = *req.Timeout
	}
	if timeout < 0 || timeout > maxTimeout {
		return controlErrorf(http.StatusBadRequest, "timeout %d s is out of range (0 to %d)", timeout, maxTimeout)
	}
	if len(req.VolumeMounts) > 0 {
		return controlErrorf(http.StatusBadRequest, "volume mounts are not supported by sandboxd's E2B layer")
	}
	if len(req.MCP) > 0 && string(req.MCP) != "null" {
		return controlErrorf(http.StatusBadRequest, "the MCP gateway is not supported by sandboxd's E2B layer")
	}
	// Env is set after creation, and keepAlive is not set: a sandbox
	// created with the default configuration comes from the warm pool,
	// metadata (labels, written with its registry row) or not.
	// Idle sleep needs no turning off: running processes keep a sandbox
	// awake, and a sleeping one wakes on its next call with its files.
	opts := api.SandboxOptions{Labels: req.Metadata}
	if len(req.EnvVars) > maxEnvs {
		return controlErrorf(http.StatusBadRequest, "at most %d envVars", maxEnvs)
	}
	e := entry{Tenant: tenantOf(r.Context()), TemplateID: req.TemplateID, AutoPause: req.AutoPause != nil && *req.AutoPause,
		AutoPauseNoMemory: req.AutoPauseMemory != nil && !*req.AutoPauseMemory}
	if req.Network != nil {
		e.PrivateTraffic = req.Network.AllowPublicTraffic != nil && !*req.Network.AllowPublicTraffic
		if !req.Network.empty() || len(req.Network.Rules) > 0 || len(req.Network.EgressProxy) > 0 {
			no, err := req.Network.networkOptions()
			if err != nil {
				return err
			}
			opts.Network = no
		}
	}
	if req.AllowInternetAccess != nil && !*req.AllowInternetAccess {
		opts.Network = &api.NetworkOptions{Mode: api.NetworkNone}
		e.NoInternet = true
	}
	image, err := s.templateImage(r.Context(), req.TemplateID)
	if err != nil {
		return err
	}
	opts.Image = image
	if e.TemplateID == "" {
		e.TemplateID = "base"
	}
	e.ID = newID()
	e.StartedAt = s.now().UTC()
	e.EndAt = e.StartedAt.Add(time.Duration(timeout) * time.Second)
	// The entry first: a sandbox is never running without its deadline.
	if _, _, err := s.table.update(e.ID, true, func(x *entry) { *x = e }); err != nil {
		return err
	}
	if err := s.up.call(r.Context(), http.MethodPut, sandboxPath(e.ID, ""), opts, nil); err != nil {
		_ = s.table.remove(e.ID)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeImageNotFound {
			return controlErrorf(http.StatusBadRequest, "template %q: no sandboxd image of that name", req.TemplateID)
		}
		return err
	}
	if len(req.EnvVars) > 0 {
		env := make(map[string]*string, len(req.EnvVars))
		for k, v := range req.EnvVars {
			env[k] = &v
		}
		if err := s.up.call(r.Context(), http.MethodPost, sandboxPath(e.ID, "env"), api.SetEnvRequest{Env: env}, nil); err != nil {
			_ = s.kill(context.WithoutCancel(r.Context()), e.ID)
			return err
		}
	}
	writeControlJSON(w, http.StatusCreated, s.answer(e))
	s.warmUp(context.WithoutCancel(r.Context()), e.ID)
	return nil
}

// warmUpID is the process ID of a sandbox's warm-up (see warmUp); the
// layer's process list leaves it out.
const warmUpID = "e2b-warm-up"

// warmUp starts, in the background, a login process of `:` as the
// default user with what the SDK's commands use (its home, no envs), as
// the first command would: the agent creates the user and starts the
// login shell its commands are forked from now, while the create's answer
// travels, rather than when the first command comes.
func (s *Server) warmUp(ctx context.Context, id string) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		preq := api.StartProcessRequest{Command: ":", Login: true, ProcessID: warmUpID, User: defaultUser,
			Cwd: home(defaultUser), AutoCleanup: true, CloseStdin: true}
		if err := s.up.call(ctx, http.MethodPost, sandboxPath(id, "processes"), preq, nil); err != nil {
			s.log.Debug("warm-up of a new sandbox failed", "sandbox", id, "err", err)
		}
	}()
}

// templateImage maps a template ID onto an image: a sandboxd image of
// that name; E2B's default template "base" (or none) is sandboxd's base
// image when it is built, else the daemon's default image.
func (s *Server) templateImage(ctx context.Context, template string) (string, error) {
	if template != "" && template != "base" {
		if len(template) > 256 {
			return "", controlErrorf(http.StatusBadRequest, "template ID over 256 bytes")
		}
		return template, nil
	}
	err := s.up.call(ctx, http.MethodGet, "/v1/images/base", nil, nil)
	var ae *api.Error
	switch {
	case err == nil:
		return "base", nil
	case errors.As(err, &ae) && (ae.Code == api.CodeImageNotFound || ae.Code == api.CodeNotFound):
		return "", nil
	}
	return "", err
}

// newID returns an E2B-style sandbox ID: 20 of a-z0-9, starting with a
// letter, no '-' (so <port>-<id> host names parse one way).
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, idLength)
	var buf [64]byte
	for len(out) < idLength {
		rand.Read(buf[:])
		for _, b := range buf {
			if b >= 252 || len(out) == idLength {
				continue
			}
			c := alphabet[b%36]
			if len(out) == 0 && c >= '0' && c <= '9' {
				continue
			}
			out = append(out, c)
		}
	}
	return string(out)
}

// listedSandbox is E2B's ListedSandbox; sandboxDetail adds the fields of
// getInfo.
type listedSandbox struct {
	SandboxID   string            `json:"sandboxID"`
	TemplateID  string            `json:"templateID"`
	ClientID    string            `json:"clientID"`
	StartedAt   time.Time         `json:"startedAt"`
	EndAt       time.Time         `json:"endAt"`
	CPUCount    int64             `json:"cpuCount"`
	MemoryMB    int64             `json:"memoryMB"`
	DiskSizeMB  int64             `json:"diskSizeMB"`
	Metadata    map[string]string `json:"metadata"`
	State       string            `json:"state"`
	EnvdVersion string            `json:"envdVersion"`
}

type sandboxDetail struct {
	listedSandbox
	Domain              string `json:"domain,omitempty"`
	EnvdAccessToken     string `json:"envdAccessToken"`
	AllowInternetAccess bool   `json:"allowInternetAccess"`
	Network             struct {
		AllowPublicTraffic bool `json:"allowPublicTraffic"`
	} `json:"network"`
	Lifecycle struct {
		OnTimeout  string `json:"onTimeout"`
		AutoResume bool   `json:"autoResume"`
	} `json:"lifecycle"`
}

// errMemoryNotAsked marks a pause that was asked without memory.
var errMemoryNotAsked = errors.New("pause without memory")

// state is E2B's state of a sandbox: paused while this layer paused it
// (sandboxd's paused, or stopped where memory could not be kept); running
// otherwise, sleeping and idle pauses included (they are transparent).
func state(e entry, sb api.Sandbox) string {
	if e.Paused || sb.Status == api.StatusStopped {
		return "paused"
	}
	return "running"
}

func (s *Server) listed(e entry, sb api.Sandbox) listedSandbox {
	cpus := (sb.Limits.MilliCPU + 999) / 1000
	if cpus == 0 {
		cpus = 1
	}
	md := sb.Labels
	if md == nil {
		md = map[string]string{}
	}
	return listedSandbox{
		SandboxID: e.ID, TemplateID: e.TemplateID, ClientID: clientID, StartedAt: e.StartedAt, EndAt: e.EndAt,
		CPUCount: cpus, MemoryMB: sb.Limits.MemoryBytes >> 20, DiskSizeMB: sb.Limits.DiskBytes >> 20,
		Metadata: md, State: state(e, sb), EnvdVersion: envdVersion,
	}
}

// lookup returns a sandbox of this layer: 404 for IDs it did not create.
func (s *Server) lookup(ctx context.Context, id string) (entry, api.Sandbox, error) {
	e, ok := s.table.get(id)
	if !ok {
		return entry{}, api.Sandbox{}, controlErrorf(http.StatusNotFound, "sandbox %q not found", id)
	}
	var sb api.Sandbox
	if err := s.up.call(ctx, http.MethodGet, sandboxPath(id, ""), nil, &sb); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeSandboxNotFound {
			_ = s.table.remove(id) // removed through sandboxd's own API
			return entry{}, api.Sandbox{}, controlErrorf(http.StatusNotFound, "sandbox %q not found", id)
		}
		return entry{}, api.Sandbox{}, err
	}
	return e, sb, nil
}

func (s *Server) getInfo(w http.ResponseWriter, r *http.Request, id string) error {
	e, sb, err := s.lookup(r.Context(), id)
	if err != nil {
		return err
	}
	d := sandboxDetail{listedSandbox: s.listed(e, sb), Domain: s.opts.Domain, EnvdAccessToken: s.table.token("envd", id)}
	d.AllowInternetAccess = sb.Network.Mode != api.NetworkNone
	d.Network.AllowPublicTraffic = !e.PrivateTraffic
	d.Lifecycle.OnTimeout = "kill"
	if e.AutoPause {
		d.Lifecycle.OnTimeout = "pause"
	}
	writeControlJSON(w, http.StatusOK, d)
	return nil
}

// listQuery is a parsed GET /v2/sandboxes query.
type listQuery struct {
	limit        int
	after        string
	metadata     map[string]string
	states       map[string]bool
	startedAfter time.Time
	template     string
	desc         bool
}

func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{limit: maxListLimit, states: map[string]bool{}}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return lq, controlErrorf(http.StatusBadRequest, "limit %q: 1 to %d", v, maxListLimit)
		}
		lq.limit = n
	}
	if v := q.Get("nextToken"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || api.ValidateSandboxID(string(b)) != nil {
			return lq, controlErrorf(http.StatusBadRequest, "nextToken %q is not a token this server gave", v)
		}
		lq.after = string(b)
	}
	if v := q.Get("metadata"); v != "" {
		pairs, err := url.ParseQuery(v)
		if err != nil {
			return lq, controlErrorf(http.StatusBadRequest, "metadata %q is not k=v&k2=v2", v)
		}
		lq.metadata = map[string]string{}
		for k, vs := range pairs {
			// The SDK encodes each key and value before joining them.
			dk, err1 := url.QueryUnescape(k)
			dv, err2 := url.QueryUnescape(vs[0])
			if err1 != nil || err2 != nil {
				return lq, controlErrorf(http.StatusBadRequest, "metadata %q is not URL-encoded", v)
			}
			lq.metadata[dk] = dv
		}
	}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if st != "running" && st != "paused" {
				return lq, controlErrorf(http.StatusBadRequest, "state %q: running or paused", st)
			}
			lq.states[st] = true
		}
	}
	if v := q.Get("startedAfter"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return lq, controlErrorf(http.StatusBadRequest, "startedAfter %q is not an RFC 3339 time", v)
		}
		lq.startedAfter = t
	}
	lq.template = q.Get("template")
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		lq.desc = true
	default:
		return lq, controlErrorf(http.StatusBadRequest, "order %q: asc or desc", q.Get("order"))
	}
	return lq, nil
}

func (lq listQuery) match(ls listedSandbox) bool {
	if len(lq.states) > 0 && !lq.states[ls.State] {
		return false
	}
	for k, v := range lq.metadata {
		if got, ok := ls.Metadata[k]; !ok || got != v {
			return false
		}
	}
	if !lq.startedAfter.IsZero() && !ls.StartedAt.After(lq.startedAfter) {
		return false
	}
	return lq.template == "" || lq.template == ls.TemplateID
}

// list answers one page of this layer's sandboxes, oldest first (or
// newest with order=desc), the next page's token in X-Next-Token.
func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	lq, err := parseListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	var all api.SandboxList
	if err := s.up.call(r.Context(), http.MethodGet, "/v1/sandboxes", nil, &all); err != nil {
		return err
	}
	byID := make(map[string]api.Sandbox, len(all.Sandboxes))
	for _, sb := range all.Sandboxes {
		byID[sb.ID] = sb
	}
	entries := s.table.list()
	if lq.desc {
		for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
			entries[i], entries[j] = entries[j], entries[i]
		}
	}
	page := []listedSandbox{}
	skipping := lq.after != ""
	next := ""
	ns := tenantOf(r.Context())
	for _, e := range entries {
		if e.Tenant != ns {
			continue
		}
		if skipping {
			skipping = e.ID != lq.after
			continue
		}
		sb, ok := byID[e.ID]
		if !ok {
			continue
		}
		ls := s.listed(e, sb)
		if !lq.match(ls) {
			continue
		}
		if len(page) == lq.limit {
			next = base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].SandboxID))
			break
		}
		page = append(page, ls)
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	writeControlJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) killRoute(w http.ResponseWriter, r *http.Request, id string) error {
	if _, ok := s.table.get(id); !ok {
		return controlErrorf(http.StatusNotFound, "sandbox %q not found", id)
	}
	if err := s.kill(r.Context(), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// kill destroys a sandbox of this layer.
func (s *Server) kill(ctx context.Context, id string) error {
	err := s.up.call(ctx, http.MethodDelete, sandboxPath(id, ""), nil, nil)
	var ae *api.Error
	if err != nil && !(errors.As(err, &ae) && ae.Code == api.CodeSandboxNotFound) {
		return err
	}
	s.forget(id)
	return s.table.remove(id)
}

type timeoutRequest struct {
	Timeout *int64 `json:"timeout"`
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request, id string) error {
	var req timeoutRequest
	if err := s.decodeControl(w, r, &req); err != nil {
		return err
	}
	if req.Timeout == nil || *req.Timeout < 0 || *req.Timeout > maxTimeout {
		return controlErrorf(http.StatusBadRequest, "timeout (seconds, 0 to %d) is required", maxTimeout)
	}
	end := s.now().UTC().Add(time.Duration(*req.Timeout) * time.Second)
	_, ok, err := s.table.update(id, false, func(e *entry) { e.EndAt = end })
	if err != nil {
		return err
	}
	if !ok {
		return controlErrorf(http.StatusNotFound, "sandbox %q not found", id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// connect resumes a paused sandbox (201) or answers a running one (200),
// and moves its deadline to now + timeout when that is later.
func (s *Server) connect(w http.ResponseWriter, r *http.Request, id string) error {
	var req timeoutRequest
	if err := s.decodeControl(w, r, &req); err != nil {
		return err
	}
	timeout := int64(defaultTimeout)
	if req.Timeout != nil {
		timeout = *req.Timeout
	}
	if timeout < 0 || timeout > maxTimeout {
		return controlErrorf(http.StatusBadRequest, "timeout %d s is out of range (0 to %d)", timeout, maxTimeout)
	}
	e, sb, err := s.lookup(r.Context(), id)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if state(e, sb) == "paused" {
		if err := s.up.call(r.Context(), http.MethodPost, sandboxPath(id, "resume"), nil, nil); err != nil {
			return err
		}
		status = http.StatusCreated
	}
	end := s.now().UTC().Add(time.Duration(timeout) * time.Second)
	e, _, err = s.table.update(id, false, func(x *entry) {
		x.Paused = false
		if end.After(x.EndAt) || status == http.StatusCreated {
			x.EndAt = end
		}
	})
	if err != nil {
		return err
	}
	writeControlJSON(w, status, s.answer(e))
	return nil
}

func (s *Server) pauseRoute(w http.ResponseWriter, r *http.Request, id string) error {
	e, sb, err := s.lookup(r.Context(), id)
	if err != nil {
		return err
	}
	if state(e, sb) == "paused" {
		return controlErrorf(http.StatusConflict, "sandbox %q is already paused", id)
	}
	var req struct {
		Memory *bool `json:"memory"`
	}
	if err := s.decodeControl(w, r, &req); err != nil {
		return err
	}
	if err := s.pause(r.Context(), id, req.Memory == nil || *req.Memory); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// pause pauses a sandbox and stops its deadline: with its memory where
// the runtime keeps it (gVisor: processes, shells and code contexts live
// on), otherwise keeping its files only.
func (s *Server) pause(ctx context.Context, id string, keepMemory bool) error {
	// sandboxd's pause keeps memory where the runtime can; where it cannot
	// (MEMORY_SNAPSHOT_UNSUPPORTED: crun and runc) E2B's pause falls back
	// to a filesystem-only pause, which is what E2B's keepMemory: false
	// asks for anyway: files kept, processes not.
	err := errMemoryNotAsked
	if keepMemory {
		err = s.up.call(ctx, http.MethodPost, sandboxPath(id, "pause"), api.PauseRequest{}, nil)
	}
	kept := err == nil
	if err != nil {
		if !isCode(err, api.CodeMemorySnapshotUnsupported) && err != errMemoryNotAsked {
			return err
		}
		if err := s.up.call(ctx, http.MethodPost, sandboxPath(id, "pause"), api.PauseRequest{FilesystemOnly: true}, nil); err != nil {
			return err
		}
	}
	if kept {
		// Its processes live on; only the layer's connections to the
		// sandbox (PTYs, watchers) were cut by the pause.
		s.ptys.forget(id)
		s.watchers.forget(id)
	} else {
		s.forget(id)
	}
	_, _, err = s.table.update(id, false, func(e *entry) { e.Paused = true })
	return err
}

// forget drops what the layer holds in memory about a sandbox's
// processes, PTYs, watchers and names (it was killed or paused).
func (s *Server) forget(id string) {
	s.procs.forget(id)
	s.ptys.forget(id)
	s.watchers.forget(id)
	s.names.forget(id)
	s.metricsMu.Lock()
	delete(s.lastCPU, id)
	s.metricsMu.Unlock()
	s.usersMu.Lock()
	for k := range s.users {
		if strings.HasPrefix(k, id+"/") {
			delete(s.users, k)
		}
	}
	s.usersMu.Unlock()
}
