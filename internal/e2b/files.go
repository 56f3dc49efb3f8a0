package e2b

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/sandboxd/sandboxd/api"
)

// maxUploadParts bounds the files of one multipart upload.
const maxUploadParts = 1024

// fileResult is one item of envd's POST /files answer.
type fileResult struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// envdError answers an envd HTTP route with E2B's error shape.
func envdError(w http.ResponseWriter, err error) {
	var ce *controlError
	if errors.As(err, &ce) {
		writeControlJSON(w, ce.Code, ce)
		return
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		status := ae.Code.HTTPStatus()
		switch ae.Code {
		case api.CodeIsDirectory, api.CodeNotDirectory:
			status = http.StatusBadRequest
		case api.CodeNoSpace:
			status = http.StatusInsufficientStorage
		}
		writeControlJSON(w, status, controlErrorf(status, "%s", ae.Message))
		return
	}
	var re *rpcError
	if errors.As(err, &re) {
		writeControlJSON(w, httpStatusOf(re.Code), controlErrorf(httpStatusOf(re.Code), "%s", re.Message))
		return
	}
	writeControlJSON(w, http.StatusInternalServerError, controlErrorf(http.StatusInternalServerError, "%s", err.Error()))
}

// serveFiles serves envd's /files: GET downloads a file, POST uploads
// (multipart, one part per file, or a raw octet-stream body). A request
// carries the access token or a signature made with it (signed URLs).
func (s *Server) serveFiles(w http.ResponseWriter, r *http.Request, id string, tokenOK bool) {
	q := r.URL.Query()
	var op string
	switch r.Method {
	case http.MethodGet:
		op = "read"
	case http.MethodPost:
		op = "write"
	default:
		envdError(w, controlErrorf(http.StatusMethodNotAllowed, "%s is not allowed on /files", r.Method))
		return
	}
	if !tokenOK {
		if err := s.checkSignature(q, op, id); err != nil {
			envdError(w, err)
			return
		}
	}
	user := q.Get("username")
	if user == "" {
		user = defaultUser
	}
	if !validUser(user) {
		envdError(w, controlErrorf(http.StatusBadRequest, "username %q: a name of [a-z_][a-z0-9_-]*, at most 32 characters", user))
		return
	}
	c := &call{s: s, id: id, user: user}
	if op == "read" {
		c.download(w, r, q.Get("path"))
		return
	}
	c.upload(w, r, q.Get("path"))
}

// checkSignature verifies a signed /files URL: v1_ + base64(SHA-256 of
// "<path>:<op>:<user>:<envd access token>[:<expiration>]"), unpadded, as
// the SDK's uploadUrl/downloadUrl make it, and not expired.
func (s *Server) checkSignature(q url.Values, op, id string) error {
	sig := q.Get("signature")
	if sig == "" {
		return controlErrorf(http.StatusUnauthorized, "missing X-Access-Token or signature")
	}
	raw := q.Get("path") + ":" + op + ":" + q.Get("username") + ":" + s.table.token("envd", id)
	if exp := q.Get("signature_expiration"); exp != "" {
		n, err := strconv.ParseInt(exp, 10, 64)
		if err != nil {
			return controlErrorf(http.StatusBadRequest, "signature_expiration %q is not a number", exp)
		}
		if n < s.now().Unix() {
			return controlErrorf(http.StatusUnauthorized, "the signature expired")
		}
		raw += ":" + exp
	}
	sum := sha256.Sum256([]byte(raw))
	want := "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return controlErrorf(http.StatusUnauthorized, "invalid signature")
	}
	return nil
}

func (c *call) download(w http.ResponseWriter, r *http.Request, p string) {
	abs, err := c.resolve(p)
	if err != nil {
		envdError(w, controlErrorf(http.StatusBadRequest, "path is required"))
		return
	}
	req, err := c.s.up.request(r.Context(), http.MethodGet, sandboxPath(c.id, "files/raw"), url.Values{"path": {abs}}, nil)
	if err != nil {
		envdError(w, err)
		return
	}
	resp, err := c.s.up.send(req)
	if err != nil {
		if isCode(err, api.CodeFileNotFound) {
			envdError(w, controlErrorf(http.StatusNotFound, "path '%s' does not exist", abs))
			return
		}
		envdError(w, err)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if cl := resp.Header.Get("Content-Length"); cl != "" {
		w.Header().Set("Content-Length", cl)
	}
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": path.Base(abs)}))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, resp.Body)
}

// upload writes the request's files: each part of a multipart body to
// its filename (the query's path when given), or a raw body to the
// query's path, made by and owned by the user.
func (c *call) upload(w http.ResponseWriter, r *http.Request, qpath string) {
	ctx := r.Context()
	sid, err := c.session(ctx)
	if err != nil {
		envdError(w, err)
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var results []fileResult
	if ct == "multipart/form-data" {
		results, err = c.uploadMultipart(ctx, r, qpath, sid)
	} else {
		var body io.Reader = r.Body
		if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
			zr, zerr := gzip.NewReader(r.Body)
			if zerr != nil {
				envdError(w, controlErrorf(http.StatusBadRequest, "body is not gzip: %v", zerr))
				return
			}
			defer zr.Close()
			body = zr
		}
		var fr fileResult
		fr, err = c.writeFile(ctx, qpath, body, sid)
		results = []fileResult{fr}
	}
	if err != nil {
		envdError(w, err)
		return
	}
	writeControlJSON(w, http.StatusOK, results)
}

func (c *call) uploadMultipart(ctx context.Context, r *http.Request, qpath, sid string) ([]fileResult, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, controlErrorf(http.StatusBadRequest, "reading the multipart body: %v", err)
	}
	var results []fileResult
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, controlErrorf(http.StatusBadRequest, "reading the multipart body: %v", err)
		}
		if len(results) == maxUploadParts {
			return nil, controlErrorf(http.StatusBadRequest, "at most %d files per upload", maxUploadParts)
		}
		// Part.FileName keeps only the last element; the SDK sends the
		// whole target path there.
		_, params, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		target := qpath
		if target == "" {
			target = params["filename"]
		}
		fr, err := c.writeFile(ctx, target, part, sid)
		part.Close()
		if err != nil {
			return nil, err
		}
		results = append(results, fr)
	}
	if len(results) == 0 {
		return nil, controlErrorf(http.StatusBadRequest, "the upload has no file part")
	}
	return results, nil
}

// writeFile streams body into the file at p, making its parents.
func (c *call) writeFile(ctx context.Context, p string, body io.Reader, sid string) (fileResult, error) {
	abs, err := c.resolve(p)
	if err != nil {
		return fileResult{}, controlErrorf(http.StatusBadRequest, "a file needs a path (the query's path or the part's filename)")
	}
	req, err := c.s.up.request(ctx, http.MethodPut, sandboxPath(c.id, "files/raw"), url.Values{"path": {abs}, "createParents": {"true"}}, body)
	if err != nil {
		return fileResult{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if sid != "" {
		req.Header.Set("X-Sandbox-Session", sid)
	}
	resp, err := c.s.up.send(req)
	if err != nil {
		return fileResult{}, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return fileResult{Name: path.Base(abs), Type: "file", Path: abs}, nil
}
