package presence

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Memory is the in-process Backend, the default. Trackers that share one
// Memory see each other's people, as nodes sharing Redis do. Publish calls
// the subscribers before it returns.
type Memory struct {
	retain time.Duration

	mu     sync.Mutex
	people map[string]*memPerson
	// rooms maps a room to its sessions and their deadlines.
	rooms map[string]map[sessionKey]time.Time

	pubMu   sync.Mutex // held while delivering, so stop can wait
	subs    map[int]func(Event)
	nextSub int
}

type memPerson struct {
	status   Status
	lastSeen time.Time
	version  uint64
	sessions map[string]SessionInfo
}

type sessionKey struct{ identity, id string }

// NewMemory returns an empty in-process backend; WithRetain applies.
func NewMemory(opts ...Option) (*Memory, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	return &Memory{
		retain: o.retain,
		people: make(map[string]*memPerson),
		rooms:  make(map[string]map[sessionKey]time.Time),
		subs:   make(map[int]func(Event)),
	}, nil
}

func (m *Memory) person(identity string) *memPerson {
	p := m.people[identity]
	if p == nil {
		p = &memPerson{sessions: make(map[string]SessionInfo)}
		m.people[identity] = p
	}
	return p
}

// PutSession implements Backend.
func (m *Memory) PutSession(_ context.Context, s SessionInfo, _ time.Duration) error {
	s.Rooms = slices.Clone(s.Rooms)
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.person(s.Identity)
	k := sessionKey{s.Identity, s.ID}
	if old, ok := p.sessions[k.id]; ok {
		m.leaveRooms(k, old.Rooms)
	}
	p.sessions[k.id] = s
	for _, r := range s.Rooms {
		members := m.rooms[r]
		if members == nil {
			members = make(map[sessionKey]time.Time)
			m.rooms[r] = members
		}
		members[k] = s.Deadline
	}
	if s.LastSeen.After(p.lastSeen) {
		p.lastSeen = s.LastSeen
	}
	p.version++
	return nil
}

func (m *Memory) leaveRooms(k sessionKey, rooms []string) {
	for _, r := range rooms {
		delete(m.rooms[r], k)
		if len(m.rooms[r]) == 0 {
			delete(m.rooms, r)
		}
	}
}

// drop removes a session; the caller holds m.mu.
func (m *Memory) drop(p *memPerson, k sessionKey) (SessionInfo, bool) {
	s, ok := p.sessions[k.id]
	if !ok {
		return s, false
	}
	delete(p.sessions, k.id)
	m.leaveRooms(k, s.Rooms)
	p.version++
	return s, true
}

// RemoveSession implements Backend.
func (m *Memory) RemoveSession(_ context.Context, identity, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.people[identity]; p != nil {
		m.drop(p, sessionKey{identity, id})
	}
	return nil
}

// SetStatus implements Backend.
func (m *Memory) SetStatus(_ context.Context, identity string, st Status) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.person(identity)
	p.status = st
	p.version++
	return nil
}

// Load implements Backend.
func (m *Memory) Load(_ context.Context, identities ...string) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, len(identities))
	for i, id := range identities {
		out[i].Identity = id
		p := m.people[id]
		if p == nil {
			continue
		}
		out[i].Status, out[i].LastSeen, out[i].Version = p.status, p.lastSeen, p.version
		for _, s := range p.sessions {
			s.Rooms = slices.Clone(s.Rooms)
			out[i].Sessions = append(out[i].Sessions, s)
		}
		sort.Slice(out[i].Sessions, func(a, b int) bool { return out[i].Sessions[a].ID < out[i].Sessions[b].ID })
	}
	return out, nil
}

// RoomMembers implements Backend.
func (m *Memory) RoomMembers(_ context.Context, room string, now time.Time) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for k, deadline := range m.rooms[room] {
		if deadline.After(now) {
			ids = append(ids, k.identity)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Reap implements Backend. It also forgets people who have had no session
// for longer than the retention time.
func (m *Memory) Reap(_ context.Context, now time.Time) ([]SessionInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SessionInfo
	for identity, p := range m.people {
		for id, s := range p.sessions {
			if !now.Before(s.Deadline) {
				m.drop(p, sessionKey{identity, id})
				out = append(out, s)
			}
		}
		if len(p.sessions) == 0 && now.Sub(p.lastSeen) > m.retain {
			delete(m.people, identity)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if c := strings.Compare(out[a].Identity, out[b].Identity); c != 0 {
			return c < 0
		}
		return out[a].ID < out[b].ID
	})
	return out, nil
}

// Publish implements Backend.
func (m *Memory) Publish(_ context.Context, e Event) error {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	for _, deliver := range m.subs {
		deliver(e)
	}
	return nil
}

// Subscribe implements Backend.
func (m *Memory) Subscribe(ctx context.Context, deliver func(Event)) (func(), error) {
	m.pubMu.Lock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = deliver
	m.pubMu.Unlock()
	var once sync.Once
	remove := func() {
		once.Do(func() {
			m.pubMu.Lock()
			delete(m.subs, id)
			m.pubMu.Unlock()
		})
	}
	stopAfter := context.AfterFunc(ctx, remove)
	return func() {
		stopAfter()
		remove()
	}, nil
}
