package httpapi

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"sort"
)

// The OpenAPI document is assembled from fragments, one per feature
// (openapi/*.json), each holding "paths" and "components"; 00-base.json
// holds the rest. Fragments are merged in file name order.
//
//go:embed openapi/*.json
var openAPIFragments embed.FS

var openAPIDoc = mustAssembleOpenAPI()

func mustAssembleOpenAPI() []byte {
	doc, err := assembleOpenAPI(openAPIFragments)
	if err != nil {
		panic(err) // a broken embedded file is a build defect; the test catches it first
	}
	return doc
}

func assembleOpenAPI(fsys fs.FS) ([]byte, error) {
	names, err := fs.Glob(fsys, "openapi/*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	doc := map[string]any{}
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		var frag map[string]any
		if err := json.Unmarshal(data, &frag); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if err := merge(doc, frag, name); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(doc, "", " ")
}

// merge adds src into dst; objects merge recursively, and anything else
// defined twice is an error.
func merge(dst, src map[string]any, where string) error {
	for k, v := range src {
		old, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		om, ok1 := old.(map[string]any)
		nm, ok2 := v.(map[string]any)
		if !ok1 || !ok2 {
			return fmt.Errorf("%s: %q is defined twice", where, k)
		}
		if err := merge(om, nm, where+"."+k); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDoc)
}
