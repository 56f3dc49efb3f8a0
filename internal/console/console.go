// Package console is sandboxd's web console: static pages and scripts,
// built from web/ with npm (xterm.js and the console's own code, bundled
// by esbuild) into dist/ and embedded in the daemon binary. The console
// runs in the browser and talks to the public API with the token the user
// logs in with; this package only serves its files.
//
// dist/ is generated: `make console` (part of `make build`) rebuilds it
// from web/ and package-lock.json, byte for byte, so that `go build` works
// without npm. Never edit dist/ by hand.
package console

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed dist
var dist embed.FS

// securityHeaders keep the console's pages from being framed, sniffed or
// leaking their address, and let them load nothing but their own files
// and talk to nothing but the daemon (WebSockets included).
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
		"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
}

// Handler serves the console: index.html at /, the rest of dist/ under
// /console/.
func Handler() http.Handler {
	files, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		name := "index.html"
		if r.URL.Path != "/" {
			name = strings.TrimPrefix(r.URL.Path, "/console/")
		}
		// fs.ValidPath refuses "..", empty elements and leading slashes.
		if !fs.ValidPath(name) || name == "." {
			http.NotFound(w, r)
			return
		}
		data, err := fs.ReadFile(files, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if name == "index.html" {
			w.Header().Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, path.Base(name), time.Time{}, bytes.NewReader(data))
	})
}
