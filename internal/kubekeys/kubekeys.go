// Package kubekeys keeps a cluster's API keys in Kubernetes: one Secret
// per key (sandboxd-key-NAME, label sandboxd.dev/key=NAME) holding the
// key's SHA-256 and its quotas, never the key itself. It is the
// tenant.KeyStore of every node and gateway of a cluster, so a key made
// through any of them authenticates on all of them, and Follow keeps each
// one's copy in memory current. It must never store or log a secret.
package kubekeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

const (
	// LabelKey labels every key's Secret with the key's name.
	LabelKey = "sandboxd.dev/key"
	// SecretType is the type of a key's Secret.
	SecretType = "sandboxd.dev/api-key"
	// secretPrefix starts the name of a key's Secret.
	secretPrefix = "sandboxd-key-"
	// dataField is the Secret's one field: the row as JSON.
	dataField = "key.json"
	// MissGap is how often an unknown key may reload the keys from the API
	// (tenant.Keys.RefreshOnMiss).
	MissGap = time.Second
)

// Store is a tenant.KeyStore on Kubernetes Secrets.
type Store struct {
	Client *kube.Client
}

var _ tenant.KeyStore = Store{}

// row is what a key's Secret holds.
type row struct {
	Name         string    `json:"name"`
	SHA256       []byte    `json:"sha256"`
	Admin        bool      `json:"admin,omitempty"`
	MaxSandboxes int       `json:"maxSandboxes,omitempty"`
	MaxRunning   int       `json:"maxRunning,omitempty"`
	MaxMemory    int64     `json:"maxMemory,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
	RotatedAt    time.Time `json:"rotatedAt"`
}

func secretName(name string) string { return secretPrefix + name }

func toSecret(k store.Key) (*kube.Secret, error) {
	data, err := json.Marshal(row{Name: k.Name, SHA256: k.Hash, Admin: k.Admin, MaxSandboxes: k.MaxSandboxes,
		MaxRunning: k.MaxRunning, MaxMemory: k.MaxMemory, CreatedAt: k.CreatedAt, RotatedAt: k.RotatedAt})
	if err != nil {
		return nil, err
	}
	return &kube.Secret{
		Metadata: kube.ObjectMeta{Name: secretName(k.Name), Labels: map[string]string{LabelKey: k.Name}},
		Type:     SecretType, Data: map[string][]byte{dataField: data},
	}, nil
}

// fromSecret reads a key's Secret; a Secret that is not one (edited by
// hand, of another name) is an error, and never authenticates.
func fromSecret(s *kube.Secret) (store.Key, error) {
	var r row
	if s.Type != SecretType {
		return store.Key{}, fmt.Errorf("secret %s: type %q, not %s", s.Metadata.Name, s.Type, SecretType)
	}
	if err := json.Unmarshal(s.Data[dataField], &r); err != nil {
		return store.Key{}, fmt.Errorf("secret %s: %w", s.Metadata.Name, err)
	}
	if tenant.ValidateName(r.Name) != nil || secretName(r.Name) != s.Metadata.Name || s.Metadata.Labels[LabelKey] != r.Name || len(r.SHA256) != 32 {
		return store.Key{}, fmt.Errorf("secret %s is not a well-formed key", s.Metadata.Name)
	}
	return store.Key{Name: r.Name, Hash: r.SHA256, Admin: r.Admin, MaxSandboxes: r.MaxSandboxes, MaxRunning: r.MaxRunning,
		MaxMemory: r.MaxMemory, CreatedAt: r.CreatedAt, RotatedAt: r.RotatedAt}, nil
}

// Keys lists every key's Secret. Malformed ones are left out (logged by
// Follow), so a hand-edited Secret cannot stop every key from working.
func (s Store) Keys(ctx context.Context) ([]store.Key, error) {
	list, _, err := s.Client.ListSecrets(ctx, kube.ListOptions{LabelSelector: LabelKey})
	if err != nil {
		return nil, fmt.Errorf("listing the cluster's keys: %w", err)
	}
	out := make([]store.Key, 0, len(list))
	for i := range list {
		if k, err := fromSecret(&list[i]); err == nil {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b store.Key) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// InsertKey creates the key's Secret; its name is the claim, so two
// gateways creating one name make one key.
func (s Store) InsertKey(ctx context.Context, k store.Key) error {
	sec, err := toSecret(k)
	if err != nil {
		return err
	}
	_, err = s.Client.CreateSecret(ctx, sec)
	if errors.Is(err, kube.ErrAlreadyExists) {
		return store.ErrKeyExists
	}
	return err
}

// SetKeyHash replaces the key's hash, retrying when another writer
// changed the Secret meanwhile.
func (s Store) SetKeyHash(ctx context.Context, name string, hash []byte, at time.Time) error {
	if tenant.ValidateName(name) != nil {
		return store.ErrKeyNotFound
	}
	for range 5 {
		sec, err := s.Client.GetSecret(ctx, secretName(name))
		if errors.Is(err, kube.ErrNotFound) {
			return store.ErrKeyNotFound
		}
		if err != nil {
			return err
		}
		k, err := fromSecret(sec)
		if err != nil {
			return err
		}
		k.Hash, k.RotatedAt = hash, at
		next, err := toSecret(k)
		if err != nil {
			return err
		}
		next.Metadata.ResourceVersion = sec.Metadata.ResourceVersion
		_, err = s.Client.UpdateSecret(ctx, next)
		if errors.Is(err, kube.ErrConflict) {
			continue
		}
		if errors.Is(err, kube.ErrNotFound) {
			return store.ErrKeyNotFound
		}
		return err
	}
	return fmt.Errorf("rotating key %s: the Secret kept changing", name)
}

// DeleteKey deletes the key's Secret.
func (s Store) DeleteKey(ctx context.Context, name string) error {
	if tenant.ValidateName(name) != nil {
		return store.ErrKeyNotFound
	}
	err := s.Client.DeleteSecret(ctx, secretName(name), kube.Preconditions{})
	if errors.Is(err, kube.ErrNotFound) {
		return store.ErrKeyNotFound
	}
	return err
}

// Open loads the cluster's keys and makes an unknown key reload them (at
// most once per MissGap); Follow keeps them current.
func Open(ctx context.Context, c *kube.Client) (*tenant.Keys, error) {
	keys, err := tenant.OpenKeys(ctx, Store{Client: c})
	if err != nil {
		return nil, err
	}
	keys.RefreshOnMiss(MissGap)
	return keys, nil
}

// Follow reloads keys on every change of the cluster's key Secrets until
// ctx ends: a key created, rotated or removed through any node or gateway
// reaches this copy as the watch delivers it.
func Follow(ctx context.Context, c *kube.Client, keys *tenant.Keys, log *slog.Logger) error {
	return c.FollowSecrets(ctx, LabelKey, func(ev kube.Event[kube.Secret]) {
		if ev.Object != nil {
			if _, err := fromSecret(ev.Object); err != nil && ev.Type != kube.Deleted {
				log.Warn("ignoring a malformed key Secret", "err", err)
			}
		}
		if err := keys.Refresh(ctx); err != nil && ctx.Err() == nil {
			log.Warn("reloading the cluster's keys", "err", err)
		}
	})
}
