package e2b

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// The messages of envd's filesystem.Filesystem service, in their proto3
// JSON mapping (E2B's spec/envd/filesystem/filesystem.proto).

type entryInfo struct {
	Name          string  `json:"name"`
	Type          string  `json:"type"`
	Path          string  `json:"path"`
	Size          int64   `json:"size,string"`
	Mode          uint32  `json:"mode"`
	Permissions   string  `json:"permissions"`
	Owner         string  `json:"owner"`
	Group         string  `json:"group"`
	ModifiedTime  string  `json:"modifiedTime,omitempty"`
	SymlinkTarget *string `json:"symlinkTarget,omitempty"`
}

type entryMessage struct {
	Entry entryInfo `json:"entry"`
}

type pathRequest struct {
	Path string `json:"path"`
}

type moveRequest struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

type listDirRequest struct {
	Path  string `json:"path"`
	Depth uint32 `json:"depth"`
}

type watchDirRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive"`
}

type watcherRequest struct {
	WatcherID string `json:"watcherId"`
}

type filesystemEvent struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

type watchDirEvent struct {
	Start      *struct{}        `json:"start,omitempty"`
	Filesystem *filesystemEvent `json:"filesystem,omitempty"`
	Keepalive  *struct{}        `json:"keepalive,omitempty"`
}

// maxListDepth bounds ListDir's depth.
const maxListDepth = 64

func (c *call) serveFilesystem(w http.ResponseWriter, r *http.Request, method string) {
	switch method {
	case "Stat":
		var req pathRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) {
			e, err := c.stat(ctx, req.Path)
			return entryMessage{Entry: e}, err
		})
	case "MakeDir":
		var req pathRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return c.makeDir(ctx, req.Path) })
	case "Move":
		var req moveRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return c.move(ctx, req) })
	case "ListDir":
		var req listDirRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return c.listDir(ctx, req) })
	case "Remove":
		var req pathRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return struct{}{}, c.remove(ctx, req.Path) })
	case "WatchDir":
		c.watchDir(w, r)
	case "CreateWatcher":
		var req watchDirRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return c.createWatcher(ctx, req) })
	case "GetWatcherEvents":
		var req watcherRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) { return c.watcherEvents(ctx, req) })
	case "RemoveWatcher":
		var req watcherRequest
		c.unary(w, r, &req, func(ctx context.Context) (any, error) {
			c.s.watchers.remove(c.id, req.WatcherID)
			return struct{}{}, nil
		})
	default:
		writeUnaryError(w, rpcErrorf(codeUnimplemented, "filesystem.Filesystem/%s is not served by sandboxd's E2B layer", method))
	}
}

// stat returns the entry at p (a symlink itself, not its target).
func (c *call) stat(ctx context.Context, p string) (entryInfo, error) {
	abs, err := c.resolve(p)
	if err != nil {
		return entryInfo{}, err
	}
	var st api.StatResult
	if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/stat"), api.PathRequest{Path: abs}, &st); err != nil {
		return entryInfo{}, err
	}
	names, err := c.s.names.of(ctx, c.s, c.id, []api.FileEntry{st.FileEntry})
	if err != nil {
		return entryInfo{}, err
	}
	return toEntry(st.FileEntry, names), nil
}

// toEntry maps sandboxd's FileEntry onto envd's EntryInfo.
func toEntry(f api.FileEntry, n idNames) entryInfo {
	perm, _ := strconv.ParseUint(f.OctalMode, 8, 32)
	fm := fs.FileMode(perm & 0o777)
	if perm&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if perm&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if perm&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	e := entryInfo{
		Name: f.Name, Path: f.AbsolutePath, Size: f.Size, Mode: uint32(perm & 0o777),
		Owner: n.user(f.UID), Group: n.group(f.GID), ModifiedTime: f.ModifiedAt.UTC().Format(time.RFC3339Nano),
	}
	switch f.Type {
	case api.FileTypeFile:
		e.Type = "FILE_TYPE_FILE"
	case api.FileTypeDirectory:
		e.Type, fm = "FILE_TYPE_DIRECTORY", fm|fs.ModeDir
	case api.FileTypeSymlink:
		e.Type, fm = "FILE_TYPE_SYMLINK", fm|fs.ModeSymlink
		target := f.Target
		e.SymlinkTarget = &target
	default:
		e.Type, fm = "FILE_TYPE_UNSPECIFIED", fm|fs.ModeIrregular
	}
	e.Permissions = fm.String()
	return e
}

func isCode(err error, code api.Code) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}

// makeDir creates a directory and its parents, owned by the user:
// already_exists when it is one, invalid_argument when a file is there.
func (c *call) makeDir(ctx context.Context, p string) (any, error) {
	abs, err := c.resolve(p)
	if err != nil {
		return nil, err
	}
	if e, err := c.stat(ctx, abs); err == nil {
		if e.Type == "FILE_TYPE_DIRECTORY" {
			return nil, rpcErrorf(codeAlreadyExists, "directory %s already exists", abs)
		}
		return nil, rpcErrorf(codeInvalidArgument, "path %s already exists and is not a directory", abs)
	} else if !isCode(err, api.CodeFileNotFound) {
		return nil, err
	}
	sid, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/mkdir"), api.PathRequest{Path: abs, Recursive: true, SessionID: sid}, nil); err != nil {
		return nil, err
	}
	e, err := c.stat(ctx, abs)
	return entryMessage{Entry: e}, err
}

// move renames source to destination, making the destination's parents
// and replacing a file there, as envd's os.Rename does.
func (c *call) move(ctx context.Context, req moveRequest) (any, error) {
	src, err := c.resolve(req.Source)
	if err != nil {
		return nil, err
	}
	dst, err := c.resolve(req.Destination)
	if err != nil {
		return nil, err
	}
	sid, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	if parent := path.Dir(dst); parent != "/" {
		if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/mkdir"), api.PathRequest{Path: parent, Recursive: true, SessionID: sid}, nil); err != nil {
			return nil, err
		}
	}
	if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/rename"), api.RenameRequest{OldPath: src, NewPath: dst, Overwrite: true}, nil); err != nil {
		return nil, err
	}
	e, err := c.stat(ctx, dst)
	return entryMessage{Entry: e}, err
}

// listDir lists a directory to a depth (0 and 1: its entries), hidden
// entries included, in pre-order.
func (c *call) listDir(ctx context.Context, req listDirRequest) (any, error) {
	abs, err := c.resolve(req.Path)
	if err != nil {
		return nil, err
	}
	depth := max(int(req.Depth), 1)
	if depth > maxListDepth {
		return nil, rpcErrorf(codeInvalidArgument, "depth %d: at most %d", depth, maxListDepth)
	}
	var res api.ListFilesResult
	lreq := api.ListFilesRequest{Path: abs, Recursive: depth > 1, IncludeHidden: true}
	if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/list"), lreq, &res); err != nil {
		if isCode(err, api.CodeNotDirectory) {
			return nil, rpcErrorf(codeInvalidArgument, "path %s is not a directory", abs)
		}
		return nil, err
	}
	files := res.Files[:0]
	for _, f := range res.Files {
		rel := f.RelativePath
		if rel == "" {
			rel = f.Name
		}
		if strings.Count(rel, "/") < depth {
			files = append(files, f)
		}
	}
	names, err := c.s.names.of(ctx, c.s, c.id, files)
	if err != nil {
		return nil, err
	}
	out := make([]entryInfo, 0, len(files))
	for _, f := range files {
		out = append(out, toEntry(f, names))
	}
	return struct {
		Entries []entryInfo `json:"entries"`
	}{out}, nil
}

// remove removes a file or a tree; a missing path is not an error.
func (c *call) remove(ctx context.Context, p string) error {
	abs, err := c.resolve(p)
	if err != nil {
		return err
	}
	err = c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/delete"), api.PathRequest{Path: abs, Recursive: true}, nil)
	if isCode(err, api.CodeFileNotFound) {
		return nil
	}
	return err
}

// watchDir serves WatchDir: sandboxd's watch of a directory, its events
// named relative to it. A rename's source is RENAME, its target CREATE.
func (c *call) watchDir(w http.ResponseWriter, r *http.Request) {
	var req watchDirRequest
	deadline, err := c.s.readStreamCall(w, r, &req)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	abs, err := c.resolve(req.Path)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	e, err := c.stat(ctx, abs)
	if err != nil {
		writeStreamError(w, err)
		return
	}
	if e.Type != "FILE_TYPE_DIRECTORY" {
		writeStreamError(w, rpcErrorf(codeInvalidArgument, "path %s is not a directory", abs))
		return
	}
	resp, err := c.s.up.stream(ctx, http.MethodPost, sandboxPath(c.id, "files/watch"), api.WatchRequest{Path: abs, Recursive: req.Recursive})
	if err != nil {
		writeStreamError(w, err)
		return
	}
	defer resp.Body.Close()
	sw := newStreamWriter(w)
	defer sw.close() // last: the deadline's timer may be writing its end
	stop := keepalive(r, sw, func() any { return watchDirEvent{Keepalive: &struct{}{}} })
	defer stop()
	if deadline > 0 {
		t := time.AfterFunc(deadline, func() {
			sw.end(rpcErrorf(codeDeadlineExceeded, "the watch reached its timeout of %s", deadline))
			cancel()
		})
		defer t.Stop()
	}
	rd := sse.NewReader(resp.Body)
	for {
		ev, err := rd.Next()
		if err != nil {
			sw.end(rpcErrorf(codeUnavailable, "the watch broke: %v", err))
			return
		}
		var we api.WatchEvent
		if ev.Decode(&we) != nil {
			continue
		}
		var out watchDirEvent
		switch we.Type {
		case api.WatchEventWatching:
			out.Start = &struct{}{}
		case api.WatchEventEvent:
			fe, ok := fsEvent(abs, we)
			if !ok {
				continue
			}
			out.Filesystem = fe
		case "error":
			sw.end(toRPCError(&api.Error{Code: we.Code, Message: we.Message}))
			return
		default:
			continue
		}
		if sw.send(out) != nil {
			return
		}
	}
}

// fsEvent maps a sandboxd change onto envd's FilesystemEvent.
func fsEvent(root string, we api.WatchEvent) (*filesystemEvent, bool) {
	name := strings.TrimPrefix(strings.TrimPrefix(we.Path, root), "/")
	if name == "" {
		return nil, false
	}
	var typ string
	switch we.EventType {
	case api.ChangeCreate, api.ChangeMoveTo:
		typ = "EVENT_TYPE_CREATE"
	case api.ChangeModify:
		typ = "EVENT_TYPE_WRITE"
	case api.ChangeDelete:
		typ = "EVENT_TYPE_REMOVE"
	case api.ChangeMoveFrom:
		typ = "EVENT_TYPE_RENAME"
	case api.ChangeAttrib:
		typ = "EVENT_TYPE_CHMOD"
	default:
		return nil, false
	}
	return &filesystemEvent{Name: name, Type: typ}, true
}

// Polled watchers (CreateWatcher, GetWatcherEvents, RemoveWatcher: the
// Python SDK's sync watch) are sandboxd's polled changes, a cursor kept
// here per watcher ID.

const maxWatchers = api.MaxWatches

type watcher struct {
	path      string
	recursive bool
	version   string
}

type watcherBook struct {
	mu    sync.Mutex
	boxes map[string]map[string]*watcher
	seq   uint64
}

func newWatcherBook() *watcherBook { return &watcherBook{boxes: map[string]map[string]*watcher{}} }

func (b *watcherBook) remove(sandboxID, id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.boxes[sandboxID], id)
}

func (b *watcherBook) forget(sandboxID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.boxes, sandboxID)
}

func (c *call) createWatcher(ctx context.Context, req watchDirRequest) (any, error) {
	abs, err := c.resolve(req.Path)
	if err != nil {
		return nil, err
	}
	e, err := c.stat(ctx, abs)
	if err != nil {
		return nil, err
	}
	if e.Type != "FILE_TYPE_DIRECTORY" {
		return nil, rpcErrorf(codeInvalidArgument, "path %s is not a directory", abs)
	}
	var res api.ChangesResult
	if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/changes"), api.WatchRequest{Path: abs, Recursive: req.Recursive}, &res); err != nil {
		return nil, err
	}
	b := c.s.watchers
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.boxes[c.id]
	if m == nil {
		m = map[string]*watcher{}
		b.boxes[c.id] = m
	}
	if len(m) >= maxWatchers {
		return nil, rpcErrorf(codeResourceExhausted, "at most %d watchers per sandbox", maxWatchers)
	}
	b.seq++
	id := fmt.Sprintf("w%d", b.seq)
	m[id] = &watcher{path: abs, recursive: req.Recursive, version: res.Version}
	return struct {
		WatcherID string `json:"watcherId"`
	}{id}, nil
}

func (c *call) watcherEvents(ctx context.Context, req watcherRequest) (any, error) {
	b := c.s.watchers
	b.mu.Lock()
	wt, ok := b.boxes[c.id][req.WatcherID]
	var cur watcher
	if ok {
		cur = *wt
	}
	b.mu.Unlock()
	if !ok {
		return nil, rpcErrorf(codeNotFound, "watcher %q not found", req.WatcherID)
	}
	var res api.ChangesResult
	wreq := api.WatchRequest{Path: cur.path, Recursive: cur.recursive, Since: cur.version}
	if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "files/changes"), wreq, &res); err != nil {
		return nil, err
	}
	if res.Status == "resync" && cur.version != "" {
		return nil, rpcErrorf(codeFailedPrecondition, "the watcher lost events; create a new one")
	}
	b.mu.Lock()
	if wt, ok := b.boxes[c.id][req.WatcherID]; ok {
		wt.version = res.Version
	}
	b.mu.Unlock()
	events := []filesystemEvent{}
	for _, we := range res.Events {
		if fe, ok := fsEvent(cur.path, we); ok {
			events = append(events, *fe)
		}
	}
	return struct {
		Events []filesystemEvent `json:"events"`
	}{events}, nil
}

// idNames turns numeric owners into names from the sandbox's /etc.
type idNames struct {
	users, groups map[int]string
}

func (n idNames) user(uid int) string {
	if s, ok := n.users[uid]; ok {
		return s
	}
	return strconv.Itoa(uid)
}

func (n idNames) group(gid int) string {
	if s, ok := n.groups[gid]; ok {
		return s
	}
	return strconv.Itoa(gid)
}

// nameCache keeps each sandbox's user and group names; it reads the
// sandbox's /etc/passwd and /etc/group again when an entry names an ID
// it does not know (users are created on demand).
type nameCache struct {
	mu    sync.Mutex
	boxes map[string]idNames
}

func newNameCache() *nameCache { return &nameCache{boxes: map[string]idNames{}} }

func (nc *nameCache) forget(sandboxID string) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	delete(nc.boxes, sandboxID)
}

func (nc *nameCache) of(ctx context.Context, s *Server, sandboxID string, files []api.FileEntry) (idNames, error) {
	nc.mu.Lock()
	n, ok := nc.boxes[sandboxID]
	nc.mu.Unlock()
	if ok && n.knows(files) {
		return n, nil
	}
	n = idNames{users: readIDFile(ctx, s, sandboxID, "/etc/passwd"), groups: readIDFile(ctx, s, sandboxID, "/etc/group")}
	nc.mu.Lock()
	nc.boxes[sandboxID] = n
	nc.mu.Unlock()
	return n, nil
}

func (n idNames) knows(files []api.FileEntry) bool {
	for _, f := range files {
		if _, ok := n.users[f.UID]; !ok {
			return false
		}
		if _, ok := n.groups[f.GID]; !ok {
			return false
		}
	}
	return true
}

// readIDFile parses name:x:id lines; a file that cannot be read maps
// nothing (numbers are shown then).
func readIDFile(ctx context.Context, s *Server, sandboxID, p string) map[int]string {
	out := map[int]string{}
	var res api.ReadFileResult
	if err := s.up.call(ctx, http.MethodPost, sandboxPath(sandboxID, "files/read"), api.ReadFileRequest{Path: p, Encoding: "utf-8"}, &res); err != nil {
		return out
	}
	for _, line := range strings.Split(res.Content, "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		if id, err := strconv.Atoi(f[2]); err == nil {
			if _, dup := out[id]; !dup {
				out[id] = f[0]
			}
		}
	}
	return out
}
