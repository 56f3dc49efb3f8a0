package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/api"
)

// FileOption sets an option of a file call (WriteFile, ReadFile, OpenFile,
// Upload, Mkdir, DeleteFile, RenameFile, MoveFile, ListFiles, Exists,
// Stat, Watch, CheckChanges, ExportTar, ImportTar). An option a call does
// not use is ignored.
type FileOption interface {
	applyFile(*fileConfig)
}

type fileOptionFunc func(*fileConfig)

func (f fileOptionFunc) applyFile(c *fileConfig) { f(c) }

// fileConfig is what the FileOptions of one call build.
type fileConfig struct {
	session        string
	recursive      bool
	hidden         bool
	parents        bool
	overwrite      bool
	mode           *fs.FileMode
	uid, gid       *int
	encoding       string
	rangeSet       bool
	offset, length int64
	include        []string
	exclude        []string
	oneFileSystem  bool
}

func newFileConfig(opts []FileOption) *fileConfig {
	c := &fileConfig{}
	for _, o := range opts {
		o.applyFile(c)
	}
	return c
}

// InSession also serves the file calls and GitCheckout: relative paths
// then resolve against the session's working directory (its cd), and what
// the call creates belongs to the session's user.
func (id InSessionOption) applyFile(c *fileConfig) { c.session = string(id) }
func (id InSessionOption) applyGit(c *gitConfig)   { c.req.SessionID = string(id) }

// Recursive makes Mkdir create missing parents (and accept an existing
// directory), DeleteFile remove a directory with everything in it,
// ListFiles list the whole tree, and Watch and CheckChanges cover the
// whole tree.
func Recursive() FileOption { return fileOptionFunc(func(c *fileConfig) { c.recursive = true }) }

// IncludeHidden makes ListFiles list (and enter) names starting with a
// dot.
func IncludeHidden() FileOption { return fileOptionFunc(func(c *fileConfig) { c.hidden = true }) }

// CreateParents makes WriteFile and Upload create missing parent
// directories.
func CreateParents() FileOption { return fileOptionFunc(func(c *fileConfig) { c.parents = true }) }

// Overwrite lets RenameFile and MoveFile replace an existing target.
func Overwrite() FileOption { return fileOptionFunc(func(c *fileConfig) { c.overwrite = true }) }

// WithMode sets the mode of the file WriteFile or Upload writes (permission
// bits plus fs.ModeSetuid, ModeSetgid, ModeSticky), or of the directory
// Mkdir makes.
func WithMode(m fs.FileMode) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.mode = &m })
}

// WithOwner sets the owner of the file WriteFile or Upload writes.
func WithOwner(uid, gid int) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.uid, c.gid = &uid, &gid })
}

// WithEncoding asks ReadFile for the content in this wire encoding:
// api.EncodingUTF8 (an error for a file that is not UTF-8 text) or
// api.EncodingBase64. Either way File.Content holds the raw bytes.
func WithEncoding(enc string) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.encoding = enc })
}

// WithRange makes OpenFile and Download read length bytes from offset;
// length < 0 reads to the end. A negative offset counts from the end
// (WithRange(-100, -1): the last 100 bytes).
func WithRange(offset, length int64) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.rangeSet, c.offset, c.length = true, offset, length })
}

// Include keeps only the Watch and CheckChanges events whose path (relative
// to the watched path) matches one of these globs; see docs/api-files.md.
func Include(patterns ...string) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.include = append(c.include, patterns...) })
}

// Exclude drops Watch and CheckChanges events, and ExportTar entries, whose
// path matches one of these globs (excluded directories are not entered).
func Exclude(patterns ...string) FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.exclude = append(c.exclude, patterns...) })
}

// OneFileSystem makes ExportTar stay on the directory's own file system,
// as tar --one-file-system does: a directory on which another file
// system is mounted (a volume, a bucket) is archived empty.
func OneFileSystem() FileOption {
	return fileOptionFunc(func(c *fileConfig) { c.oneFileSystem = true })
}

// checkPath refuses a path the daemon would refuse, before sending.
func checkPath(p, field string) error {
	switch {
	case p == "":
		return invalidf(api.CodeValidationFailed, "%s is empty", field)
	case len(p) > api.MaxPathBytes:
		return invalidf(api.CodeValidationFailed, "%s is %d bytes long; at most %d are allowed", field, len(p), api.MaxPathBytes)
	case strings.IndexByte(p, 0) >= 0:
		return invalidf(api.CodeValidationFailed, "%s contains a NUL byte", field)
	}
	return nil
}

func octalMode(m fs.FileMode) string {
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
	return fmt.Sprintf("%04o", v)
}

// call sends a JSON file request and decodes the answer.
func (s *Sandbox) call(ctx context.Context, suffix string, in, out any) error {
	if err := s.prepare(ctx); err != nil {
		return err
	}
	return s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, suffix), in, out)
}

// WriteFile writes data to the file at path, replacing its content. Data
// up to api.MaxJSONFileBytes goes as JSON (text, or base64 when it is not
// UTF-8); larger data is streamed like Upload.
func (s *Sandbox) WriteFile(ctx context.Context, path string, data []byte, opts ...FileOption) (*api.WriteFileResult, error) {
	if len(data) > api.MaxJSONFileBytes {
		return s.Upload(ctx, path, bytes.NewReader(data), opts...)
	}
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	req := api.WriteFileRequest{Path: path, CreateParents: c.parents, UID: c.uid, GID: c.gid, SessionID: c.session}
	if c.mode != nil {
		req.Mode = octalMode(*c.mode)
	}
	if utf8.Valid(data) {
		req.Content = string(data)
	} else {
		req.Content, req.Encoding = base64.StdEncoding.EncodeToString(data), api.EncodingBase64
	}
	var res api.WriteFileResult
	if err := s.call(ctx, "/files/write", &req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// File is a whole file read by ReadFile.
type File struct {
	Path string
	// Content is the file's bytes, decoded from the wire.
	Content []byte
	// Encoding is how the content travelled: api.EncodingUTF8 or
	// api.EncodingBase64.
	Encoding string
	MimeType string
	Size     int64
	// IsBinary is set when the content is not text (a NUL byte or invalid
	// UTF-8).
	IsBinary bool
}

// ReadFile reads the whole file at path, up to api.MaxJSONFileBytes
// (FILE_TOO_LARGE beyond: use OpenFile or Download).
func (s *Sandbox) ReadFile(ctx context.Context, path string, opts ...FileOption) (*File, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	var res api.ReadFileResult
	if err := s.call(ctx, "/files/read", &api.ReadFileRequest{Path: path, Encoding: c.encoding, SessionID: c.session}, &res); err != nil {
		return nil, err
	}
	f := &File{Path: res.Path, Encoding: res.Encoding, MimeType: res.MimeType, Size: res.Size, IsBinary: res.IsBinary}
	if res.Encoding == api.EncodingBase64 {
		data, err := base64.StdEncoding.DecodeString(res.Content)
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", path, err)
		}
		f.Content = data
	} else {
		f.Content = []byte(res.Content)
	}
	return f, nil
}

// FileReader is an open file of the sandbox, streamed by OpenFile. Close
// it.
type FileReader struct {
	io.ReadCloser
	// Size is what this reader delivers: the file's size, or the range's
	// length.
	Size int64
	// TotalSize is the whole file's size.
	TotalSize   int64
	ContentType string
	ModTime     time.Time
	// ETag identifies this version of the file; pass it in If-Range to
	// resume a download safely.
	ETag string
}

// OpenFile opens the file at path for reading, streamed: nothing is held
// in memory, and there is no size cap. WithRange reads a part.
func (s *Sandbox) OpenFile(ctx context.Context, path string, opts ...FileOption) (*FileReader, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	h := http.Header{}
	if c.rangeSet {
		switch {
		case c.offset < 0:
			h.Set("Range", fmt.Sprintf("bytes=-%d", -c.offset))
		case c.length < 0:
			h.Set("Range", fmt.Sprintf("bytes=%d-", c.offset))
		case c.length == 0:
			return &FileReader{ReadCloser: io.NopCloser(strings.NewReader(""))}, nil
		default:
			h.Set("Range", fmt.Sprintf("bytes=%d-%d", c.offset, c.offset+c.length-1))
		}
	}
	resp, err := s.raw(ctx, http.MethodGet, "/files/raw", url.Values{"path": {path}}, nil, -1, c.session, h)
	if err != nil {
		return nil, err
	}
	fr := &FileReader{
		ReadCloser:  resp.Body,
		Size:        resp.ContentLength,
		TotalSize:   resp.ContentLength,
		ContentType: resp.Header.Get("Content-Type"),
		ETag:        resp.Header.Get("ETag"),
	}
	fr.ModTime, _ = http.ParseTime(resp.Header.Get("Last-Modified"))
	if cr := resp.Header.Get("Content-Range"); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			fr.TotalSize, _ = strconv.ParseInt(cr[i+1:], 10, 64)
		}
	}
	return fr, nil
}

// Download copies the file at path (or the part WithRange selects) to w,
// streamed, and returns the bytes copied.
func (s *Sandbox) Download(ctx context.Context, path string, w io.Writer, opts ...FileOption) (int64, error) {
	f, err := s.OpenFile(ctx, path, opts...)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err != nil {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		return n, fmt.Errorf("downloading %s: %w", path, err)
	}
	if f.Size >= 0 && n != f.Size {
		return n, fmt.Errorf("downloading %s: got %d of %d bytes: %w", path, n, f.Size, ErrUnavailable)
	}
	return n, nil
}

// Upload streams r into the file at path, replacing its content: nothing
// is held in memory, and there is no size cap but the sandbox's disk. When
// r has a Len() int method (*bytes.Reader, *bytes.Buffer, *strings.Reader)
// or is a regular *os.File, its length is sent ahead, which costs less than
// a chunked body.
func (s *Sandbox) Upload(ctx context.Context, path string, r io.Reader, opts ...FileOption) (*api.WriteFileResult, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	q := url.Values{"path": {path}}
	if c.parents {
		q.Set("createParents", "true")
	}
	if c.mode != nil {
		q.Set("mode", octalMode(*c.mode))
	}
	if c.uid != nil {
		q.Set("uid", strconv.Itoa(*c.uid))
		q.Set("gid", strconv.Itoa(*c.gid))
	}
	resp, err := s.raw(ctx, http.MethodPut, "/files/raw", q, r, lengthOf(r), c.session, nil)
	if err != nil {
		return nil, err
	}
	defer closeBody(resp.Body)
	var res api.WriteFileResult
	if err := decodeJSON(ctx, resp, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// lengthOf returns r's length when it can be known without reading, else
// -1.
func lengthOf(r io.Reader) int64 {
	switch v := r.(type) {
	case interface{ Len() int }: // *bytes.Reader, *bytes.Buffer, *strings.Reader...
		return int64(v.Len())
	case interface {
		Stat() (fs.FileInfo, error)
		Seek(int64, int) (int64, error)
	}:
		fi, err := v.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return -1
		}
		pos, err := v.Seek(0, io.SeekCurrent)
		if err != nil {
			return -1
		}
		return fi.Size() - pos
	}
	return -1
}

func decodeJSON(ctx context.Context, resp *http.Response, out any) error {
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("decoding response: %w", err)
	}
	return nil
}

// raw sends a request whose body is not JSON (or that has none) to the
// sandbox's suffix, and returns the 2xx response; the caller closes its
// body. size < 0 means unknown (chunked).
func (s *Sandbox) raw(ctx context.Context, method, suffix string, q url.Values, body io.Reader, size int64, session string, h http.Header) (*http.Response, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	u := *s.c.base
	u.Path += sandboxPath(s.id, suffix)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, suffix, err)
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if session != "" {
		req.Header.Set(api.SessionHeader, session)
	}
	if s.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.c.token)
	}
	if s.c.userAgent != "" {
		req.Header.Set("User-Agent", s.c.userAgent)
	}
	resp, err := s.c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer closeBody(resp.Body)
		return nil, readError(resp)
	}
	return resp, nil
}

// Mkdir makes the directory path. Recursive makes missing parents too and
// accepts an existing directory; WithMode sets its mode (default 0755).
func (s *Sandbox) Mkdir(ctx context.Context, path string, opts ...FileOption) error {
	if err := checkPath(path, "path"); err != nil {
		return err
	}
	c := newFileConfig(opts)
	req := api.PathRequest{Path: path, Recursive: c.recursive, SessionID: c.session}
	if c.mode != nil {
		req.Mode = octalMode(*c.mode)
	}
	return s.call(ctx, "/files/mkdir", &req, nil)
}

// DeleteFile deletes the file (or symlink) at path. A directory needs
// Recursive, which deletes everything in it (IS_DIRECTORY otherwise).
func (s *Sandbox) DeleteFile(ctx context.Context, path string, opts ...FileOption) error {
	if err := checkPath(path, "path"); err != nil {
		return err
	}
	c := newFileConfig(opts)
	return s.call(ctx, "/files/delete", &api.PathRequest{Path: path, Recursive: c.recursive, SessionID: c.session}, nil)
}

// RenameFile renames oldPath to newPath exactly. An existing newPath is
// FILE_EXISTS unless Overwrite is given.
func (s *Sandbox) RenameFile(ctx context.Context, oldPath, newPath string, opts ...FileOption) error {
	if err := checkPath(oldPath, "oldPath"); err != nil {
		return err
	}
	if err := checkPath(newPath, "newPath"); err != nil {
		return err
	}
	c := newFileConfig(opts)
	return s.call(ctx, "/files/rename", &api.RenameRequest{OldPath: oldPath, NewPath: newPath, Overwrite: c.overwrite, SessionID: c.session}, nil)
}

// MoveFile moves src to dst like mv: into dst when dst is a directory.
// It returns where src ended up.
func (s *Sandbox) MoveFile(ctx context.Context, src, dst string, opts ...FileOption) (string, error) {
	if err := checkPath(src, "sourcePath"); err != nil {
		return "", err
	}
	if err := checkPath(dst, "destinationPath"); err != nil {
		return "", err
	}
	c := newFileConfig(opts)
	var res api.PathResult
	if err := s.call(ctx, "/files/move", &api.RenameRequest{SourcePath: src, DestinationPath: dst, Overwrite: c.overwrite, SessionID: c.session}, &res); err != nil {
		return "", err
	}
	return res.Path, nil
}

// ListFiles lists the directory path; Recursive lists the tree below it,
// IncludeHidden includes dot files. A listing stops at
// api.MaxListEntries (Truncated is then set).
func (s *Sandbox) ListFiles(ctx context.Context, path string, opts ...FileOption) (*api.ListFilesResult, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	var res api.ListFilesResult
	if err := s.call(ctx, "/files/list", &api.ListFilesRequest{Path: path, Recursive: c.recursive, IncludeHidden: c.hidden, SessionID: c.session}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Exists reports whether path exists (symlinks followed).
func (s *Sandbox) Exists(ctx context.Context, path string, opts ...FileOption) (bool, error) {
	if err := checkPath(path, "path"); err != nil {
		return false, err
	}
	c := newFileConfig(opts)
	var res api.ExistsResult
	if err := s.call(ctx, "/files/exists", &api.PathRequest{Path: path, SessionID: c.session}, &res); err != nil {
		return false, err
	}
	return res.Exists, nil
}

// Stat describes path (a symlink itself, not its target).
func (s *Sandbox) Stat(ctx context.Context, path string, opts ...FileOption) (*api.FileEntry, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	var res api.StatResult
	if err := s.call(ctx, "/files/stat", &api.PathRequest{Path: path, SessionID: c.session}, &res); err != nil {
		return nil, err
	}
	return &res.FileEntry, nil
}

// ExportTar returns the directory dir as a tar stream (owners, modes,
// times, symlinks and hard links kept); Exclude leaves paths out, and
// OneFileSystem the file systems mounted below dir. Close
// it. A failure in the middle shows as a read error, never as a short
// archive that looks whole.
func (s *Sandbox) ExportTar(ctx context.Context, dir string, opts ...FileOption) (io.ReadCloser, error) {
	if err := checkPath(dir, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	q := url.Values{"path": {dir}, "exclude": c.exclude}
	if c.oneFileSystem {
		q.Set("oneFileSystem", "true")
	}
	resp, err := s.raw(ctx, http.MethodGet, "/files/archive", q, nil, -1, c.session, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ImportTar unpacks the tar stream r into the directory dir (made if
// missing), streamed. Entries keep their owners, modes and times; nothing
// lands outside dir.
func (s *Sandbox) ImportTar(ctx context.Context, dir string, r io.Reader, opts ...FileOption) (*api.ArchiveResult, error) {
	if err := checkPath(dir, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	resp, err := s.raw(ctx, http.MethodPut, "/files/archive", url.Values{"path": {dir}}, r, lengthOf(r), c.session, nil)
	if err != nil {
		return nil, err
	}
	defer closeBody(resp.Body)
	var res api.ArchiveResult
	if err := decodeJSON(ctx, resp, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
