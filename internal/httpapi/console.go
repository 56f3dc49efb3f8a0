package httpapi

import "net/http"

// serveConsole serves the web console's pages (GET and HEAD of / and of
// /console/...) and reports whether it did. The console is static; it
// talks to the API with the token the user logs in with.
func (s *Server) serveConsole(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.Console == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	if r.URL.Path != "/" && !hasPathPrefix(r.URL.Path, "/console/") {
		return false
	}
	s.opts.Console.ServeHTTP(w, r)
	return true
}

func hasPathPrefix(path, prefix string) bool {
	return len(path) >= len(prefix) && path[:len(prefix)] == prefix
}
