package api

import (
	"net/http"
	"time"
)

// Error codes of the file API. The spelling is the reference SDK's.
const (
	CodeFileNotFound     Code = "FILE_NOT_FOUND"    // no such file or directory
	CodeFileExists       Code = "FILE_EXISTS"       // the target exists and the call does not replace it
	CodeIsDirectory      Code = "IS_DIRECTORY"      // a file operation named a directory
	CodeNotDirectory     Code = "NOT_DIRECTORY"     // a directory operation, or a path component, named a non-directory
	CodePermissionDenied Code = "PERMISSION_DENIED" // the file system refused (read-only, permissions, the agent's own files)
	CodeNoSpace          Code = "NO_SPACE"          // the sandbox's disk (or a quota) is full
	CodeNameTooLong      Code = "NAME_TOO_LONG"     // a path component exceeds 255 bytes
	CodeFileTooLarge     Code = "FILE_TOO_LARGE"    // over MaxJSONFileBytes on the JSON path (raw streaming has no cap)
	// CodeRangeNotSatisfiable answers a raw read whose Range lies beyond
	// the end of the file.
	CodeRangeNotSatisfiable Code = "RANGE_NOT_SATISFIABLE"
)

func init() {
	RegisterStatus(CodeFileNotFound, http.StatusNotFound)
	RegisterStatus(CodeFileExists, http.StatusConflict)
	RegisterStatus(CodeIsDirectory, http.StatusBadRequest)
	RegisterStatus(CodeNotDirectory, http.StatusBadRequest)
	RegisterStatus(CodePermissionDenied, http.StatusForbidden)
	RegisterStatus(CodeNoSpace, http.StatusInsufficientStorage)
	RegisterStatus(CodeNameTooLong, http.StatusBadRequest)
	RegisterStatus(CodeFileTooLarge, http.StatusRequestEntityTooLarge)
	RegisterStatus(CodeRangeNotSatisfiable, http.StatusRequestedRangeNotSatisfiable)
}

// Limits of the file API, shared by agent and SDK.
const (
	// MaxPathBytes bounds every path in a request (PATH_MAX less the NUL).
	// A longer path, an empty one or one with a NUL byte is
	// VALIDATION_FAILED; a component over 255 bytes is NAME_TOO_LONG.
	MaxPathBytes = 4095
	// MaxJSONFileBytes bounds the content of a JSON write or read (after
	// decoding). Larger files go through the raw routes, which stream and
	// have no cap but the disk.
	MaxJSONFileBytes = 16 << 20
	// MaxJSONWriteBody bounds the body of a JSON write: room for
	// MaxJSONFileBytes as base64, or as text with some JSON escaping.
	MaxJSONWriteBody = 24 << 20
	// MaxListEntries bounds one listing; beyond it the result is cut and
	// Truncated is set.
	MaxListEntries = 100_000
	// MaxGlobs bounds the include and exclude patterns of one call, and
	// MaxGlobBytes the length of each.
	MaxGlobs     = 64
	MaxGlobBytes = 256
)

// File types of FileEntry.Type.
const (
	FileTypeFile      = "file"
	FileTypeDirectory = "directory"
	FileTypeSymlink   = "symlink"
	FileTypeOther     = "other" // FIFO, socket, device
)

// Paths. Every path field below is a path inside the sandbox. An absolute
// path is used as is; a relative one resolves against the working directory
// of the session the call names (sessionId in the body, or the
// X-Sandbox-Session header; default: the default session). Symbolic links
// resolve inside the sandbox's root, never outside it.

// WriteFileRequest is the body of POST /v1/sandboxes/{id}/files/write.
type WriteFileRequest struct {
	Path string `json:"path"`
	// Content is the file's content in Encoding.
	Content string `json:"content"`
	// Encoding is "utf-8" (default) or "base64".
	Encoding string `json:"encoding,omitempty"`
	// CreateParents creates missing parent directories (mode 0755).
	CreateParents bool `json:"createParents,omitempty"`
	// Mode is the file's permission bits in octal, e.g. "0644" or "755"
	// (setuid, setgid and sticky allowed). Default: 0644 for a new file;
	// an existing file keeps its mode.
	Mode string `json:"mode,omitempty"`
	// UID and GID set the file's owner. Default: a new file belongs to
	// root; an existing one keeps its owner.
	UID *int `json:"uid,omitempty"`
	GID *int `json:"gid,omitempty"`
	// SessionID names the session relative paths resolve against.
	SessionID string `json:"sessionId,omitempty"`
}

// WriteFileResult answers a write (JSON or raw).
type WriteFileResult struct {
	Success bool `json:"success"`
	// Path is the absolute path written.
	Path         string `json:"path"`
	BytesWritten int64  `json:"bytesWritten"`
}

// ReadFileRequest is the body of POST /v1/sandboxes/{id}/files/read and
// /files/read/stream.
type ReadFileRequest struct {
	Path string `json:"path"`
	// Encoding is "" (auto: utf-8 when the file is valid UTF-8 without
	// NUL bytes, else base64), "utf-8" (VALIDATION_FAILED when it is not)
	// or "base64".
	Encoding  string `json:"encoding,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
}

// ReadFileResult is a whole file read as JSON.
type ReadFileResult struct {
	Success bool   `json:"success"`
	Path    string `json:"path"`
	// Content is the file's content in Encoding.
	Content  string `json:"content"`
	Encoding string `json:"encoding"`
	// MimeType is guessed from the name, else from the first bytes.
	MimeType string `json:"mimeType"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// IsBinary is set when the content is not text: a NUL byte or
	// invalid UTF-8 in it.
	IsBinary bool `json:"isBinary"`
}

// File stream event types: metadata, any number of chunk events, then
// exactly one of complete or error.
const (
	FileEventMetadata = "metadata"
	FileEventChunk    = "chunk"
)

// FileStreamEvent is one Server-Sent Event of POST .../files/read/stream.
// The SSE event name equals Type: metadata, chunk, complete or error.
type FileStreamEvent struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	// Path, MimeType, Size, IsBinary and Encoding are set on metadata.
	// Encoding there is the encoding of the chunks: base64 for a binary
	// file, else utf-8.
	Path     string `json:"path,omitempty"`
	MimeType string `json:"mimeType,omitempty"`
	Size     int64  `json:"size,omitempty"`
	IsBinary bool   `json:"isBinary,omitempty"`
	// Data is a chunk of the file (at most 64 KiB before encoding). A text
	// chunk never splits a UTF-8 character; a chunk of a text file that
	// turns out not to be UTF-8 is sent as base64 with Encoding set.
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// BytesRead is set on complete: the bytes sent in all.
	BytesRead int64 `json:"bytesRead,omitempty"`
	// Code and Message are set on error.
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// PathRequest is the body of the calls that name one path:
// POST .../files/mkdir, /files/delete, /files/exists and /files/stat.
type PathRequest struct {
	Path string `json:"path"`
	// Recursive: mkdir creates missing parents and accepts an existing
	// directory; delete removes a directory and everything in it.
	Recursive bool `json:"recursive,omitempty"`
	// Mode is mkdir's permission bits in octal; default "0755".
	Mode      string `json:"mode,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
}

// PathResult answers mkdir, delete, rename and move.
type PathResult struct {
	Success bool `json:"success"`
	// Path is the absolute path created, deleted, or renamed to.
	Path string `json:"path"`
}

// RenameRequest is the body of POST .../files/rename (OldPath, NewPath:
// NewPath is the new name, exactly) and /files/move (SourcePath,
// DestinationPath: an existing directory as destination receives the
// source under its own name, like mv).
type RenameRequest struct {
	OldPath         string `json:"oldPath,omitempty"`
	NewPath         string `json:"newPath,omitempty"`
	SourcePath      string `json:"sourcePath,omitempty"`
	DestinationPath string `json:"destinationPath,omitempty"`
	// Overwrite replaces an existing target (a file, or an empty
	// directory). Without it an existing target is FILE_EXISTS.
	Overwrite bool   `json:"overwrite,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
}

// ExistsResult answers POST .../files/exists. Symbolic links are
// followed: a dangling link does not exist.
type ExistsResult struct {
	Success bool `json:"success"`
	Exists  bool `json:"exists"`
	// Type is the FileEntry type of what exists.
	Type string `json:"type,omitempty"`
}

// FilePermissions says what the sandbox's user (root) may do with an
// entry, as access(2) answers: root reads and writes anything on a
// writable file system, and executes files with an x bit.
type FilePermissions struct {
	Readable   bool `json:"readable"`
	Writable   bool `json:"writable"`
	Executable bool `json:"executable"`
}

// FileEntry describes one file: the answer of POST .../files/stat, and
// the items of a listing. A symbolic link is described, not followed.
type FileEntry struct {
	Name string `json:"name"`
	// AbsolutePath is the entry's path in the sandbox.
	AbsolutePath string `json:"absolutePath"`
	// RelativePath is relative to the listed directory ("" for stat).
	RelativePath string `json:"relativePath,omitempty"`
	// Type is file, directory, symlink or other.
	Type string `json:"type"`
	// Size in bytes (of the link itself for a symlink).
	Size       int64     `json:"size"`
	ModifiedAt time.Time `json:"modifiedAt"`
	// Mode is the permission string as ls prints it, without the type:
	// "rwxr-xr-x", with s/S and t/T for setuid, setgid and sticky.
	Mode string `json:"mode"`
	// OctalMode is the same in octal, e.g. "0755" or "4755".
	OctalMode   string          `json:"octalMode"`
	Permissions FilePermissions `json:"permissions"`
	UID         int             `json:"uid"`
	GID         int             `json:"gid"`
	// Target is a symlink's target, as stored.
	Target string `json:"target,omitempty"`
}

// StatResult answers POST .../files/stat.
type StatResult struct {
	Success bool `json:"success"`
	FileEntry
}

// ListFilesRequest is the body of POST .../files/list.
type ListFilesRequest struct {
	Path string `json:"path"`
	// Recursive lists the whole tree below Path (symbolic links are not
	// followed; /proc and /sys are listed but not entered).
	Recursive bool `json:"recursive,omitempty"`
	// IncludeHidden lists (and enters) names starting with a dot.
	IncludeHidden bool   `json:"includeHidden,omitempty"`
	SessionID     string `json:"sessionId,omitempty"`
}

// ListFilesResult answers POST .../files/list: directories first visited
// first, each directory's entries sorted by name.
type ListFilesResult struct {
	Success bool        `json:"success"`
	Path    string      `json:"path"`
	Files   []FileEntry `json:"files"`
	Count   int         `json:"count"`
	// Truncated is set when the listing stopped at MaxListEntries.
	Truncated bool `json:"truncated,omitempty"`
}

// ArchiveResult answers PUT .../files/archive, a tar stream unpacked into
// a directory.
type ArchiveResult struct {
	Success bool   `json:"success"`
	Path    string `json:"path"`
	// Entries is the number of archive entries created; Bytes the file
	// content written.
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
}
