package client

import (
	"maps"
	"slices"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// SandboxOption sets an option a sandbox is created with; see
// Client.Sandbox. Options apply only when the call creates the sandbox.
type SandboxOption interface {
	applySandbox(*api.SandboxOptions)
}

// ExecOption sets an option of one command; see Sandbox.Exec.
type ExecOption interface {
	applyExec(*execConfig)
}

type sandboxOptionFunc func(*api.SandboxOptions)

func (f sandboxOptionFunc) applySandbox(o *api.SandboxOptions) { f(o) }

type execOptionFunc func(*execConfig)

func (f execOptionFunc) applyExec(c *execConfig) { f(c) }

// EnvOption is returned by WithEnv. It is both a SandboxOption and an
// ExecOption, so one name serves both places:
//
//	sb := c.Sandbox("demo", client.WithEnv(map[string]string{"LANG": "C.UTF-8"})) // every command
//	sb.Exec(ctx, "env", client.WithEnv(map[string]string{"DEBUG": "1"}))           // this command only
type EnvOption map[string]string

func (e EnvOption) applySandbox(o *api.SandboxOptions) { o.Env = mergeMap(o.Env, e) }
func (e EnvOption) applyExec(c *execConfig)            { c.req.Env = mergeMap(c.req.Env, e) }

// WithEnv sets environment variables: given to Client.Sandbox, for every
// session and process of the sandbox; given to Exec or ExecStream, for that
// command only. Several WithEnv options are merged, later ones winning.
func WithEnv(env map[string]string) EnvOption { return EnvOption(maps.Clone(env)) }

// WithImage sets the sandbox's root filesystem image (default "host").
func WithImage(image string) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.Image = image })
}

// WithLabels adds labels, free-form key/value pairs for the caller's
// bookkeeping, shown by List.
func WithLabels(labels map[string]string) SandboxOption {
	labels = maps.Clone(labels)
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.Labels = mergeMap(o.Labels, labels) })
}

// WithLimits sets the sandbox's cgroup limits; zero fields take the daemon's
// defaults.
func WithLimits(l api.Limits) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.Limits = &l })
}

// WithNetwork sets the sandbox's network mode and allowed addresses.
func WithNetwork(n api.NetworkOptions) SandboxOption {
	n.AllowCIDRs, n.AllowHostCIDRs = slices.Clone(n.AllowCIDRs), slices.Clone(n.AllowHostCIDRs)
	return sandboxOptionFunc(func(o *api.SandboxOptions) {
		n := n
		n.AllowCIDRs, n.AllowHostCIDRs = slices.Clone(n.AllowCIDRs), slices.Clone(n.AllowHostCIDRs)
		o.Network = &n
	})
}

// WithOptions replaces every option set so far with opts; options after it
// change it further.
func WithOptions(opts api.SandboxOptions) SandboxOption {
	opts = cloneSandboxOptions(opts)
	return sandboxOptionFunc(func(o *api.SandboxOptions) { *o = cloneSandboxOptions(opts) })
}

func cloneSandboxOptions(o api.SandboxOptions) api.SandboxOptions {
	o.Env = maps.Clone(o.Env)
	o.Labels = maps.Clone(o.Labels)
	if o.Limits != nil {
		l := *o.Limits
		o.Limits = &l
	}
	if o.Network != nil {
		n := *o.Network
		n.AllowCIDRs, n.AllowHostCIDRs = slices.Clone(n.AllowCIDRs), slices.Clone(n.AllowHostCIDRs)
		o.Network = &n
	}
	return o
}

// mergeMap returns dst with src's entries added, allocating dst if needed.
func mergeMap(dst, src map[string]string) map[string]string {
	if dst == nil && src != nil {
		dst = make(map[string]string, len(src))
	}
	maps.Copy(dst, src)
	return dst
}

// execConfig is what the ExecOptions of one call build.
type execConfig struct {
	req       api.ExecRequest
	stdin     []byte
	timeout   time.Duration
	callbacks *Callbacks
}

// CwdOption is returned by WithCwd; it serves Exec, StartProcess and
// CreateSession.
type CwdOption string

func (d CwdOption) applyExec(c *execConfig) { c.req.Cwd = string(d) }

// WithCwd sets the working directory: of one command (Exec), of a process
// (StartProcess), or a session's initial one (CreateSession).
func WithCwd(dir string) CwdOption { return CwdOption(dir) }

// TimeoutOption is returned by WithTimeout; it serves Exec and
// StartProcess.
type TimeoutOption time.Duration

func (d TimeoutOption) applyExec(c *execConfig) { c.timeout = time.Duration(d) }

// WithTimeout makes the daemon kill the command after d. Exec then returns
// an error matching ErrTimeout together with the output captured so far.
// Given to StartProcess, the process's tree is killed after d (status
// killed, reason "timeout"). It is sent in whole milliseconds, rounded up;
// at most api.MaxTimeout.
func WithTimeout(d time.Duration) TimeoutOption { return TimeoutOption(d) }

// WithStdin feeds data to the command's standard input, then closes it.
// Without it, stdin is empty. At most api.MaxStdinBytes.
func WithStdin(data []byte) ExecOption {
	return execOptionFunc(func(c *execConfig) { c.stdin = data })
}

// InSessionOption is returned by InSession; it serves Exec and
// StartProcess.
type InSessionOption string

func (id InSessionOption) applyExec(c *execConfig) { c.req.SessionID = string(id) }

// InSession runs the command (or starts the process) in the named session
// instead of the default one.
func InSession(id string) InSessionOption { return InSessionOption(id) }

// WithCallbacks makes Exec stream the command and call cb as output
// arrives, like the reference SDK's exec(cmd, {stream: true, onOutput}).
// Exec still returns the whole result at the end.
func WithCallbacks(cb Callbacks) ExecOption {
	return execOptionFunc(func(c *execConfig) { c.callbacks = &cb })
}
