package mcpserver

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

func (s *server) writeFile(ctx context.Context, _ *mcp.CallToolRequest, in writeFileArgs) (*mcp.CallToolResult, any, error) {
	data := []byte(in.Content)
	if in.Encoding == api.EncodingBase64 {
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return codedError(api.CodeValidationFailed, "content is not valid base64: "+err.Error()), nil, nil
		}
	}
	res, err := s.c.Sandbox(in.Sandbox).WriteFile(ctx, in.Path, data, client.CreateParents())
	if err != nil {
		return toolError(err), nil, nil
	}
	return result(fmt.Sprintf("wrote %d bytes to %s", res.BytesWritten, res.Path),
		map[string]any{"path": res.Path, "bytes_written": res.BytesWritten}), nil, nil
}

// imageTypes are the MIME types read_file returns as MCP images.
var imageTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true}

// readResult is read_file's structured content.
type readResult struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	Offset   int64  `json:"offset"`
	Length   int64  `json:"length"`
	MimeType string `json:"mime_type,omitempty"`
	// Encoding is utf-8 (Content is the text), base64 (binary) or image
	// (the content is an image block).
	Encoding string `json:"encoding"`
	Content  string `json:"content,omitempty"`
	Note     string `json:"note,omitempty"`
}

func (s *server) readFile(ctx context.Context, _ *mcp.CallToolRequest, in readFileArgs) (*mcp.CallToolResult, any, error) {
	sb := s.c.Sandbox(in.Sandbox)
	st, err := sb.Stat(ctx, in.Path)
	if err != nil {
		return toolError(err), nil, nil
	}
	if st.Type == "directory" {
		return codedError(api.CodeValidationFailed, st.AbsolutePath+" is a directory; use list_files"), nil, nil
	}
	res := readResult{Path: st.AbsolutePath, Size: st.Size, Offset: in.Offset, Encoding: api.EncodingUTF8}
	if in.Offset > st.Size || (in.Offset == st.Size && st.Size > 0) {
		return codedError(api.CodeValidationFailed, fmt.Sprintf("offset %d is past the end of %s (%d bytes)", in.Offset, res.Path, st.Size)), nil, nil
	}
	if st.Size == 0 {
		return result(fmt.Sprintf("%s is empty", res.Path), res), nil, nil
	}
	want := int64(s.opts.OutputBytes)
	if in.Length > 0 {
		want = in.Length
	}
	data, mimeType, err := readRange(ctx, sb, res.Path, in.Offset, want)
	if err != nil {
		return toolError(err), nil, nil
	}
	res.MimeType = mimeType
	// A whole image, asked for from its start, is shown as an image.
	if imageTypes[mimeType] && in.Offset == 0 && st.Size <= maxImageBytes {
		if int64(len(data)) < st.Size {
			rest, _, err := readRange(ctx, sb, res.Path, int64(len(data)), st.Size-int64(len(data)))
			if err != nil {
				return toolError(err), nil, nil
			}
			data = append(data, rest...)
		}
		res.Encoding, res.Length = "image", int64(len(data))
		return &mcp.CallToolResult{Content: []mcp.Content{
			&mcp.ImageContent{Data: data, MIMEType: mimeType},
			&mcp.TextContent{Text: fmt.Sprintf("%s: %s, %d bytes", res.Path, mimeType, len(data))},
		}, StructuredContent: res}, nil, nil
	}
	// Text is bounded by the output bound, whatever length asked for.
	if limit := s.opts.OutputBytes; len(data) > limit {
		data = data[:limit]
	}
	text := string(data)
	if res.Offset+int64(len(data)) < res.Size {
		text = trimRunes(data, false) // a character cut by the range
	}
	if utf8.ValidString(text) && !strings.ContainsRune(text, 0) {
		res.Content = text
	} else {
		res.Encoding, res.Content = api.EncodingBase64, base64.StdEncoding.EncodeToString(data)
	}
	res.Length = int64(len(data))
	if res.Encoding == api.EncodingUTF8 {
		res.Length = int64(len(text))
	}
	if end := res.Offset + res.Length; end < res.Size {
		res.Note = fmt.Sprintf("bytes %d-%d of %d; read on with offset %d", res.Offset, end, res.Size, end)
	}
	out := res.Content
	if res.Encoding == api.EncodingBase64 {
		out = fmt.Sprintf("%s is binary (%s); its bytes in base64:\n%s", res.Path, mimeType, res.Content)
	}
	if res.Note != "" {
		out += "\n[" + res.Note + "]"
	}
	return result(out, res), nil, nil
}

// readRange reads up to n bytes of path from offset, and returns them with
// the file's MIME type.
func readRange(ctx context.Context, sb *client.Sandbox, path string, offset, n int64) ([]byte, string, error) {
	f, err := sb.OpenFile(ctx, path, client.WithRange(offset, n))
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, n))
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w: %w", path, client.ErrUnavailable, err)
	}
	mt, _, _ := mime.ParseMediaType(f.ContentType)
	return data, mt, nil
}

func (s *server) listFiles(ctx context.Context, _ *mcp.CallToolRequest, in listFilesArgs) (*mcp.CallToolResult, any, error) {
	var opts []client.FileOption
	if in.Recursive {
		opts = append(opts, client.Recursive())
	}
	if in.IncludeHidden {
		opts = append(opts, client.IncludeHidden())
	}
	l, err := s.c.Sandbox(in.Sandbox).ListFiles(ctx, in.Path, opts...)
	if err != nil {
		return toolError(err), nil, nil
	}
	type entry struct {
		Path string `json:"path"`
		Type string `json:"type"`
		Size int64  `json:"size"`
		Mode string `json:"mode"`
	}
	out := struct {
		Path    string  `json:"path"`
		Entries []entry `json:"entries"`
		Total   int     `json:"total"`
		Note    string  `json:"note,omitempty"`
	}{Path: l.Path, Entries: []entry{}, Total: len(l.Files)}
	var b strings.Builder
	for i, f := range l.Files {
		if i == maxListEntries {
			break
		}
		name := f.RelativePath
		if name == "" {
			name = f.Name
		}
		out.Entries = append(out.Entries, entry{Path: name, Type: f.Type, Size: f.Size, Mode: f.Mode})
		suffix := ""
		switch f.Type {
		case "directory":
			suffix = "/"
		case "symlink":
			suffix = " -> " + f.Target
		}
		fmt.Fprintf(&b, "%s %10d %s%s\n", f.Mode, f.Size, name, suffix)
	}
	switch {
	case len(l.Files) > maxListEntries || l.Truncated:
		out.Note = fmt.Sprintf("showing %d of %d entries (more beyond when the daemon's listing was cut); list a subdirectory, or exec find", len(out.Entries), len(l.Files))
		b.WriteString("[" + out.Note + "]\n")
	case len(l.Files) == 0:
		b.WriteString("(empty directory)\n")
	}
	return result(fmt.Sprintf("%s:\n%s", l.Path, b.String()), out), nil, nil
}
