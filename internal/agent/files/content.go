package files

import (
	"bytes"
	"net/http"
	"path"
	"strings"
	"unicode/utf8"
)

// types maps common extensions to media types. It is a fixed table on
// purpose: the mime package would read the sandbox's /etc/mime.types,
// which user code controls, into the agent.
var types = map[string]string{
	".txt": "text/plain; charset=utf-8", ".md": "text/markdown; charset=utf-8", ".csv": "text/csv; charset=utf-8",
	".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
	".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8", ".ts": "text/x-typescript; charset=utf-8",
	".json": "application/json", ".xml": "application/xml", ".yaml": "application/yaml", ".yml": "application/yaml",
	".toml": "application/toml", ".py": "text/x-python; charset=utf-8", ".go": "text/x-go; charset=utf-8",
	".sh": "text/x-shellscript; charset=utf-8", ".c": "text/x-c; charset=utf-8", ".h": "text/x-c; charset=utf-8",
	".rs": "text/x-rust; charset=utf-8", ".java": "text/x-java; charset=utf-8", ".sql": "application/sql",
	".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
	".webp": "image/webp", ".ico": "image/vnd.microsoft.icon", ".pdf": "application/pdf", ".wasm": "application/wasm",
	".zip": "application/zip", ".gz": "application/gzip", ".tgz": "application/gzip", ".tar": "application/x-tar",
	".mp3": "audio/mpeg", ".wav": "audio/wav", ".mp4": "video/mp4", ".webm": "video/webm",
	".ipynb": "application/x-ipynb+json", ".parquet": "application/vnd.apache.parquet",
}

// ContentType guesses a file's media type from its name, else from its
// first bytes (at most 512 are looked at).
func ContentType(name string, head []byte) string {
	if t, ok := types[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return http.DetectContentType(head)
}

// IsText reports whether p looks like text: no NUL byte, and valid UTF-8
// except for a character cut at the end of p.
func IsText(p []byte) bool {
	if bytes.IndexByte(p, 0) >= 0 {
		return false
	}
	return utf8.Valid(p[:len(p)-PartialRuneLen(p)])
}

// PartialRuneLen is the length of an incomplete UTF-8 sequence at the end
// of p (0-3 bytes).
func PartialRuneLen(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				return len(p) - i
			}
			return 0
		}
	}
	return 0
}
