// Package watch owns file watching in the agent: one inotify instance for
// the whole sandbox, shared by every watch (streamed or polled), with the
// number of watches and of watched directories bounded.
//
// Why one instance. inotify instances and watches are counted per user in
// the initial user namespace, and a sandbox's root is the host's root: the
// host's default of 128 instances is shared by every sandbox and by the
// host's own root daemons. So the agent opens one instance, lazily, and
// multiplexes it: a kernel watch descriptor (one per inode) is shared by the
// watches that observe that directory, each with the path by which it
// reached it.
//
// Why descriptors. Paths are resolved by package files (inside the root, no
// magic links, not /proc), and the kernel is given the resolved object as
// /proc/self/fd/N, never a path a user could swap.
//
// Delivery. Each watch has a bounded buffer of events. The reader never
// blocks on a watch: a watch whose client falls more than the buffer behind
// ends with ErrOverflow (and so does every watch when the kernel's own queue
// overflows). Consecutive modify events of one file are merged while the
// client has not read them. Directories created (or moved in) under a
// recursive watch are watched at once, and what they already hold is
// reported as created, so `mkdir -p a/b && touch a/b/f` is seen whole;
// events can therefore be reported twice, never lost without an error.
//
// It never logs paths or file names.
package watch

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/files"
	"github.com/sandboxd/sandboxd/internal/agent/files/glob"
)

// Errors that end a watch, or refuse one.
var (
	// ErrOverflow: events were lost (kernel queue or the watch's buffer).
	ErrOverflow = errors.New("events were lost because they came faster than they were read")
	// ErrRootGone: the watched path was deleted or moved away.
	ErrRootGone = errors.New("the watched path was deleted or moved")
	// ErrLimit: too many watches, or too many watched directories.
	ErrLimit = errors.New("too many watches or watched directories in this sandbox")
	// ErrClosed: the watch or the hub was closed.
	ErrClosed = errors.New("watch closed")
)

// Kinds of change.
const (
	Create   = "create"
	Modify   = "modify"
	Delete   = "delete"
	MoveFrom = "move_from"
	MoveTo   = "move_to"
	Attrib   = "attrib"
)

// Event is one change.
type Event struct {
	Type  string
	Path  string // absolute sandbox path
	IsDir bool
	// Cookie pairs a MoveFrom with its MoveTo.
	Cookie uint32
	Time   time.Time
}

// Options select what a watch reports.
type Options struct {
	Recursive bool
	// Include, when not empty, keeps only matching paths; Exclude drops
	// matching paths and is not entered. Paths are relative to the root.
	Include, Exclude *glob.Set
}

// Config tunes a Hub.
type Config struct {
	// MaxWatches bounds the live watches (streams and polls).
	MaxWatches int
	// MaxDirs bounds the kernel watch descriptors (directories watched).
	MaxDirs int
	// Buffer is the events a stream may fall behind; PollBuffer the
	// events a poll keeps between two polls.
	Buffer, PollBuffer int
	// PollTTL is how long a poll lives without being polled.
	PollTTL time.Duration
	// Now is the clock (tests replace it).
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultMaxWatches = 64
	DefaultMaxDirs    = 16384
	DefaultBuffer     = 4096
	DefaultPollBuffer = 1024
	DefaultPollTTL    = 10 * time.Minute
)

const mask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_EXCL_UNLINK

// Hub is the agent's inotify instance and its watches.
type Hub struct {
	fs    *files.FS
	cfg   Config
	nonce string // tells this agent's cursors from an earlier agent's

	mu      sync.Mutex
	file    *os.File // the inotify instance; nil until the first watch
	done    chan struct{}
	nodes   map[int32]*node
	watches map[uint64]*Watch
	polls   map[uint64]*poll
	nextID  uint64
	closed  bool
}

// node is one kernel watch descriptor and the watches observing it, each
// with the path it reached the inode by.
type node struct {
	wd   int32
	subs map[*Watch]string
}

// New returns a hub for fsys. The inotify instance is opened by the first
// watch.
func New(fsys *files.FS, cfg Config) *Hub {
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = DefaultMaxWatches
	}
	if cfg.MaxDirs <= 0 {
		cfg.MaxDirs = DefaultMaxDirs
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.PollBuffer <= 0 {
		cfg.PollBuffer = DefaultPollBuffer
	}
	if cfg.PollTTL <= 0 {
		cfg.PollTTL = DefaultPollTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Hub{
		fs: fsys, cfg: cfg,
		nonce:   newNonce(),
		nodes:   map[int32]*node{},
		watches: map[uint64]*Watch{},
		polls:   map[uint64]*poll{},
	}
}

// newNonce is a random tag for this agent's poll cursors.
func newNonce() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close ends every watch and closes the inotify instance, waiting for its
// reader.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for _, w := range h.watches {
		w.fail(ErrClosed)
	}
	file, done := h.file, h.done
	h.mu.Unlock()
	if file != nil {
		file.Close()
		<-done
	}
}

// Len is the number of live watches, streamed and polled.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watches)
}

// start opens the inotify instance and its reader. Called with h.mu held.
func (h *Hub) start() error {
	if h.file != nil {
		return nil
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			return fmt.Errorf("%w: the host's limit of inotify instances is reached", ErrLimit)
		}
		return fmt.Errorf("creating inotify instance: %w", err)
	}
	// Non-blocking, so the runtime's poller serves it and Close wakes the
	// reader.
	h.file = os.NewFile(uintptr(fd), "inotify")
	h.done = make(chan struct{})
	go h.read(h.file, h.done)
	return nil
}

// Watch is one watch of a path.
type Watch struct {
	h     *Hub
	id    uint64
	root  string
	isDir bool
	opts  Options
	wds   map[int32]bool
	poll  bool

	// Guarded by h.mu.
	q        queue
	err      error
	notify   chan struct{}
	released bool
}

// Watch starts watching root (an absolute, clean sandbox path; symlinks
// followed to reach it).
func (h *Hub) Watch(root string, o Options) (*Watch, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watch(root, o, false)
}

func (h *Hub) watch(root string, o Options, poll bool) (*Watch, error) {
	if h.closed {
		return nil, ErrClosed
	}
	h.expirePolls()
	if len(h.watches) >= h.cfg.MaxWatches {
		return nil, fmt.Errorf("%w: %d watches are open", ErrLimit, len(h.watches))
	}
	fd, mode, err := h.fs.OpenPath(root)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := h.start(); err != nil {
		return nil, err
	}
	size := h.cfg.Buffer
	if poll {
		size = h.cfg.PollBuffer
	}
	h.nextID++
	w := &Watch{
		h: h, id: h.nextID, root: root, isDir: mode.IsDir(), opts: o, wds: map[int32]bool{}, poll: poll,
		q: queue{max: size}, notify: make(chan struct{}, 1),
	}
	if w.isDir {
		err = h.addTree(w, fd, root, false)
	} else {
		_, err = h.addOne(w, fd, root)
	}
	if err != nil {
		w.release()
		return nil, err
	}
	h.watches[w.id] = w
	return w, nil
}

// addOne adds the inode open at fd, known to w as p.
func (h *Hub) addOne(w *Watch, fd int, p string) (int32, error) {
	wd, err := unix.InotifyAddWatch(int(h.file.Fd()), "/proc/self/fd/"+strconv.Itoa(fd), mask)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return 0, fmt.Errorf("%w: the host's limit of inotify watches is reached", ErrLimit)
		}
		return 0, fmt.Errorf("watching %s: %w", p, err)
	}
	n := h.nodes[int32(wd)]
	if n == nil {
		if len(h.nodes) >= h.cfg.MaxDirs {
			unix.InotifyRmWatch(int(h.file.Fd()), uint32(wd))
			return 0, fmt.Errorf("%w: %d directories are watched", ErrLimit, len(h.nodes))
		}
		n = &node{wd: int32(wd), subs: map[*Watch]string{}}
		h.nodes[n.wd] = n
	}
	n.subs[w] = p
	w.wds[n.wd] = true
	return n.wd, nil
}

// addTree adds the directory open at fd (known to w as p) and, for a
// recursive watch, every directory below it that the options do not
// exclude. With synth, what it finds is reported as created.
func (h *Hub) addTree(w *Watch, fd int, p string, synth bool) error {
	if _, err := h.addOne(w, fd, p); err != nil {
		return err
	}
	if !w.opts.Recursive && p == w.root {
		return nil
	}
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // gone meanwhile; its parent's events say so
	}
	dir := os.NewFile(uintptr(dfd), p)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil
	}
	for _, name := range names {
		full := path.Join(p, name)
		rel := w.rel(full)
		if w.opts.Exclude.Match(rel) {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if synth {
			w.push(Event{Type: Create, Path: full, IsDir: isDir, Time: h.cfg.Now()})
		}
		if !isDir || !w.opts.Recursive {
			continue
		}
		cfd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if !h.fs.Enterable(cfd) {
			unix.Close(cfd)
			continue
		}
		err = h.addTree(w, cfd, full, synth)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// rel is full relative to the watch's root ("" for the root itself).
func (w *Watch) rel(full string) string {
	if full == w.root {
		return ""
	}
	if w.root == "/" {
		return full[1:]
	}
	return strings.TrimPrefix(full, w.root+"/")
}

// Root is the watched path.
func (w *Watch) Root() string { return w.root }

// Next waits for the next event. It returns the error that ended the watch
// once its events are all read, and stop's value when stop is closed first.
func (w *Watch) Next(stop <-chan struct{}, stopErr func() error) (Event, error) {
	for {
		w.h.mu.Lock()
		ev, ok, err := w.q.next()
		if err == nil && !ok {
			err = w.err
		}
		w.h.mu.Unlock()
		if ok || err != nil {
			return ev, err
		}
		select {
		case <-w.notify:
		case <-stop:
			return Event{}, stopErr()
		}
	}
}

// Close ends the watch and releases its kernel watches.
func (w *Watch) Close() {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	w.release()
}

// release drops w from every node and from the hub. Called with h.mu held.
func (w *Watch) release() {
	if w.released {
		return
	}
	w.released = true
	h := w.h
	for wd := range w.wds {
		h.unsubscribe(wd, w)
	}
	delete(h.watches, w.id)
	delete(h.polls, w.id)
	if w.err == nil {
		w.err = ErrClosed
	}
}

// unsubscribe removes w from node wd, and the kernel watch when nobody
// observes the node any more.
func (h *Hub) unsubscribe(wd int32, w *Watch) {
	delete(w.wds, wd)
	n := h.nodes[wd]
	if n == nil {
		return
	}
	delete(n.subs, w)
	if len(n.subs) == 0 {
		delete(h.nodes, wd)
		if h.file != nil {
			unix.InotifyRmWatch(int(h.file.Fd()), uint32(wd))
		}
	}
}

// fail ends w with err (the first error wins) and wakes its reader.
// Called with h.mu held.
func (w *Watch) fail(err error) {
	if w.err == nil {
		w.err = err
	}
	w.wake()
}

func (w *Watch) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// push queues an event for w. Called with h.mu held.
func (w *Watch) push(ev Event) {
	if w.err != nil {
		return
	}
	if !w.q.push(ev) && !w.poll {
		w.fail(ErrOverflow)
		return
	}
	w.wake()
}

// read is the reader goroutine: it decodes the instance's events and
// dispatches them until the file is closed.
func (h *Hub) read(file *os.File, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 64<<10)
	for {
		n, err := file.Read(buf)
		if err != nil {
			return
		}
		h.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			end := off + unix.SizeofInotifyEvent + int(raw.Len)
			if end > n {
				break
			}
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
			h.dispatch(raw.Wd, raw.Mask, raw.Cookie, name)
			off = end
		}
		h.mu.Unlock()
	}
}

// dispatch delivers one kernel event. Called with h.mu held.
func (h *Hub) dispatch(wd int32, m, cookie uint32, name string) {
	now := h.cfg.Now()
	if m&unix.IN_Q_OVERFLOW != 0 {
		for _, w := range h.watches {
			w.fail(ErrOverflow)
		}
		return
	}
	n := h.nodes[wd]
	if n == nil {
		return
	}
	if m&unix.IN_IGNORED != 0 {
		// The inode is gone (or unmounted): nobody observes it any more.
		for w, p := range n.subs {
			delete(w.wds, wd)
			if p == w.root {
				w.fail(ErrRootGone)
			}
		}
		delete(h.nodes, wd)
		return
	}
	isDir := m&unix.IN_ISDIR != 0
	// Iterate over a copy: adding a tree may add subscriptions.
	subs := make([]*Watch, 0, len(n.subs))
	for w := range n.subs {
		subs = append(subs, w)
	}
	for _, w := range subs {
		p, ok := n.subs[w]
		if !ok || w.err != nil {
			continue
		}
		if m&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 {
			// Only the root reports itself; below it, the parent did.
			if p == w.root {
				kind := Delete
				if m&unix.IN_MOVE_SELF != 0 {
					kind = MoveFrom
				}
				w.push(Event{Type: kind, Path: p, IsDir: w.isDir, Time: now})
				w.fail(ErrRootGone)
			}
			continue
		}
		full := p
		if name != "" {
			full = path.Join(p, name)
		}
		rel := w.rel(full)
		if rel != "" && w.opts.Exclude.Match(rel) {
			continue
		}
		var kind string
		switch {
		case m&unix.IN_CREATE != 0:
			kind = Create
		case m&unix.IN_MODIFY != 0:
			kind = Modify
		case m&unix.IN_ATTRIB != 0:
			kind = Attrib
		case m&unix.IN_DELETE != 0:
			kind = Delete
		case m&unix.IN_MOVED_FROM != 0:
			kind = MoveFrom
		case m&unix.IN_MOVED_TO != 0:
			kind = MoveTo
		default:
			continue
		}
		if rel == "" || w.opts.Include.Empty() || w.opts.Include.Match(rel) {
			w.push(Event{Type: kind, Path: full, IsDir: isDir, Cookie: cookie, Time: now})
		}
		if !isDir || !w.opts.Recursive || name == "" {
			continue
		}
		switch kind {
		case Create, MoveTo:
			h.addNewDir(w, full)
		case MoveFrom:
			h.dropBelow(w, full)
		}
	}
}

// addNewDir watches a directory that appeared under a recursive watch, and
// reports what it already holds.
func (h *Hub) addNewDir(w *Watch, full string) {
	fd, mode, err := h.fs.OpenPath(full)
	if err != nil || !mode.IsDir() {
		return // gone again, or off limits
	}
	defer unix.Close(fd)
	if !h.fs.Enterable(fd) {
		return
	}
	if err := h.addTree(w, fd, full, true); errors.Is(err, ErrLimit) {
		w.fail(err)
	}
}

// dropBelow forgets w's watches of full and everything below it: the
// directory moved away (if it moved within the tree, its move_to adds it
// back under its new name).
func (h *Hub) dropBelow(w *Watch, full string) {
	for wd := range w.wds {
		n := h.nodes[wd]
		if n == nil {
			continue
		}
		if p := n.subs[w]; p == full || strings.HasPrefix(p, full+"/") {
			h.unsubscribe(wd, w)
		}
	}
}
