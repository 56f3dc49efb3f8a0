package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/files"
	"github.com/sandboxd/sandboxd/internal/agent/files/glob"
	"github.com/sandboxd/sandboxd/internal/agent/git"
	"github.com/sandboxd/sandboxd/internal/agent/session"
	"github.com/sandboxd/sandboxd/internal/agent/watch"
)

// fileService is what the file, watch and git routes share.
type fileService struct {
	fs        *files.FS
	hub       *watch.Hub
	git       *git.Cloner
	workspace string
	// jsonBytes bounds the file content held in memory by JSON reads and
	// writes at once; raw routes stream and take none of it.
	jsonBytes *semaphore.Weighted
}

// jsonBudget is the content the JSON file routes may hold in memory at
// once, all calls together.
const jsonBudget = 4 * api.MaxJSONFileBytes

// maxFileCallBody bounds the body of the file routes that carry no
// content.
const maxFileCallBody = 64 << 10

// newFileService opens the sandbox's file system ("/": the agent runs in
// the sandbox's root). Git runs like user code: through the spawn wrapper,
// with the sandbox's environment.
func newFileService(cfg Config, sc session.Config) (*fileService, error) {
	fsys, err := files.Open("/")
	if err != nil {
		return nil, err
	}
	return &fileService{
		fs:  fsys,
		hub: watch.New(fsys, watch.Config{MaxWatches: api.MaxWatches, MaxDirs: api.MaxWatchedDirectories}),
		git: git.New(git.Config{
			Self: sc.Self, CgroupRoot: sc.CgroupRoot, Env: sc.BaseEnv, Reaper: sc.Reaper, Log: sc.Log,
		}),
		workspace: cfg.Workspace,
		jsonBytes: semaphore.NewWeighted(jsonBudget),
	}, nil
}

// copyBuffers are the buffers of raw uploads: large, so that a transfer
// costs few system calls, and pooled, so that memory stays flat.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// onlyWriter hides a writer's ReadFrom, so io.CopyBuffer uses the pooled
// buffer.
type onlyWriter struct{ io.Writer }

// sessionOf names the session of a call: the body's sessionId, else the
// X-Sandbox-Session header, else "" (the default session, when needed).
func sessionOf(r *http.Request, fromBody string) string {
	if fromBody != "" {
		return fromBody
	}
	return r.Header.Get(api.SessionHeader)
}

// resolve turns a path of a request into a clean absolute sandbox path: a
// relative one is joined with the working directory of the session named
// (the default session when none is). A named session must exist.
func (s *server) resolve(sessionID, p, field string) (string, *api.Error) {
	switch {
	case p == "":
		return "", api.Errorf(api.CodeValidationFailed, "%s is empty", field)
	case len(p) > api.MaxPathBytes:
		return "", api.Errorf(api.CodeValidationFailed, "%s is %d bytes long; at most %d are allowed", field, len(p), api.MaxPathBytes)
	case strings.IndexByte(p, 0) >= 0:
		return "", api.Errorf(api.CodeValidationFailed, "%s contains a NUL byte", field)
	}
	if sessionID != "" || !path.IsAbs(p) {
		id := sessionID
		if id == "" {
			id = session.Default
		}
		if !session.ValidID(id) {
			return "", api.Errorf(api.CodeValidationFailed, "sessionId must be 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit")
		}
		sess, err := s.sessions.Get(id)
		if err != nil {
			return "", s.apiError(err)
		}
		if !path.IsAbs(p) {
			cwd, err := sess.CurrentDir()
			if err != nil {
				return "", api.Errorf(api.CodeFileNotFound, "%s is relative, and the working directory of session %s no longer exists", field, id)
			}
			p = path.Join(cwd, p)
		}
	}
	clean, err := files.Clean(p)
	if err != nil {
		return "", api.Errorf(api.CodeValidationFailed, "%s: %s", field, strings.TrimPrefix(err.Error(), files.ErrInvalidPath.Error()+": "))
	}
	return clean, nil
}

// ownerOf is who owns what a call in the session sessionID creates: the
// session's user, or nil (root) for the default session, a root session
// or a session that does not exist (resolve reports that).
func (s *server) ownerOf(sessionID string) *files.Owner {
	if sessionID == "" {
		return nil
	}
	sess, err := s.sessions.Get(sessionID)
	if err != nil {
		return nil
	}
	if a := sess.Account(); a != nil {
		return &files.Owner{UID: a.UID, GID: a.GID}
	}
	return nil
}

// fileError classifies an error of package files, once, here.
func (s *server) fileError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	where := ""
	var pe *files.PathError
	if errors.As(err, &pe) {
		where = pe.Path + ": "
	}
	code := api.CodeInternal
	var errno unix.Errno
	msg := ""
	switch {
	case errors.Is(err, files.ErrInvalidPath), errors.Is(err, files.ErrRoot), errors.Is(err, files.ErrCrossDevice),
		errors.Is(err, files.ErrBadArchive):
		code = api.CodeValidationFailed
	case errors.Is(err, files.ErrForbidden):
		code = api.CodePermissionDenied
	case errors.Is(err, files.ErrNotRegular), errors.Is(err, unix.ENXIO):
		code, msg = api.CodeValidationFailed, "not a regular file (a FIFO, socket or device)"
	case errors.As(err, &errno):
		switch errno {
		case unix.ENOENT:
			code, msg = api.CodeFileNotFound, "no such file or directory"
		case unix.EEXIST, unix.ENOTEMPTY:
			code, msg = api.CodeFileExists, "already exists"
		case unix.EISDIR:
			code, msg = api.CodeIsDirectory, "is a directory"
		case unix.ENOTDIR:
			code, msg = api.CodeNotDirectory, "not a directory"
		case unix.EACCES, unix.EPERM:
			code, msg = api.CodePermissionDenied, "permission denied"
		case unix.EROFS:
			code, msg = api.CodePermissionDenied, "read-only file system"
		case unix.EBUSY, unix.ETXTBSY:
			code, msg = api.CodePermissionDenied, "in use (a mount point, or a running program)"
		case unix.EXDEV:
			code, msg = api.CodePermissionDenied, "the path leaves the directory"
		case unix.ENOSPC, unix.EDQUOT:
			code, msg = api.CodeNoSpace, "no space left on the sandbox's disk"
		case unix.ENAMETOOLONG:
			code, msg = api.CodeNameTooLong, "a name in the path is longer than 255 bytes"
		case unix.EFBIG:
			code, msg = api.CodeFileTooLarge, "the file is too large for the file system"
		case unix.ELOOP:
			code, msg = api.CodeValidationFailed, "too many levels of symbolic links, or a link through /proc/<pid>/{root,cwd,fd,exe}, which the file API does not follow"
		case unix.EINVAL:
			code, msg = api.CodeValidationFailed, "invalid argument (moving a directory into itself?)"
		}
	}
	if code == api.CodeInternal {
		s.log.Error("file operation failed", "err", err)
		return api.Errorf(api.CodeInternal, "internal error in the sandbox agent")
	}
	if msg == "" {
		msg = err.Error()
		if pe != nil {
			msg = pe.Err.Error()
		}
		msg = strings.TrimPrefix(msg, files.ErrInvalidPath.Error()+": ")
	}
	return api.Errorf(code, "%s%s", where, msg)
}

// parseMode reads an octal mode ("0644", "755", "4755").
func parseMode(s string) (fs.FileMode, *api.Error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, api.Errorf(api.CodeValidationFailed, "mode %q is not an octal mode between 0 and 7777", s)
	}
	m := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// ownerID checks a uid or gid.
func ownerID(v *int, name string) (int, *api.Error) {
	if v == nil {
		return -1, nil
	}
	if *v < 0 || *v > 1<<32-2 {
		return 0, api.Errorf(api.CodeValidationFailed, "%s %d is out of range", name, *v)
	}
	return *v, nil
}

// createOptions builds the options of a write.
func createOptions(mode string, uid, gid *int, parents bool) (files.CreateOptions, *api.Error) {
	o := files.CreateOptions{CreateParents: parents}
	if mode != "" {
		m, aerr := parseMode(mode)
		if aerr != nil {
			return o, aerr
		}
		o.Perm, o.SetPerm = m, true
	}
	var aerr *api.Error
	if o.UID, aerr = ownerID(uid, "uid"); aerr != nil {
		return o, aerr
	}
	if o.GID, aerr = ownerID(gid, "gid"); aerr != nil {
		return o, aerr
	}
	return o, nil
}

// writeFile is POST /files/write: content in JSON.
func (s *server) writeFile(w http.ResponseWriter, r *http.Request) {
	weight := int64(api.MaxJSONWriteBody)
	if r.ContentLength >= 0 && r.ContentLength < weight {
		weight = r.ContentLength
	}
	if err := s.files.jsonBytes.Acquire(r.Context(), weight); err != nil {
		return // the caller went away
	}
	defer s.files.jsonBytes.Release(weight)
	var req api.WriteFileRequest
	if aerr := decodeBody(w, r, api.MaxJSONWriteBody, &req, false); aerr != nil {
		if aerr.Code == api.CodeRequestTooLarge {
			aerr = api.Errorf(api.CodeFileTooLarge, "a JSON write carries at most %d MiB of content (%d MiB of JSON); stream larger files with PUT /files/raw", api.MaxJSONFileBytes>>20, api.MaxJSONWriteBody>>20)
		}
		writeError(w, aerr)
		return
	}
	var content []byte
	switch req.Encoding {
	case "", api.EncodingUTF8:
		content = []byte(req.Content)
	case api.EncodingBase64:
		var err error
		if content, err = base64.StdEncoding.DecodeString(req.Content); err != nil {
			writeError(w, api.Errorf(api.CodeValidationFailed, "content is not valid base64"))
			return
		}
	default:
		writeError(w, api.Errorf(api.CodeValidationFailed, "encoding must be %q or %q", api.EncodingUTF8, api.EncodingBase64))
		return
	}
	if len(content) > api.MaxJSONFileBytes {
		writeError(w, api.Errorf(api.CodeFileTooLarge, "a JSON write carries at most %d MiB of content; stream larger files with PUT /files/raw", api.MaxJSONFileBytes>>20))
		return
	}
	o, aerr := createOptions(req.Mode, req.UID, req.GID, req.CreateParents)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	sid := sessionOf(r, req.SessionID)
	p, aerr := s.resolve(sid, req.Path, "path")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	o.Owner = s.ownerOf(sid)
	n, err := s.writeContent(p, o, func(f io.Writer) (int64, error) {
		n, err := f.Write(content)
		return int64(n), err
	})
	if err != nil {
		writeError(w, s.fileError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.WriteFileResult{Success: true, Path: p, BytesWritten: n})
}

// writeContent creates p and fills it with fill. A file this call created
// is removed again when filling fails.
func (s *server) writeContent(p string, o files.CreateOptions, fill func(io.Writer) (int64, error)) (int64, error) {
	file, created, err := s.files.fs.Create(p, o)
	if err != nil {
		return 0, err
	}
	n, err := fill(file)
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil && created {
		s.files.fs.Remove(p, false)
	}
	return n, err
}

// openForRead decodes a read request (JSON or streamed), resolves its path
// and opens the file. When it cannot, it answers the error and reports
// false.
func (s *server) openForRead(w http.ResponseWriter, r *http.Request) (api.ReadFileRequest, string, *os.File, files.Entry, bool) {
	var req api.ReadFileRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return req, "", nil, files.Entry{}, false
	}
	switch req.Encoding {
	case "", api.EncodingUTF8, api.EncodingBase64:
	default:
		writeError(w, api.Errorf(api.CodeValidationFailed, "encoding must be empty (auto), %q or %q", api.EncodingUTF8, api.EncodingBase64))
		return req, "", nil, files.Entry{}, false
	}
	p, aerr := s.resolve(sessionOf(r, req.SessionID), req.Path, "path")
	if aerr != nil {
		writeError(w, aerr)
		return req, "", nil, files.Entry{}, false
	}
	file, e, err := s.files.fs.OpenRead(p)
	if err != nil {
		writeError(w, s.fileError(err))
		return req, "", nil, files.Entry{}, false
	}
	return req, p, file, e, true
}

// readFile is POST /files/read: the whole file in JSON.
func (s *server) readFile(w http.ResponseWriter, r *http.Request) {
	req, p, file, e, ok := s.openForRead(w, r)
	if !ok {
		return
	}
	defer file.Close()
	tooLarge := api.Errorf(api.CodeFileTooLarge, "%s is %d bytes; a JSON read returns at most %d MiB: use GET /files/raw or POST /files/read/stream", p, e.Size, api.MaxJSONFileBytes>>20)
	if e.Size > api.MaxJSONFileBytes {
		writeError(w, tooLarge)
		return
	}
	weight := max(e.Size, 1)
	if err := s.files.jsonBytes.Acquire(r.Context(), weight); err != nil {
		return
	}
	defer s.files.jsonBytes.Release(weight)
	data, err := io.ReadAll(io.LimitReader(file, api.MaxJSONFileBytes+1))
	if err != nil {
		writeError(w, s.fileError(&files.PathError{Op: "read", Path: p, Err: err}))
		return
	}
	if len(data) > api.MaxJSONFileBytes {
		writeError(w, tooLarge) // it grew meanwhile
		return
	}
	res := api.ReadFileResult{
		Success:  true,
		Path:     p,
		MimeType: files.ContentType(p, data[:min(len(data), 512)]),
		Size:     int64(len(data)),
		IsBinary: !files.IsText(data) || files.PartialRuneLen(data) > 0,
	}
	switch {
	case req.Encoding == api.EncodingBase64 || (req.Encoding == "" && res.IsBinary):
		res.Content, res.Encoding = base64.StdEncoding.EncodeToString(data), api.EncodingBase64
	case res.IsBinary:
		writeError(w, api.Errorf(api.CodeValidationFailed, "%s is not UTF-8 text; read it with encoding %q", p, api.EncodingBase64))
		return
	default:
		res.Content, res.Encoding = string(data), api.EncodingUTF8
	}
	writeJSON(w, http.StatusOK, res)
}

// streamChunk is the size of a chunk of a streamed read, before encoding.
const streamChunk = 64 << 10

// readStream is POST /files/read/stream: metadata, chunk..., then complete
// or error, as Server-Sent Events. Errors before the file is open are
// plain JSON errors.
func (s *server) readStream(w http.ResponseWriter, r *http.Request) {
	req, p, file, e, ok := s.openForRead(w, r)
	if !ok {
		return
	}
	defer file.Close()
	buf := make([]byte, streamChunk+utf8Max)
	head, err := io.ReadFull(file, buf[:streamChunk])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		writeError(w, s.fileError(&files.PathError{Op: "read", Path: p, Err: err}))
		return
	}
	binary := req.Encoding == api.EncodingBase64 || !files.IsText(buf[:head])
	if binary && req.Encoding == api.EncodingUTF8 {
		writeError(w, api.Errorf(api.CodeValidationFailed, "%s is not UTF-8 text; read it with encoding %q", p, api.EncodingBase64))
		return
	}
	enc := api.EncodingUTF8
	if binary {
		enc = api.EncodingBase64
	}
	ew := newEventWriter(w, s.writeTimeout)
	w.WriteHeader(http.StatusOK)
	send := func(ev *api.FileStreamEvent) error {
		ev.Timestamp = now()
		return ew.write(func() error { return ew.sse.Send(ev.Type, ev) })
	}
	hb := startHeartbeat(s.keepalive, ew.lastWrite, ew.keepalive)
	defer hb.stop()
	if send(&api.FileStreamEvent{Type: api.FileEventMetadata, Path: p, MimeType: files.ContentType(p, buf[:min(head, 512)]), Size: e.Size, IsBinary: binary, Encoding: enc}) != nil {
		return
	}
	var total int64
	held := 0 // bytes of an incomplete character carried to the next chunk
	n := head
	for {
		if n > 0 {
			chunk := buf[:held+n]
			keep := 0
			if !binary {
				keep = files.PartialRuneLen(chunk)
			}
			out := chunk[:len(chunk)-keep]
			if len(out) > 0 {
				ev := &api.FileStreamEvent{Type: api.FileEventChunk}
				if binary || !files.IsText(out) {
					ev.Data, ev.Encoding = base64.StdEncoding.EncodeToString(out), api.EncodingBase64
				} else {
					ev.Data = string(out)
				}
				if send(ev) != nil {
					return
				}
				total += int64(len(out))
			}
			held = copy(buf, chunk[len(chunk)-keep:])
		}
		if r.Context().Err() != nil {
			return
		}
		var err error
		n, err = file.Read(buf[held : held+streamChunk])
		if errors.Is(err, io.EOF) && n == 0 {
			if held > 0 { // a character cut at the very end: send it as it is
				ev := &api.FileStreamEvent{Type: api.FileEventChunk, Data: base64.StdEncoding.EncodeToString(buf[:held]), Encoding: api.EncodingBase64}
				if send(ev) != nil {
					return
				}
				total += int64(held)
			}
			send(&api.FileStreamEvent{Type: api.EventComplete, BytesRead: total})
			return
		}
		if err != nil && !errors.Is(err, io.EOF) {
			aerr := s.fileError(&files.PathError{Op: "read", Path: p, Err: err})
			send(&api.FileStreamEvent{Type: api.EventError, Code: aerr.Code, Message: aerr.Message})
			return
		}
	}
}

const utf8Max = 4

// readRaw is GET /files/raw?path=P: the file's bytes, with Range,
// If-Range and conditional requests (http.ServeContent), streamed from the
// file without buffering it.
func (s *server) readRaw(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.resolve(r.Header.Get(api.SessionHeader), r.URL.Query().Get("path"), "path")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	file, e, err := s.files.fs.OpenRead(p)
	if err != nil {
		writeError(w, s.fileError(err))
		return
	}
	defer file.Close()
	// The type must be set before ServeContent, which would otherwise ask
	// the mime package (and so the sandbox's /etc/mime.types).
	var head [512]byte
	n, _ := io.ReadFull(file, head[:])
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		writeError(w, s.fileError(&files.PathError{Op: "read", Path: p, Err: err}))
		return
	}
	h := w.Header()
	h.Set("Content-Type", files.ContentType(p, head[:n]))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", fmt.Sprintf(`"%x-%x-%x"`, e.Ino, e.Size, e.ModTime.UnixNano()))
	http.ServeContent(&rangeErrorWriter{ResponseWriter: w}, r, path.Base(p), e.ModTime, file)
}

// rangeErrorWriter turns ServeContent's plain-text 416 into the API's
// JSON error; everything else passes, ReadFrom (sendfile) included.
type rangeErrorWriter struct {
	http.ResponseWriter
	swallow bool
}

func (w *rangeErrorWriter) WriteHeader(code int) {
	if code == http.StatusRequestedRangeNotSatisfiable {
		w.swallow = true
		w.Header().Del("X-Content-Type-Options")
		writeError(w.ResponseWriter, api.Errorf(api.CodeRangeNotSatisfiable, "the requested range is beyond the end of the file (%s)", w.Header().Get("Content-Range")))
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *rangeErrorWriter) Write(p []byte) (int, error) {
	if w.swallow {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom copies the file with a large pooled buffer: the response's own
// ReadFrom uses 32 KiB, and has no sendfile for a unix socket.
func (w *rangeErrorWriter) ReadFrom(r io.Reader) (int64, error) {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	return io.CopyBuffer(onlyWriter{w}, r, *bufp)
}

func (w *rangeErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writeRaw is PUT /files/raw?path=P[&createParents=true][&mode=0644]
// [&uid=N][&gid=N]: the body, streamed into the file.
func (s *server) writeRaw(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var uid, gid *int
	for _, f := range []struct {
		name string
		dst  **int
	}{{"uid", &uid}, {"gid", &gid}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, api.Errorf(api.CodeValidationFailed, "%s %q is not a number", f.name, v))
				return
			}
			*f.dst = &n
		}
	}
	parents, err := parseBool(q.Get("createParents"))
	if err != nil {
		writeError(w, api.Errorf(api.CodeValidationFailed, "createParents must be true or false"))
		return
	}
	o, aerr := createOptions(q.Get("mode"), uid, gid, parents)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	sid := r.Header.Get(api.SessionHeader)
	p, aerr := s.resolve(sid, q.Get("path"), "path")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	o.Owner = s.ownerOf(sid)
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	n, err := s.writeContent(p, o, func(f io.Writer) (int64, error) {
		return copyFull(f, r.Body, *bufp)
	})
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away; the partial file is gone (or was there before)
		}
		var pe *files.PathError
		if !errors.As(err, &pe) && !errors.As(err, new(unix.Errno)) {
			// The body, not the disk, failed.
			writeError(w, api.Errorf(api.CodeValidationFailed, "reading the body failed after %d bytes: %v", n, err))
			return
		}
		if isDiskFull(err) {
			drainBody(w, r)
		}
		writeError(w, s.fileError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.WriteFileResult{Success: true, Path: p, BytesWritten: n})
}

// Bounds of drainBody. The time is not what keeps a client from holding
// the connection (an upload to a disk with room has no bound in time):
// it is room for a loaded host, where the daemon relays a body at 26
// MiB/s or less, so that 1 GiB, the size e2e TestFullDiskIsNoSpace
// sends, is still read to its end (30 s was not, at load 30).
const (
	drainTimeout  = 2 * time.Minute
	maxDrainBytes = 4 << 30
)

// drainBody reads and discards the rest of a request body before an early
// answer (a full disk). A server that answers without reading the body
// closes the connection, and the daemon, still writing the body into it,
// may see the broken connection before the answer: the client then got
// SANDBOX_UNAVAILABLE instead of NO_SPACE. Discarding costs no disk and
// runs at socket speed; a body beyond the bounds still gets the early
// answer and a closed connection.
func drainBody(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(drainTimeout))
	io.Copy(io.Discard, io.LimitReader(r.Body, maxDrainBytes))
	rc.SetReadDeadline(time.Time{})
}

// copyFull copies src to dst in writes of len(buf) (but the last): a
// socket hands out whatever has arrived, often a few kilobytes, and a file
// system write costs far more per call than a socket read. Any read error
// but io.EOF (a body cut short included) is returned.
func copyFull(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n := 0
		var rerr error
		for n < len(buf) && rerr == nil {
			var m int
			m, rerr = src.Read(buf[n:])
			n += m
		}
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if errors.Is(rerr, io.EOF) {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

func parseBool(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	return strconv.ParseBool(s)
}

// mkdir is POST /files/mkdir.
func (s *server) mkdir(w http.ResponseWriter, r *http.Request) {
	var req api.PathRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return
	}
	perm := fs.FileMode(0o755)
	if req.Mode != "" {
		var aerr *api.Error
		if perm, aerr = parseMode(req.Mode); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	sid := sessionOf(r, req.SessionID)
	p, aerr := s.resolve(sid, req.Path, "path")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if err := s.files.fs.Mkdir(p, perm, req.Recursive, s.ownerOf(sid)); err != nil {
		writeError(w, s.fileError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.PathResult{Success: true, Path: p})
}

// decodePath decodes a PathRequest and resolves its path for the calling
// session. When it cannot, it answers the error and reports false.
func (s *server) decodePath(w http.ResponseWriter, r *http.Request) (api.PathRequest, string, bool) {
	var req api.PathRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return req, "", false
	}
	p, aerr := s.resolve(sessionOf(r, req.SessionID), req.Path, "path")
	if aerr != nil {
		writeError(w, aerr)
		return req, "", false
	}
	return req, p, true
}

// deleteFile is POST /files/delete.
func (s *server) deleteFile(w http.ResponseWriter, r *http.Request) {
	req, p, ok := s.decodePath(w, r)
	if !ok {
		return
	}
	if err := s.files.fs.Remove(p, req.Recursive); err != nil {
		aerr := s.fileError(err)
		if aerr.Code == api.CodeIsDirectory {
			aerr.Message += "; pass recursive to delete it and everything in it"
		}
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, api.PathResult{Success: true, Path: p})
}

// rename is POST /files/rename and move is POST /files/move.
func (s *server) rename(w http.ResponseWriter, r *http.Request) { s.renameOrMove(w, r, false) }
func (s *server) move(w http.ResponseWriter, r *http.Request)   { s.renameOrMove(w, r, true) }

func (s *server) renameOrMove(w http.ResponseWriter, r *http.Request, move bool) {
	var req api.RenameRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return
	}
	srcField, dstField, src, dst := "oldPath", "newPath", req.OldPath, req.NewPath
	other := req.SourcePath + req.DestinationPath
	if move {
		srcField, dstField, src, dst = "sourcePath", "destinationPath", req.SourcePath, req.DestinationPath
		other = req.OldPath + req.NewPath
	}
	if other != "" {
		writeError(w, api.Errorf(api.CodeValidationFailed, "this call takes %s and %s", srcField, dstField))
		return
	}
	sid := sessionOf(r, req.SessionID)
	src, aerr := s.resolve(sid, src, srcField)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	dst, aerr = s.resolve(sid, dst, dstField)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var err error
	if move {
		dst, err = s.files.fs.Move(src, dst, req.Overwrite)
	} else {
		err = s.files.fs.Rename(src, dst, req.Overwrite)
	}
	if err != nil {
		aerr := s.fileError(err)
		if aerr.Code == api.CodeFileExists {
			aerr.Message = fmt.Sprintf("%s: %s exists; pass overwrite to replace it", dstField, dst)
		}
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, api.PathResult{Success: true, Path: dst})
}

// exists is POST /files/exists.
func (s *server) exists(w http.ResponseWriter, r *http.Request) {
	_, p, ok := s.decodePath(w, r)
	if !ok {
		return
	}
	ok, mode, err := s.files.fs.Exists(p)
	if err != nil {
		writeError(w, s.fileError(err))
		return
	}
	res := api.ExistsResult{Success: true, Exists: ok}
	if ok {
		res.Type = fileType(mode)
	}
	writeJSON(w, http.StatusOK, res)
}

// stat is POST /files/stat.
func (s *server) stat(w http.ResponseWriter, r *http.Request) {
	_, p, ok := s.decodePath(w, r)
	if !ok {
		return
	}
	e, err := s.files.fs.Stat(p)
	if err != nil {
		writeError(w, s.fileError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.StatResult{Success: true, FileEntry: wireEntry(e)})
}

// listFiles is POST /files/list.
func (s *server) listFiles(w http.ResponseWriter, r *http.Request) {
	var req api.ListFilesRequest
	if aerr := decodeBody(w, r, maxFileCallBody, &req, false); aerr != nil {
		writeError(w, aerr)
		return
	}
	p, aerr := s.resolve(sessionOf(r, req.SessionID), req.Path, "path")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	entries, truncated, err := s.files.fs.List(p, files.ListOptions{Recursive: req.Recursive, Hidden: req.IncludeHidden, Max: api.MaxListEntries})
	if err != nil {
		writeError(w, s.fileError(err))
		return
	}
	res := api.ListFilesResult{Success: true, Path: p, Files: make([]api.FileEntry, len(entries)), Count: len(entries), Truncated: truncated}
	for i, e := range entries {
		res.Files[i] = wireEntry(e)
	}
	writeJSON(w, http.StatusOK, res)
}

func fileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return api.FileTypeFile
	case m.IsDir():
		return api.FileTypeDirectory
	case m&fs.ModeSymlink != 0:
		return api.FileTypeSymlink
	}
	return api.FileTypeOther
}

func wireEntry(e files.Entry) api.FileEntry {
	return api.FileEntry{
		Name:         e.Name,
		AbsolutePath: e.Path,
		RelativePath: e.Rel,
		Type:         fileType(e.Mode),
		Size:         e.Size,
		ModifiedAt:   e.ModTime,
		Mode:         modeString(e.Mode),
		OctalMode:    fmt.Sprintf("%04o", octal(e.Mode)),
		Permissions:  api.FilePermissions{Readable: e.Readable, Writable: e.Writable, Executable: e.Executable},
		UID:          e.UID,
		GID:          e.GID,
		Target:       e.Target,
	}
}

func octal(m fs.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

// modeString is the permission part of ls -l: "rwxr-xr-x", with s/S and
// t/T for the special bits.
func modeString(m fs.FileMode) string {
	const rwx = "rwxrwxrwx"
	b := []byte("---------")
	for i := range 9 {
		if m&(1<<(8-i)) != 0 {
			b[i] = rwx[i]
		}
	}
	special := func(i int, set bool, lower, upper byte) {
		if !set {
			return
		}
		if b[i] == 'x' {
			b[i] = lower
		} else {
			b[i] = upper
		}
	}
	special(2, m&fs.ModeSetuid != 0, 's', 'S')
	special(5, m&fs.ModeSetgid != 0, 's', 'S')
	special(8, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

// exportArchive is GET /files/archive?path=DIR[&exclude=GLOB]...
// [&oneFileSystem=true]: the directory as a tar stream. An error after the stream began cuts the
// connection, so the client sees a broken archive, never a short one that
// looks whole.
func (s *server) exportArchive(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	excl, aerr := compileGlobs(q["exclude"], "exclude")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	oneFS, err := parseBool(q.Get("oneFileSystem"))
	if err != nil {
		writeError(w, api.Errorf(api.CodeValidationFailed, "oneFileSystem must be true or false"))
		return
	}
	p, aerr := s.resolve(r.Header.Get(api.SessionHeader), q.Get("path"), "path")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	e, err := s.files.fs.Stat(p)
	if err == nil && e.Mode&fs.ModeSymlink != 0 {
		_, mode, xerr := s.files.fs.Exists(p)
		if xerr != nil || !mode.IsDir() {
			err = &files.PathError{Op: "export", Path: p, Err: unix.ENOTDIR}
		}
	} else if err == nil && !e.Mode.IsDir() {
		err = &files.PathError{Op: "export", Path: p, Err: unix.ENOTDIR}
	}
	if err != nil {
		writeError(w, s.fileError(err))
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", path.Base(p)+".tar"))
	w.WriteHeader(http.StatusOK)
	if err := s.files.fs.Export(r.Context(), p, w, files.ExportOptions{Exclude: excl, OneFileSystem: oneFS}); err != nil {
		if r.Context().Err() == nil {
			s.log.WarnContext(r.Context(), "tar export failed mid-stream; cutting the connection", "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// importArchive is PUT /files/archive?path=DIR: a tar stream unpacked
// into the directory (made if missing).
func (s *server) importArchive(w http.ResponseWriter, r *http.Request) {
	p, aerr := s.resolve(r.Header.Get(api.SessionHeader), r.URL.Query().Get("path"), "path")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	stats, err := s.files.fs.Import(r.Context(), p, r.Body)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		writeError(w, s.fileError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.ArchiveResult{Success: true, Path: p, Entries: stats.Entries, Bytes: stats.Bytes})
}

func compileGlobs(patterns []string, field string) (*glob.Set, *api.Error) {
	if len(patterns) > api.MaxGlobs {
		return nil, api.Errorf(api.CodeValidationFailed, "%s has %d patterns; at most %d are allowed", field, len(patterns), api.MaxGlobs)
	}
	for _, p := range patterns {
		if len(p) > api.MaxGlobBytes {
			return nil, api.Errorf(api.CodeValidationFailed, "%s: a pattern is %d bytes long; at most %d are allowed", field, len(p), api.MaxGlobBytes)
		}
	}
	set, err := glob.Compile(patterns)
	if err != nil {
		return nil, api.Errorf(api.CodeValidationFailed, "%s: %v", field, err)
	}
	return set, nil
}
