package presence

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBuffer is the number of events a Watcher holds for a slow reader
// when Filter.Buffer is zero.
const DefaultBuffer = 64

// Filter selects the events a Watcher gets.
type Filter struct {
	// Rooms: events that concern any of these rooms (the person is in it
	// or just left it).
	Rooms []string
	// Identities: events about any of these people, such as a person's own
	// other sessions.
	Identities []string
	// Buffer is how many events wait for the reader; 0 means DefaultBuffer.
	Buffer int
}

// Watcher receives the events that match its filter, in order. When the
// reader falls more than Buffer events behind, the oldest waiting event is
// dropped: each event carries a person's whole presence, so the reader still
// ends with the newest state of everyone.
type Watcher struct {
	h       *hub
	ch      chan Event
	rooms   []string
	people  []string
	dropped atomic.Uint64

	mu     sync.Mutex
	closed bool
	stop   func() bool
}

// Events returns the channel of events; it is closed when the watcher's
// context ends, Close is called or the Tracker stops.
func (w *Watcher) Events() <-chan Event { return w.ch }

// Dropped returns how many events were dropped because the reader was slow.
func (w *Watcher) Dropped() uint64 { return w.dropped.Load() }

// Close stops the watcher and closes its channel. It is idempotent.
func (w *Watcher) Close() {
	w.h.remove(w)
	w.mu.Lock()
	stop := w.stop
	w.shut()
	w.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// shut closes the channel; the caller holds w.mu.
func (w *Watcher) shut() {
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
}

// send queues e, dropping the oldest queued events to make room.
func (w *Watcher) send(e Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for {
		select {
		case w.ch <- e:
			return
		default:
		}
		select {
		case <-w.ch:
			w.dropped.Add(1)
		default:
		}
	}
}

// hub routes delivered events to watchers, dropping stale and unchanged ones.
type hub struct {
	mu     sync.Mutex
	closed bool
	all    map[*Watcher]struct{}
	rooms  map[string]map[*Watcher]struct{}
	people map[string]map[*Watcher]struct{}
	// seen is the last presence delivered per person.
	seen map[string]seenEntry
}

type seenEntry struct {
	p  Presence
	at time.Time
}

func newHub() *hub {
	return &hub{
		all:    make(map[*Watcher]struct{}),
		rooms:  make(map[string]map[*Watcher]struct{}),
		people: make(map[string]map[*Watcher]struct{}),
		seen:   make(map[string]seenEntry),
	}
}

func (h *hub) watch(ctx context.Context, f Filter) *Watcher {
	n := f.Buffer
	if n <= 0 {
		n = DefaultBuffer
	}
	w := &Watcher{h: h, ch: make(chan Event, n), rooms: union(f.Rooms, nil), people: union(f.Identities, nil)}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		w.mu.Lock()
		w.shut()
		w.mu.Unlock()
		return w
	}
	if len(w.rooms) == 0 && len(w.people) == 0 {
		h.all[w] = struct{}{}
	}
	for _, r := range w.rooms {
		addTo(h.rooms, r, w)
	}
	for _, id := range w.people {
		addTo(h.people, id, w)
	}
	h.mu.Unlock()

	stop := context.AfterFunc(ctx, w.Close)
	w.mu.Lock()
	w.stop = stop
	closed := w.closed
	w.mu.Unlock()
	if closed {
		stop()
	}
	return w
}

func addTo(m map[string]map[*Watcher]struct{}, k string, w *Watcher) {
	set := m[k]
	if set == nil {
		set = make(map[*Watcher]struct{})
		m[k] = set
	}
	set[w] = struct{}{}
}

func removeFrom(m map[string]map[*Watcher]struct{}, k string, w *Watcher) {
	delete(m[k], w)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

func (h *hub) remove(w *Watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.all, w)
	for _, r := range w.rooms {
		removeFrom(h.rooms, r, w)
	}
	for _, id := range w.people {
		removeFrom(h.people, id, w)
	}
}

// deliver is the Backend subscriber: it never blocks.
func (h *hub) deliver(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	id := e.Presence.Identity
	last, ok := h.seen[id]
	if ok && e.Presence.Version <= last.p.Version {
		return
	}
	h.seen[id] = seenEntry{p: e.Presence, at: e.At}
	if ok && sameView(last.p, e.Presence) {
		return
	}
	targets := make(map[*Watcher]struct{})
	for w := range h.all {
		targets[w] = struct{}{}
	}
	for _, r := range e.Rooms {
		for w := range h.rooms[r] {
			targets[w] = struct{}{}
		}
	}
	for w := range h.people[id] {
		targets[w] = struct{}{}
	}
	for w := range targets {
		w.send(e)
	}
}

// prune forgets people last seen offline more than offlineFor ago, and
// anyone not heard of for a day.
func (h *hub) prune(now time.Time, offlineFor time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, e := range h.seen {
		age := now.Sub(e.at)
		if e.p.State == Offline && age > offlineFor || age > 24*time.Hour {
			delete(h.seen, id)
		}
	}
}

// close closes every watcher; later watchers start closed.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	var ws []*Watcher
	for w := range h.all {
		ws = append(ws, w)
	}
	for _, set := range h.rooms {
		for w := range set {
			ws = append(ws, w)
		}
	}
	for _, set := range h.people {
		for w := range set {
			ws = append(ws, w)
		}
	}
	h.all = make(map[*Watcher]struct{})
	h.rooms = make(map[string]map[*Watcher]struct{})
	h.people = make(map[string]map[*Watcher]struct{})
	h.mu.Unlock()
	for _, w := range ws {
		w.Close()
	}
}
