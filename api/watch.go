package api

import (
	"net/http"
	"time"
)

// CodeWatchOverflow ends a watch that lost events: the kernel's queue or
// the watch's own buffer overflowed because events came faster than the
// client read them. List the directory again and start a new watch.
const CodeWatchOverflow Code = "WATCH_OVERFLOW"

func init() {
	RegisterStatus(CodeWatchOverflow, http.StatusServiceUnavailable)
}

// Limits of watches, per sandbox.
const (
	// MaxWatches bounds the watches of one sandbox, streaming and polled
	// together; one more is RESOURCE_EXHAUSTED.
	MaxWatches = 64
	// MaxWatchedDirectories bounds the directories all the watches of one
	// sandbox observe (one inotify watch each).
	MaxWatchedDirectories = 16384
)

// Watch event types. A watch stream carries watching first, then any
// number of event, and ends with error (the watch broke: overflow, limit,
// the watched path went away) or when the client disconnects.
const (
	WatchEventWatching = "watching"
	WatchEventEvent    = "event"
)

// Kinds of change in WatchEvent.EventType.
const (
	ChangeCreate   = "create"
	ChangeModify   = "modify"
	ChangeDelete   = "delete"
	ChangeMoveFrom = "move_from"
	ChangeMoveTo   = "move_to"
	ChangeAttrib   = "attrib"
)

// WatchRequest is the body of POST /v1/sandboxes/{id}/files/watch (a
// stream) and, with Since, of POST .../files/changes (a poll).
type WatchRequest struct {
	// Path is the directory (or file) to watch.
	Path string `json:"path"`
	// Recursive watches the whole tree below Path, including directories
	// created later. Symbolic links are not followed.
	Recursive bool `json:"recursive,omitempty"`
	// Include, when not empty, keeps only events whose path relative to
	// Path matches one of these globs; Exclude drops events that match
	// (and excluded directories are not watched at all). A glob without a
	// slash matches any path element ("*.log", "node_modules"); one with a
	// slash matches from Path on, with ** spanning directories
	// ("src/**/*.go"). At most MaxGlobs of MaxGlobBytes each.
	Include []string `json:"include,omitempty"`
	Exclude []string `json:"exclude,omitempty"`
	// Since is the Version of the last poll (files/changes only); empty
	// starts polling.
	Since     string `json:"since,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
}

// WatchEvent is one Server-Sent Event of a watch stream, and one item of
// ChangesResult.Events. The SSE event name equals Type.
type WatchEvent struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	// Path is, on watching, the absolute path watched; on event, the
	// absolute path of what changed.
	Path string `json:"path,omitempty"`
	// EventType is create, modify, delete, move_from, move_to or attrib
	// (on event).
	EventType   string `json:"eventType,omitempty"`
	IsDirectory bool   `json:"isDirectory,omitempty"`
	// Cookie pairs the move_from and move_to of one rename (0 otherwise).
	Cookie uint32 `json:"cookie,omitempty"`
	// Code and Message are set on error.
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Results of a poll.
const (
	// ChangesUnchanged: nothing happened since the cursor.
	ChangesUnchanged = "unchanged"
	// ChangesChanged: Events holds what happened since the cursor.
	ChangesChanged = "changed"
	// ChangesResync: the cursor is unknown, too old, or the watch behind
	// it broke (or this is the first poll): list the path again and poll
	// on from Version.
	ChangesResync = "resync"
)

// ChangesResult answers POST .../files/changes.
type ChangesResult struct {
	Success bool `json:"success"`
	// Status is unchanged, changed or resync.
	Status string `json:"status"`
	// Version is the cursor to pass as since next time. It is opaque.
	Version string `json:"version"`
	// Events are the changes since the cursor, oldest first (changed only).
	Events []WatchEvent `json:"events,omitempty"`
}
