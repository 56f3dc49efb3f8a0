package client

import (
	"context"
	"fmt"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// WithSleepAfter sets how long the sandbox may be idle before it sleeps
// (rounded up to milliseconds).
func WithSleepAfter(d time.Duration) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.SleepAfter = roundMillis(d) })
}

// WithKeepAlive keeps the sandbox from ever sleeping.
func WithKeepAlive(keep bool) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.KeepAlive = &keep })
}

// WithInstanceType applies a preset of limits: "lite", "standard" or
// "heavy". Limits given with WithLimits override its fields.
func WithInstanceType(name string) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.InstanceType = name })
}

// WithRuntime chooses the runtime that runs the sandbox: "crun" or "runc"
// (a container on the host's kernel; the one the daemon detected) or
// "gvisor" (gVisor's user-space kernel). Default: the daemon's
// --default-runtime.
func WithRuntime(name string) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.Runtime = name })
}

// Stop stops the sandbox's container on request. Its disk, settings and
// exposed ports stay; the next call starts it again, exactly as a wake.
func (s *Sandbox) Stop(ctx context.Context) (*api.Sandbox, error) { return s.action(ctx, "stop") }

// Start starts a sleeping, paused, stopped or failed sandbox.
func (s *Sandbox) Start(ctx context.Context) (*api.Sandbox, error) { return s.action(ctx, "start") }

// Restart stops the sandbox's container, if it runs, and starts it again.
func (s *Sandbox) Restart(ctx context.Context) (*api.Sandbox, error) {
	return s.action(ctx, "restart")
}

// Renew resets the sandbox's idle timer, as any call does.
func (s *Sandbox) Renew(ctx context.Context) (*api.Sandbox, error) { return s.action(ctx, "renew") }

func (s *Sandbox) action(ctx context.Context, verb string) (*api.Sandbox, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	var sb api.Sandbox
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/"+verb), nil, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// Update changes the settings that may change after creation: sleepAfter
// and keepAlive. Nil fields stay as they are.
func (s *Sandbox) Update(ctx context.Context, sleepAfter *time.Duration, keepAlive *bool) (*api.Sandbox, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	var u api.SandboxUpdate
	if sleepAfter != nil {
		ms := roundMillis(*sleepAfter)
		u.SleepAfter = &ms
	}
	u.KeepAlive = keepAlive
	var sb api.Sandbox
	if err := s.c.doJSON(ctx, http.MethodPatch, sandboxPath(s.id, ""), &u, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// EventStream is the daemon's stream of lifecycle events. It has no
// natural end: it ends with an error event (the client fell behind), when
// closed, or when its context ends.
type EventStream struct {
	eventStream
}

// Events opens the lifecycle event stream; with sandboxID non-empty, only
// that sandbox's events. Close it when done; cancelling ctx ends it too.
func (c *Client) Events(ctx context.Context, sandboxID string) (*EventStream, error) {
	path := "/v1/events"
	if sandboxID != "" {
		if err := validateID(sandboxID); err != nil {
			return nil, err
		}
		path += "?sandbox=" + url.QueryEscape(sandboxID)
	}
	resp, err := c.send(ctx, http.MethodGet, path, nil, sse.ContentType)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != sse.ContentType {
		closeBody(resp.Body)
		return nil, fmt.Errorf("GET %s: answer is not an event stream", path)
	}
	return &EventStream{newEventStream("lifecycle event stream", ctx, resp.Body)}, nil
}

// Next returns the next lifecycle event. An error event (the client fell
// behind) is returned as an *Error; a stream that ends otherwise gives an
// error matching ErrUnavailable.
func (es *EventStream) Next() (api.LifecycleEvent, error) {
	raw, err := es.nextRaw()
	if err != nil {
		return api.LifecycleEvent{}, err
	}
	if api.IsTerminal(raw.Name) {
		var e api.Error
		if raw.Name != api.EventError || raw.Decode(&e) != nil {
			return api.LifecycleEvent{}, es.fail(fmt.Errorf("lifecycle event stream ended with %q: %w", raw.Name, ErrUnavailable))
		}
		return api.LifecycleEvent{}, &Error{Code: e.Code, Message: e.Message}
	}
	var le api.LifecycleEvent
	if err := raw.Decode(&le); err != nil {
		return api.LifecycleEvent{}, es.fail(fmt.Errorf("decoding %s event: %w", raw.Name, err))
	}
	return le, nil
}

// All iterates over the events until the stream ends or the loop stops;
// it closes the stream.
func (es *EventStream) All() iter.Seq2[api.LifecycleEvent, error] {
	return func(yield func(api.LifecycleEvent, error) bool) {
		defer es.Close()
		for {
			ev, err := es.Next()
			if !yield(ev, err) || err != nil {
				return
			}
		}
	}
}
