package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/kubekeys"
	"github.com/sandboxd/sandboxd/internal/kubenode"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Cluster is a node's cluster membership (docs/cluster.md). Without a
// NodeName the daemon is a single host and none of this runs.
type Cluster struct {
	// Kubeconfig is the kubeconfig file of the Kubernetes API; empty: the
	// in-cluster configuration of the pod the daemon runs in.
	Kubeconfig string
	// NodeName is the node's name in the cluster (a DNS label).
	NodeName string
	// NodeURL is where the gateway reaches this daemon's API; empty: the
	// --listen address, when it names a host.
	NodeURL string
	// Labels are the node's --node-label flags, published with its
	// status for placement by nodeSelector.
	Labels map[string]string
}

// Enabled reports whether the daemon is a cluster node.
func (c Cluster) Enabled() bool { return c.NodeName != "" || c.Kubeconfig != "" }

// validateCluster checks the cluster flags and derives the node URL.
func (c *Config) validateCluster() []error {
	cl := &c.Cluster
	if !cl.Enabled() {
		if cl.NodeURL != "" {
			return []error{errors.New("--node-url needs --node-name")}
		}
		if len(cl.Labels) > 0 {
			return []error{errors.New("--node-label needs --node-name")}
		}
		return nil
	}
	var errs []error
	if err := api.ValidateNodeLabels("--node-label", cl.Labels); err != nil {
		errs = append(errs, err)
	}
	if cl.NodeName == "" {
		errs = append(errs, errors.New("--cluster-kubeconfig needs --node-name"))
	} else if err := kube.ValidateNodeName(cl.NodeName); err != nil {
		errs = append(errs, fmt.Errorf("--node-name: %w", err))
	}
	if cl.NodeURL == "" {
		host, _, err := net.SplitHostPort(c.Listen)
		addr, aerr := netip.ParseAddr(host)
		if err != nil || host == "" || (aerr == nil && addr.IsUnspecified()) {
			errs = append(errs, fmt.Errorf("--listen %s names no host the gateway could reach: give --node-url", c.Listen))
		} else {
			scheme := "http"
			if c.TLS() {
				scheme = "https"
			}
			cl.NodeURL = scheme + "://" + c.Listen
		}
	}
	if cl.NodeURL != "" {
		if err := kube.ValidateNodeURL(cl.NodeURL); err != nil {
			errs = append(errs, fmt.Errorf("--node-url: %w", err))
		}
	}
	return errs
}

// clusterClient returns the client of the cluster's Kubernetes API; nil
// without a cluster.
func clusterClient(cfg Config) (*kube.Client, error) {
	if !cfg.Cluster.Enabled() {
		return nil, nil
	}
	var kcfg *kube.Config
	var err error
	if cfg.Cluster.Kubeconfig != "" {
		kcfg, err = kube.LoadKubeconfig(cfg.Cluster.Kubeconfig)
	} else {
		kcfg, err = kube.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("the cluster's Kubernetes API: %w", err)
	}
	client, err := kube.New(kcfg)
	if err != nil {
		return nil, fmt.Errorf("the cluster's Kubernetes API: %w", err)
	}
	return client, nil
}

// openKeys opens the API keys: the registry's on a single host; on a
// node, the cluster's (Secrets in Kubernetes, shared with every node and
// gateway), with the task that keeps them current. A node ignores the
// keys of its own registry.
func openKeys(ctx context.Context, db *store.Store, client *kube.Client, log *slog.Logger) (*tenant.Keys, func(context.Context) error, error) {
	if client == nil {
		keys, err := tenant.OpenKeys(ctx, db)
		return keys, nil, err
	}
	keys, err := kubekeys.Open(ctx, client)
	if err != nil {
		return nil, nil, fmt.Errorf("the cluster's API keys: %w", err)
	}
	return keys, func(ctx context.Context) error {
		kubekeys.Follow(ctx, client, keys, log)
		return nil
	}, nil
}

// joinCluster registers the daemon as a node and returns it (its Run
// keeps it registered; its Handler serves moves); nil without a cluster.
func joinCluster(ctx context.Context, cfg Config, client *kube.Client, mgr *sandbox.Manager, log *slog.Logger) (*kubenode.Node, error) {
	if client == nil {
		return nil, nil
	}
	node, err := kubenode.Register(ctx, kubenode.Options{
		Client: client, Name: cfg.Cluster.NodeName, URL: cfg.Cluster.NodeURL, Version: cfg.Version,
		Sandboxes: mgr, Moves: mgr, Capacity: cfg.Capacity, DefaultMemory: cfg.DefaultLimits.MemoryBytes, Labels: cfg.Cluster.Labels, Log: log.With("node", cfg.Cluster.NodeName),
	})
	if err != nil {
		return nil, err
	}
	log.Info("registered as a cluster node", "node", cfg.Cluster.NodeName, "url", cfg.Cluster.NodeURL,
		"namespace", client.Namespace())
	return node, nil
}
