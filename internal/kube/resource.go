package kube

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ObjectMeta is the part of an object's metadata sandboxd uses.
type ObjectMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	UID       string `json:"uid,omitempty"`
	// ResourceVersion is the version an update or delete must match
	// (optimistic concurrency); set by the server.
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	DeletionTimestamp *time.Time        `json:"deletionTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// listMeta is a list's metadata: its version and the next page's token.
type listMeta struct {
	ResourceVersion string `json:"resourceVersion"`
	Continue        string `json:"continue"`
}

// object is what the generic calls need of a typed object: a pointer to
// it that gives its metadata.
type object[T any] interface {
	*T
	meta() *ObjectMeta
}

// kind is one resource type: where its objects live and what they are.
type kind struct {
	// prefix is the API group and version's path (/apis/GROUP/VERSION).
	prefix string
	// plural is the resource's plural name in paths.
	plural string
	// apiVersion and name are the objects' apiVersion and kind.
	apiVersion, name string
}

func (k kind) path(ns, name string) string {
	p := k.prefix + "/namespaces/" + url.PathEscape(ns) + "/" + k.plural
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

func get[T any](ctx context.Context, c *Client, k kind, name string) (*T, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	out := new(T)
	if err := c.do(ctx, request{method: http.MethodGet, path: k.path(c.namespace, name)}, out); err != nil {
		return nil, err
	}
	return out, nil
}

// create stores obj (an AlreadyExists error when its name is taken).
func create[T any, P object[T]](ctx context.Context, c *Client, k kind, obj P) (P, error) {
	if err := ValidateName(obj.meta().Name); err != nil {
		return nil, err
	}
	out := P(new(T))
	if err := c.do(ctx, request{method: http.MethodPost, path: k.path(c.namespace, ""), body: obj}, out); err != nil {
		return nil, err
	}
	return out, nil
}

// update replaces obj if its resourceVersion is still the stored one (a
// Conflict error otherwise).
func update[T any, P object[T]](ctx context.Context, c *Client, k kind, obj P) (P, error) {
	m := obj.meta()
	if err := ValidateName(m.Name); err != nil {
		return nil, err
	}
	out := P(new(T))
	if err := c.do(ctx, request{method: http.MethodPut, path: k.path(c.namespace, m.Name), body: obj}, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Preconditions make a delete conditional on the object still being the
// one the caller read.
type Preconditions struct {
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

func remove(ctx context.Context, c *Client, k kind, name string, pre Preconditions) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	body := map[string]any{"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
	if pre != (Preconditions{}) {
		body["preconditions"] = pre
	}
	return c.do(ctx, request{method: http.MethodDelete, path: k.path(c.namespace, name), body: body}, nil)
}

// list reads every object of k matching o, page by page, and the list's
// resourceVersion (where a watch of the same objects starts).
func list[T any](ctx context.Context, c *Client, k kind, o ListOptions) ([]T, string, error) {
	var all []T
	q := o.query()
	q.Set("limit", strconv.Itoa(ListPageSize))
	for {
		var page struct {
			Metadata listMeta `json:"metadata"`
			Items    []T      `json:"items"`
		}
		if err := c.do(ctx, request{method: http.MethodGet, path: k.path(c.namespace, ""), query: q, limit: maxListBytes}, &page); err != nil {
			return nil, "", err
		}
		all = append(all, page.Items...)
		if page.Metadata.Continue == "" {
			return all, page.Metadata.ResourceVersion, nil
		}
		q.Set("continue", page.Metadata.Continue)
		q.Del("resourceVersion") // a continued list is pinned by its token
	}
}
