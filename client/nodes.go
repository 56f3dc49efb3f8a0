package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/sandboxd/sandboxd/api"
)

// Nodes lists a cluster's nodes with their state and load, ordered by
// name. Only a cluster's gateway answers it (docs/cluster.md); a single
// daemon answers NOT_FOUND.
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var out api.NodeList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/nodes", nil, &out); err != nil {
		return nil, err
	}
	return out.Nodes, nil
}

// DrainNode cordons node name (no new sandbox is placed on it), stops its
// running sandboxes and moves its sandboxes, with their files, to other
// nodes; the result lists each moved (and where) and each that failed.
func (c *Client) DrainNode(ctx context.Context, name string) (*api.DrainResult, error) {
	var out api.DrainResult
	if err := c.doJSON(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/drain", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UncordonNode lets new sandboxes be placed on node name again.
func (c *Client) UncordonNode(ctx context.Context, name string) (*api.Node, error) {
	var out api.Node
	if err := c.doJSON(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/uncordon", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
