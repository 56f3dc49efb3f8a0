package agent

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/watch"
)

// watchOptions validates the options of a watch or poll.
func (s *server) watchOptions(r *http.Request, req *api.WatchRequest) (string, watch.Options, *api.Error) {
	inc, aerr := compileGlobs(req.Include, "include")
	if aerr != nil {
		return "", watch.Options{}, aerr
	}
	exc, aerr := compileGlobs(req.Exclude, "exclude")
	if aerr != nil {
		return "", watch.Options{}, aerr
	}
	p, aerr := s.resolve(sessionOf(r, req.SessionID), req.Path, "path")
	if aerr != nil {
		return "", watch.Options{}, aerr
	}
	return p, watch.Options{Recursive: req.Recursive, Include: inc, Exclude: exc}, nil
}

// watchError classifies an error that refused or ended a watch.
func (s *server) watchError(err error) *api.Error {
	switch {
	case errors.Is(err, watch.ErrOverflow):
		return api.Errorf(api.CodeWatchOverflow, "%v; list the path again and start a new watch", err)
	case errors.Is(err, watch.ErrRootGone):
		return api.Errorf(api.CodeFileNotFound, "%v", err)
	case errors.Is(err, watch.ErrLimit):
		return api.Errorf(api.CodeResourceExhausted, "%v (at most %d watches and %d watched directories per sandbox)", err, api.MaxWatches, api.MaxWatchedDirectories)
	case errors.Is(err, watch.ErrClosed):
		return api.Errorf(api.CodeSandboxUnavailable, "the agent is shutting down")
	}
	return s.fileError(err)
}

// watchFiles is POST /files/watch: watching, then event... as Server-Sent
// Events until the client goes away or the watch breaks (error). The
// watch exists before watching is sent.
func (s *server) watchFiles(w http.ResponseWriter, r *http.Request) {
	var req api.WatchRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Since != "" {
		writeError(w, api.Errorf(api.CodeValidationFailed, "since belongs to POST /files/changes"))
		return
	}
	p, o, aerr := s.watchOptions(r, &req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	wt, err := s.files.hub.Watch(p, o)
	if err != nil {
		writeError(w, s.watchError(err))
		return
	}
	defer wt.Close()
	ew := newEventWriter(w, s.writeTimeout)
	w.WriteHeader(http.StatusOK)
	send := func(ev *api.WatchEvent) error {
		return ew.write(func() error { return ew.sse.Send(ev.Type, ev) })
	}
	hb := startHeartbeat(s.keepalive, ew.lastWrite, ew.keepalive)
	defer hb.stop()
	if send(&api.WatchEvent{Type: api.WatchEventWatching, Timestamp: now(), Path: p}) != nil {
		return
	}
	ctx := r.Context()
	for {
		ev, err := wt.Next(ctx.Done(), func() error { return context.Cause(ctx) })
		if ctx.Err() != nil {
			return // the client went away; the deferred Close releases the watch
		}
		if err != nil {
			aerr := s.watchError(err)
			send(&api.WatchEvent{Type: api.EventError, Timestamp: now(), Code: aerr.Code, Message: aerr.Message})
			return
		}
		if send(wireEvent(ev)) != nil {
			return
		}
	}
}

func wireEvent(ev watch.Event) *api.WatchEvent {
	return &api.WatchEvent{
		Type: api.WatchEventEvent, Timestamp: ev.Time.UTC(), Path: ev.Path,
		EventType: ev.Type, IsDirectory: ev.IsDir, Cookie: ev.Cookie,
	}
}

// checkChanges is POST /files/changes: a poll with a version cursor.
func (s *server) checkChanges(w http.ResponseWriter, r *http.Request) {
	var req api.WatchRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return
	}
	if len(req.Since) > 128 {
		writeError(w, api.Errorf(api.CodeValidationFailed, "since is not a version this API gave out"))
		return
	}
	p, o, aerr := s.watchOptions(r, &req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	key := strings.Join([]string{p, strconv.FormatBool(req.Recursive), strings.Join(req.Include, "\x00"), strings.Join(req.Exclude, "\x00")}, "\x01")
	c, err := s.files.hub.Changes(p, o, key, req.Since)
	if err != nil {
		writeError(w, s.watchError(err))
		return
	}
	res := api.ChangesResult{Success: true, Status: c.Status, Version: c.Version}
	for _, ev := range c.Events {
		res.Events = append(res.Events, *wireEvent(ev))
	}
	writeJSON(w, http.StatusOK, res)
}
