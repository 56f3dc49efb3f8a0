package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Errors of the registry; internal/httpapi maps each to a code.
var (
	// ErrNotFound: no preview at that address. Deliberately says nothing
	// of which part was wrong.
	ErrNotFound = errors.New("no such preview")
	// ErrSandboxNotFound: the sandbox is gone.
	ErrSandboxNotFound = errors.New("sandbox not found")
	// ErrInvalidPort: outside 1024-65535, or reserved.
	ErrInvalidPort = errors.New("invalid port")
	// ErrInvalid: a bad name or token.
	ErrInvalid = errors.New("invalid port options")
	// ErrAlreadyExposed: exposed with other options.
	ErrAlreadyExposed = errors.New("port already exposed")
	// ErrNotExposed: the port is not exposed.
	ErrNotExposed = errors.New("port not exposed")
	// ErrLimit: the sandbox exposes api.MaxExposedPorts ports.
	ErrLimit = errors.New("too many exposed ports")
)

// Port is one exposed port.
type Port struct {
	SandboxID string
	Port      int
	Name      string
	Token     string
	Public    bool
	CreatedAt time.Time
	// Generation is the creation time of the sandbox the port was exposed
	// on: a later sandbox of the same ID has another one, and a cached
	// port whose generation does not match the sandbox's is stale.
	Generation time.Time
}

// Address is the port's preview address.
// Sandbox IDs in the registry are scoped (package tenant); a preview
// address names the sandbox as its tenant does, so tenant A's "demo" and
// tenant B's "demo" differ only by token.
func (p Port) Address() Address {
	return Address{Port: p.Port, SandboxID: tenant.Local(p.SandboxID), Token: p.Token}
}

// ExposeOptions are the options of Expose.
type ExposeOptions struct {
	Name string
	// Token is the caller's token; empty: a random one.
	Token  string
	Public bool
}

type portKey struct {
	id   string
	port int
}

// Registry holds every exposed port: rows in the registry database, and a
// copy in memory so that a preview request never waits for the database.
// It is safe for concurrent use.
type Registry struct {
	store    *store.Store
	reserved map[int]bool
	now      func() time.Time

	// writeMu serialises changes, so the database and the copy agree.
	writeMu sync.Mutex

	mu    sync.RWMutex
	ports map[portKey]Port // guarded by mu
	count map[string]int   // guarded by mu; exposed ports per sandbox
	// local finds the ports a preview host may name: by the ID as its
	// tenant sees it, every tenant's port of that ID and number.
	local map[portKey][]portKey // guarded by mu
}

// link and unlink keep local in step with ports; mu is held.
func (r *Registry) link(k portKey) {
	l := portKey{tenant.Local(k.id), k.port}
	r.local[l] = append(r.local[l], k)
}

func (r *Registry) unlink(k portKey) {
	l := portKey{tenant.Local(k.id), k.port}
	keys := slices.DeleteFunc(r.local[l], func(x portKey) bool { return x == k })
	if len(keys) == 0 {
		delete(r.local, l)
	} else {
		r.local[l] = keys
	}
}

// NewRegistry loads the exposed ports of st. Ports in reserved cannot be
// exposed.
func NewRegistry(ctx context.Context, st *store.Store, reserved []int) (*Registry, error) {
	r := &Registry{store: st, reserved: map[int]bool{}, now: time.Now, ports: map[portKey]Port{}, count: map[string]int{},
		local: map[portKey][]portKey{}}
	for _, p := range reserved {
		r.reserved[p] = true
	}
	rows, err := st.Ports(ctx)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		r.add(fromRow(row))
	}
	return r, nil
}

func fromRow(row store.Port) Port {
	return Port{SandboxID: row.SandboxID, Port: row.Port, Name: row.Name, Token: row.Token, Public: row.Public,
		CreatedAt: row.CreatedAt, Generation: row.SandboxCreatedAt}
}

func (r *Registry) add(p Port) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := portKey{p.SandboxID, p.Port}
	if _, ok := r.ports[k]; !ok {
		r.count[p.SandboxID]++
		r.link(k)
	}
	r.ports[k] = p
}

func (r *Registry) remove(id string, port int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := portKey{id, port}
	if _, ok := r.ports[k]; ok {
		delete(r.ports, k)
		r.unlink(k)
		if r.count[id]--; r.count[id] <= 0 {
			delete(r.count, id)
		}
	}
}

// CheckPort returns ErrInvalidPort unless port can be exposed.
func (r *Registry) CheckPort(port int) error {
	switch {
	case port < api.MinExposedPort || port > api.MaxExposedPort:
		return fmt.Errorf("%w: %d is outside %d-%d", ErrInvalidPort, port, api.MinExposedPort, api.MaxExposedPort)
	case r.reserved[port]:
		return fmt.Errorf("%w: %d is reserved by the platform", ErrInvalidPort, port)
	}
	return nil
}

func checkOptions(o ExposeOptions) error {
	if len(o.Name) > api.MaxPortNameBytes || !utf8.ValidString(o.Name) {
		return fmt.Errorf("%w: name must be valid UTF-8 of at most %d bytes", ErrInvalid, api.MaxPortNameBytes)
	}
	for _, c := range o.Name {
		if !unicode.IsPrint(c) {
			return fmt.Errorf("%w: name has the unprintable character %q", ErrInvalid, c)
		}
	}
	// A chosen token is the only secret of a public preview URL: short
	// ones could be guessed in a few thousand requests.
	if o.Token != "" && (!ValidToken(o.Token) || len(o.Token) < api.MinPreviewTokenBytes) {
		return fmt.Errorf("%w: token must be %d-%d of a-z, 0-9 and _", ErrInvalid, api.MinPreviewTokenBytes, api.MaxPreviewTokenBytes)
	}
	return nil
}

// Expose exposes port of sandbox id, which must exist in the database;
// gen is the sandbox's generation (its creation time). Exposing a port
// again with the same options returns it unchanged (created false); with
// other options it is ErrAlreadyExposed.
func (r *Registry) Expose(ctx context.Context, id string, gen time.Time, port int, o ExposeOptions) (Port, bool, error) {
	if err := r.CheckPort(port); err != nil {
		return Port{}, false, err
	}
	if err := checkOptions(o); err != nil {
		return Port{}, false, err
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.purge(id, gen)
	if old, ok := r.Get(id, port); ok {
		if old.Name == o.Name && old.Public == o.Public && (o.Token == "" || o.Token == old.Token) {
			return old, false, nil
		}
		return Port{}, false, fmt.Errorf("%w: port %d is exposed with other options; unexpose it first", ErrAlreadyExposed, port)
	}
	if r.Count(id) >= api.MaxExposedPorts {
		return Port{}, false, fmt.Errorf("%w: a sandbox may expose at most %d ports", ErrLimit, api.MaxExposedPorts)
	}
	token := o.Token
	if token == "" {
		token = NewToken()
	} else if _, err := r.Lookup(Address{Port: port, SandboxID: tenant.Local(id), Token: token}); err == nil {
		// Another tenant's sandbox of the same name has this port with
		// this token: the preview host would name both.
		return Port{}, false, fmt.Errorf("%w: choose another token", ErrInvalid)
	}
	row := store.Port{SandboxID: id, Port: port, Name: o.Name, Token: token, Public: o.Public, CreatedAt: r.now().UTC()}
	switch err := r.store.InsertPort(ctx, &row); {
	case errors.Is(err, store.ErrNotFound):
		return Port{}, false, ErrSandboxNotFound
	case errors.Is(err, store.ErrPortExists):
		// Only a database changed behind our back gets here.
		return Port{}, false, fmt.Errorf("%w: port %d", ErrAlreadyExposed, port)
	case err != nil:
		return Port{}, false, err
	}
	p := fromRow(row)
	if !p.Generation.Equal(gen) {
		// The sandbox was destroyed and created again since the caller
		// looked: the new one gets the port, and the caller's view is
		// out of date.
		r.purge(id, p.Generation)
	}
	r.add(p)
	return p, true, nil
}

// purge drops cached ports of id that belong to another generation of the
// sandbox (the database lost them with their sandbox). Called with writeMu
// held.
func (r *Registry) purge(id string, gen time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range r.ports {
		if k.id == id && !p.Generation.Equal(gen) {
			delete(r.ports, k)
			r.unlink(k)
			if r.count[id]--; r.count[id] <= 0 {
				delete(r.count, id)
			}
		}
	}
}

// Unexpose closes port's preview; a port that is not exposed is fine.
func (r *Registry) Unexpose(ctx context.Context, id string, port int) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	if _, err := r.store.DeletePort(ctx, id, port); err != nil {
		return err
	}
	r.remove(id, port)
	return nil
}

// Get returns the exposed port, if it is.
func (r *Registry) Get(id string, port int) (Port, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.ports[portKey{id, port}]
	return p, ok
}

// Count returns how many ports sandbox id exposes.
func (r *Registry) Count(id string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.count[id]
}

// List returns the exposed ports of generation gen of sandbox id, by
// port.
func (r *Registry) List(id string, gen time.Time) []Port {
	r.mu.RLock()
	out := make([]Port, 0, r.count[id])
	for k, p := range r.ports {
		if k.id == id && p.Generation.Equal(gen) {
			out = append(out, p)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}

// Lookup returns the port a preview address (whose ID is as its tenant
// sees it) opens, or ErrNotFound. Tokens are compared in constant time.
func (r *Registry) Lookup(a Address) (Port, error) {
	r.mu.RLock()
	keys := r.local[portKey{a.SandboxID, a.Port}]
	var found *Port
	for _, k := range keys {
		p := r.ports[k]
		if subtle.ConstantTimeCompare([]byte(p.Token), []byte(a.Token)) == 1 {
			found = &p
		}
	}
	r.mu.RUnlock()
	if found == nil {
		return Port{}, ErrNotFound
	}
	return *found, nil
}

// LookupOf returns port of sandbox id (scoped) if it is exposed with
// token, compared in constant time; else ErrNotFound.
func (r *Registry) LookupOf(id string, port int, token string) (Port, error) {
	p, ok := r.Get(id, port)
	if !ok || subtle.ConstantTimeCompare([]byte(p.Token), []byte(token)) != 1 {
		return Port{}, ErrNotFound
	}
	return p, nil
}

// Stale reports whether p belongs to an earlier sandbox of its ID than
// the one of generation gen, and if so drops it and its siblings.
func (r *Registry) Stale(p Port, gen time.Time) bool {
	if p.Generation.Equal(gen) {
		return false
	}
	r.writeMu.Lock()
	r.purge(p.SandboxID, gen)
	r.writeMu.Unlock()
	return true
}

// Reload replaces the copy in memory with the database's rows, which lose
// the ports of destroyed sandboxes with them. The daemon calls it now and
// then so that the copy does not keep ports of sandboxes destroyed long
// ago.
func (r *Registry) Reload(ctx context.Context) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	rows, err := r.store.Ports(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.ports, r.count, r.local = make(map[portKey]Port, len(rows)), map[string]int{}, map[portKey][]portKey{}
	for _, row := range rows {
		p := fromRow(row)
		k := portKey{p.SandboxID, p.Port}
		r.ports[k] = p
		r.count[p.SandboxID]++
		r.link(k)
	}
	r.mu.Unlock()
	return nil
}
