package client

import (
	"context"
	"io"

	"github.com/sandboxd/sandboxd/api"
)

// The file, watch and git calls of a session: the same as the Sandbox's,
// with relative paths resolved against the session's working directory
// and what they create owned by the session's user.

func (se *Session) fileOpts(opts []FileOption) []FileOption {
	return append(opts[:len(opts):len(opts)], InSession(se.id))
}

// WriteFile writes a file; see Sandbox.WriteFile.
func (se *Session) WriteFile(ctx context.Context, path string, data []byte, opts ...FileOption) (*api.WriteFileResult, error) {
	return se.sb.WriteFile(ctx, path, data, se.fileOpts(opts)...)
}

// ReadFile reads a whole file; see Sandbox.ReadFile.
func (se *Session) ReadFile(ctx context.Context, path string, opts ...FileOption) (*File, error) {
	return se.sb.ReadFile(ctx, path, se.fileOpts(opts)...)
}

// OpenFile opens a file for streamed reading; see Sandbox.OpenFile.
func (se *Session) OpenFile(ctx context.Context, path string, opts ...FileOption) (*FileReader, error) {
	return se.sb.OpenFile(ctx, path, se.fileOpts(opts)...)
}

// Download copies a file to w; see Sandbox.Download.
func (se *Session) Download(ctx context.Context, path string, w io.Writer, opts ...FileOption) (int64, error) {
	return se.sb.Download(ctx, path, w, se.fileOpts(opts)...)
}

// Upload streams r into a file; see Sandbox.Upload.
func (se *Session) Upload(ctx context.Context, path string, r io.Reader, opts ...FileOption) (*api.WriteFileResult, error) {
	return se.sb.Upload(ctx, path, r, se.fileOpts(opts)...)
}

// ReadFileStream reads a file as events; see Sandbox.ReadFileStream.
func (se *Session) ReadFileStream(ctx context.Context, path string, opts ...FileOption) (*FileStream, error) {
	return se.sb.ReadFileStream(ctx, path, se.fileOpts(opts)...)
}

// Mkdir makes a directory; see Sandbox.Mkdir.
func (se *Session) Mkdir(ctx context.Context, path string, opts ...FileOption) error {
	return se.sb.Mkdir(ctx, path, se.fileOpts(opts)...)
}

// DeleteFile deletes a file or directory; see Sandbox.DeleteFile.
func (se *Session) DeleteFile(ctx context.Context, path string, opts ...FileOption) error {
	return se.sb.DeleteFile(ctx, path, se.fileOpts(opts)...)
}

// RenameFile renames a file; see Sandbox.RenameFile.
func (se *Session) RenameFile(ctx context.Context, oldPath, newPath string, opts ...FileOption) error {
	return se.sb.RenameFile(ctx, oldPath, newPath, se.fileOpts(opts)...)
}

// MoveFile moves a file; see Sandbox.MoveFile.
func (se *Session) MoveFile(ctx context.Context, src, dst string, opts ...FileOption) (string, error) {
	return se.sb.MoveFile(ctx, src, dst, se.fileOpts(opts)...)
}

// ListFiles lists a directory; see Sandbox.ListFiles.
func (se *Session) ListFiles(ctx context.Context, path string, opts ...FileOption) (*api.ListFilesResult, error) {
	return se.sb.ListFiles(ctx, path, se.fileOpts(opts)...)
}

// Exists reports whether a path exists; see Sandbox.Exists.
func (se *Session) Exists(ctx context.Context, path string, opts ...FileOption) (bool, error) {
	return se.sb.Exists(ctx, path, se.fileOpts(opts)...)
}

// Stat describes a path; see Sandbox.Stat.
func (se *Session) Stat(ctx context.Context, path string, opts ...FileOption) (*api.FileEntry, error) {
	return se.sb.Stat(ctx, path, se.fileOpts(opts)...)
}

// ExportTar returns a directory as a tar stream; see Sandbox.ExportTar.
func (se *Session) ExportTar(ctx context.Context, dir string, opts ...FileOption) (io.ReadCloser, error) {
	return se.sb.ExportTar(ctx, dir, se.fileOpts(opts)...)
}

// ImportTar unpacks a tar stream; see Sandbox.ImportTar.
func (se *Session) ImportTar(ctx context.Context, dir string, r io.Reader, opts ...FileOption) (*api.ArchiveResult, error) {
	return se.sb.ImportTar(ctx, dir, r, se.fileOpts(opts)...)
}

// Watch watches a path; see Sandbox.Watch.
func (se *Session) Watch(ctx context.Context, path string, opts ...FileOption) (*Watch, error) {
	return se.sb.Watch(ctx, path, se.fileOpts(opts)...)
}

// CheckChanges polls a path; see Sandbox.CheckChanges.
func (se *Session) CheckChanges(ctx context.Context, path, since string, opts ...FileOption) (*api.ChangesResult, error) {
	return se.sb.CheckChanges(ctx, path, since, se.fileOpts(opts)...)
}

// GitCheckout clones a repository as the session's user, with the
// session's environment; see Sandbox.GitCheckout.
func (se *Session) GitCheckout(ctx context.Context, repoURL string, opts ...GitOption) (*api.GitCheckoutResult, error) {
	return se.sb.GitCheckout(ctx, repoURL, append(opts[:len(opts):len(opts)], InSession(se.id))...)
}
