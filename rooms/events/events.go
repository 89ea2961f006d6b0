// Package events is the server's event bus: room, participant, track,
// presence, quality and stats events, each with an id, kept in a bounded
// ring buffer so that a reader that lost its connection can replay what it
// missed (GET /events serves it as Server-Sent Events).
package events

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"
)

// Event types. A filter on a category (the part before the first "_",
// e.g. "participant") selects every type of it.
const (
	RoomStarted        = "room_started"
	RoomClosed         = "room_closed"
	ParticipantJoined  = "participant_joined"
	ParticipantLeft    = "participant_left"
	ParticipantUpdated = "participant_updated"
	TrackPublished     = "track_published"
	TrackUnpublished   = "track_unpublished"
	TrackMuted         = "track_muted"
	Presence           = "presence"
	Quality            = "quality"
	Stats              = "stats"
)

// DefaultCapacity is the ring buffer's size when New is given 0.
const DefaultCapacity = 4096

// Event is one thing that happened. Data is the type's JSON payload.
type Event struct {
	// ID grows by one with every event. The first id of a bus is the
	// microsecond clock at its creation, so ids of an earlier run of the
	// server are older than anything a new bus holds.
	ID   uint64 `json:"id"`
	Type string `json:"type"`
	// Room is the room the event is about ("" for server-wide events).
	Room string `json:"room,omitempty"`
	// Rooms lists every room concerned when there are several (a
	// person's presence).
	Rooms []string        `json:"rooms,omitempty"`
	Time  int64           `json:"time"` // Unix milliseconds
	Data  json.RawMessage `json:"data,omitempty"`
}

// Filter selects events; the zero Filter selects all.
type Filter struct {
	// Rooms: events about any of these rooms (Room or Rooms).
	Rooms []string
	// Types: events of these types or categories.
	Types []string
}

// Match reports whether f selects e.
func (f Filter) Match(e *Event) bool {
	if len(f.Rooms) > 0 && !slices.Contains(f.Rooms, e.Room) &&
		!slices.ContainsFunc(e.Rooms, func(r string) bool { return slices.Contains(f.Rooms, r) }) {
		return false
	}
	if len(f.Types) > 0 {
		cat, _, _ := strings.Cut(e.Type, "_")
		if !slices.Contains(f.Types, e.Type) && !slices.Contains(f.Types, cat) {
			return false
		}
	}
	return true
}

// Bus fans events out to subscribers and keeps the last ones. Its methods
// are safe for concurrent use; Publish never blocks.
type Bus struct {
	now func() time.Time

	mu     sync.Mutex
	ring   []Event
	head   int    // index of the oldest event
	n      int    // events held
	last   uint64 // id of the newest event
	subs   map[*Sub]struct{}
	closed bool
}

// New returns a bus that keeps the last capacity events (0 means
// DefaultCapacity).
func New(capacity int) *Bus {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	now := time.Now
	return &Bus{
		now:  now,
		ring: make([]Event, capacity),
		last: uint64(now().UnixMicro()),
		subs: make(map[*Sub]struct{}),
	}
}

// Publish records an event of typ about room (and rooms) with data encoded
// as JSON, hands it to the subscribers and returns it. Data that does not
// encode is replaced by null.
func (b *Bus) Publish(typ, room string, rooms []string, data any) Event {
	raw, err := json.Marshal(data)
	if err != nil {
		raw = json.RawMessage("null")
	}
	e := Event{Type: typ, Room: room, Rooms: slices.Clone(rooms), Time: b.now().UnixMilli(), Data: raw}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return e
	}
	b.last++
	e.ID = b.last
	b.ring[(b.head+b.n)%len(b.ring)] = e
	if b.n < len(b.ring) {
		b.n++
	} else {
		b.head = (b.head + 1) % len(b.ring)
	}
	for s := range b.subs {
		if s.filter.Match(&e) {
			s.offer(e)
		}
	}
	return e
}

// Last returns the id of the newest event.
func (b *Bus) Last() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// Replay is what a subscriber missed since the id it gave.
type Replay struct {
	Events []Event
	// Gap is true when events after the given id are no longer held (or
	// the id is unknown to this bus): some may be missing. Oldest is then
	// the id of the oldest event held (0 if none).
	Gap    bool
	Oldest uint64
}

// Sub is a subscription. Events arrive on C in order. A subscriber that
// falls more than its buffer behind is dropped: C is closed and Lagged
// reports true; it may subscribe again after the last id it got.
type Sub struct {
	C      <-chan Event
	ch     chan Event
	b      *Bus
	filter Filter
	lagged bool // under b.mu
	done   bool // under b.mu
}

// offer queues e; the caller holds b.mu.
func (s *Sub) offer(e Event) {
	select {
	case s.ch <- e:
	default:
		s.lagged = true
		s.endLocked()
	}
}

func (s *Sub) endLocked() {
	if !s.done {
		s.done = true
		delete(s.b.subs, s)
		close(s.ch)
	}
}

// Lagged reports whether the subscription was dropped for being slow.
func (s *Sub) Lagged() bool {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.lagged
}

// Close ends the subscription; it is idempotent.
func (s *Sub) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.endLocked()
}

// Subscribe returns the events matching f after id after (when replay is
// true; otherwise none) and a subscription to the later ones, atomically:
// nothing falls between the two. buffer is the subscription's queue
// (at least 1).
func (b *Bus) Subscribe(f Filter, replay bool, after uint64, buffer int) (Replay, *Sub) {
	if buffer < 1 {
		buffer = 1
	}
	ch := make(chan Event, buffer)
	s := &Sub{C: ch, ch: ch, b: b, filter: f}
	b.mu.Lock()
	defer b.mu.Unlock()
	var r Replay
	if replay {
		r = b.since(f, after)
	}
	if b.closed {
		s.done = true
		close(ch)
		return r, s
	}
	b.subs[s] = struct{}{}
	return r, s
}

// since returns the held events matching f after id; the caller holds b.mu.
func (b *Bus) since(f Filter, after uint64) Replay {
	var r Replay
	if b.n > 0 {
		r.Oldest = b.ring[b.head].ID
	}
	switch {
	case after > b.last:
		// An id of another bus (a restarted server) or made up.
		r.Gap = true
	case after == b.last:
		return r
	case b.n == 0 || after+1 < r.Oldest:
		r.Gap = true
	}
	for i := 0; i < b.n; i++ {
		e := &b.ring[(b.head+i)%len(b.ring)]
		if (r.Gap || e.ID > after) && f.Match(e) {
			r.Events = append(r.Events, *e)
		}
	}
	return r
}

// Close ends every subscription; later Publish calls are dropped.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		s.endLocked()
	}
}
