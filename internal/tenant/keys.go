package tenant

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/store"
)

// Errors of the key store; internal/httpapi gives each its code.
var (
	ErrKeyNotFound = errors.New("no such key")
	ErrKeyExists   = errors.New("a key of that name exists")
)

// Quota bounds what one tenant holds. Zero fields are unlimited.
type Quota struct {
	// MaxSandboxes is the most sandboxes the tenant has (any status).
	MaxSandboxes int
	// MaxRunning is the most it runs at once.
	MaxRunning int
	// MaxMemory bounds the sum of the memory limits of its running
	// sandboxes, in bytes.
	MaxMemory int64
}

// Key is an API key as listed: never its secret.
type Key struct {
	Name      string
	Admin     bool
	Quota     Quota
	CreatedAt time.Time
	RotatedAt time.Time
}

// keyPrefix starts every key, so that a leaked one is recognisable (and
// secret scanners can be taught it).
const keyPrefix = "sbx_"

// KeyStore keeps the keys' rows (hashes, never secrets): a single host's
// registry (*store.Store), or a cluster's Kubernetes Secrets
// (internal/kubekeys), which every node and gateway of the cluster read.
type KeyStore interface {
	// Keys returns every row, ordered by name.
	Keys(ctx context.Context) ([]store.Key, error)
	// InsertKey adds a row; store.ErrKeyExists when the name is taken.
	InsertKey(ctx context.Context, k store.Key) error
	// SetKeyHash replaces a row's hash; store.ErrKeyNotFound when none.
	SetKeyHash(ctx context.Context, name string, hash []byte, at time.Time) error
	// DeleteKey removes a row; store.ErrKeyNotFound when none.
	DeleteKey(ctx context.Context, name string) error
}

// Keys are the daemon's API keys: rows in a KeyStore (hashed), and a
// copy in memory so that authenticating a request never waits for the
// store. Removing or rotating a key changes the copy before the call
// returns: the old secret stops working at once. A store others change
// too (a cluster's) calls Refresh when it learns of a change. Safe for
// concurrent use.
type Keys struct {
	store KeyStore
	now   func() time.Time

	// missMu serialises the reloads of RefreshOnMiss; lastMiss is when
	// the last one started.
	missMu   sync.Mutex
	lastMiss time.Time
	missGap  time.Duration // 0: a miss reloads nothing

	// writeMu serialises changes, so the database and the copy agree.
	writeMu sync.Mutex

	mu     sync.RWMutex
	byHash map[[sha256.Size]byte]Key // guarded by mu
	byName map[string]Key            // guarded by mu
}

// OpenKeys loads the keys of st.
func OpenKeys(ctx context.Context, st KeyStore) (*Keys, error) {
	k := &Keys{store: st, now: time.Now}
	if err := k.load(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Keys) load(ctx context.Context) error {
	rows, err := k.store.Keys(ctx)
	if err != nil {
		return err
	}
	byHash := make(map[[sha256.Size]byte]Key, len(rows))
	byName := make(map[string]Key, len(rows))
	for _, r := range rows {
		key := fromRow(r)
		var h [sha256.Size]byte
		copy(h[:], r.Hash)
		byHash[h] = key
		byName[key.Name] = key
	}
	k.mu.Lock()
	k.byHash, k.byName = byHash, byName
	k.mu.Unlock()
	return nil
}

func fromRow(r store.Key) Key {
	return Key{Name: r.Name, Admin: r.Admin, CreatedAt: r.CreatedAt, RotatedAt: r.RotatedAt,
		Quota: Quota{MaxSandboxes: r.MaxSandboxes, MaxRunning: r.MaxRunning, MaxMemory: r.MaxMemory}}
}

// hash is what the registry keeps of a secret. Secrets are 256 random
// bits, so a fast hash is enough: there is nothing to guess a password
// from, and a slow one would cost every request.
func hash(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

func newSecret() string {
	var raw [32]byte
	rand.Read(raw[:])
	return keyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
}

// Create makes the key name and returns its secret, which is shown once
// and kept nowhere.
func (k *Keys) Create(ctx context.Context, name string, admin bool, q Quota) (Key, string, error) {
	if err := ValidateName(name); err != nil {
		return Key{}, "", err
	}
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	secret := newSecret()
	h := hash(secret)
	now := k.now().UTC()
	row := store.Key{Name: name, Hash: h[:], Admin: admin, MaxSandboxes: q.MaxSandboxes, MaxRunning: q.MaxRunning,
		MaxMemory: q.MaxMemory, CreatedAt: now, RotatedAt: now}
	if err := k.store.InsertKey(ctx, row); err != nil {
		if errors.Is(err, store.ErrKeyExists) {
			return Key{}, "", fmt.Errorf("%w: %s", ErrKeyExists, name)
		}
		return Key{}, "", err
	}
	key := fromRow(row)
	k.mu.Lock()
	k.byHash[h] = key
	k.byName[name] = key
	k.mu.Unlock()
	return key, secret, nil
}

// Rotate gives key name a new secret; the old one stops working now.
func (k *Keys) Rotate(ctx context.Context, name string) (Key, string, error) {
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	secret := newSecret()
	h := hash(secret)
	if err := k.store.SetKeyHash(ctx, name, h[:], k.now().UTC()); err != nil {
		return Key{}, "", k.notFound(err, name)
	}
	if err := k.load(ctx); err != nil {
		return Key{}, "", err
	}
	key, _ := k.Get(name)
	return key, secret, nil
}

// Remove deletes key name; its secret stops working now. The tenant's
// sandboxes stay (an admin sees and can destroy them).
func (k *Keys) Remove(ctx context.Context, name string) error {
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	if err := k.store.DeleteKey(ctx, name); err != nil {
		return k.notFound(err, name)
	}
	return k.load(ctx)
}

func (k *Keys) notFound(err error, name string) error {
	if errors.Is(err, store.ErrKeyNotFound) {
		return fmt.Errorf("%w: %s", ErrKeyNotFound, name)
	}
	return err
}

// Refresh reloads the keys from the store: a store that others change
// calls it when they did.
func (k *Keys) Refresh(ctx context.Context) error {
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	return k.load(ctx)
}

// RefreshOnMiss makes an unknown secret of the right form reload the keys
// once before it is refused, at most once per gap: a key just created
// elsewhere in a cluster works before the change reaches this copy. The
// gap bounds what a caller sending made-up keys costs the store.
func (k *Keys) RefreshOnMiss(gap time.Duration) {
	k.missMu.Lock()
	defer k.missMu.Unlock()
	k.missGap = gap
}

// missTimeout bounds a reload on a miss.
const missTimeout = 5 * time.Second

// Authenticate returns the caller a secret belongs to.
func (k *Keys) Authenticate(secret string) (Caller, bool) {
	if k == nil || len(secret) < len(keyPrefix) || secret[:len(keyPrefix)] != keyPrefix {
		return Caller{}, false
	}
	h := hash(secret)
	if key, ok := k.byHashOf(h); ok {
		return Caller{Name: key.Name, Admin: key.Admin}, true
	}
	k.reloadOnMiss() // a concurrent miss's reload counts too: look again
	key, ok := k.byHashOf(h)
	if !ok {
		return Caller{}, false
	}
	return Caller{Name: key.Name, Admin: key.Admin}, true
}

func (k *Keys) byHashOf(h [sha256.Size]byte) (Key, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok := k.byHash[h]
	return key, ok
}

// reloadOnMiss reloads the keys if RefreshOnMiss asked for it and the
// last reload of a miss is older than its gap; concurrent misses wait
// for one reload.
func (k *Keys) reloadOnMiss() {
	k.missMu.Lock()
	defer k.missMu.Unlock()
	if k.missGap == 0 || k.now().Sub(k.lastMiss) < k.missGap {
		return
	}
	k.lastMiss = k.now()
	ctx, cancel := context.WithTimeout(context.Background(), missTimeout)
	defer cancel()
	k.Refresh(ctx) // a failure leaves the copy as it was: the key is refused
}

// Get returns key name.
func (k *Keys) Get(name string) (Key, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok := k.byName[name]
	return key, ok
}

// List returns every key, ordered by name.
func (k *Keys) List(ctx context.Context) ([]Key, error) {
	rows, err := k.store.Keys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(rows))
	for _, r := range rows {
		out = append(out, fromRow(r))
	}
	return out, nil
}

// QuotaOf returns tenant t's quota: none for the admin namespace, or for
// a tenant whose key is gone (it can no longer call).
func (k *Keys) QuotaOf(t string) Quota {
	if k == nil || t == "" {
		return Quota{}
	}
	key, ok := k.Get(t)
	if !ok || key.Admin {
		return Quota{}
	}
	return key.Quota
}
