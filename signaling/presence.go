package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/huddle-rtc/huddle/presence"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// presenceTimeout bounds one presence call to the backend.
const presenceTimeout = 5 * time.Second

// connPresence is one connection's presence session and the watcher that
// pushes the presence of its room's people and of its own identity.
type connPresence struct {
	session *presence.Session
	cancel  context.CancelFunc
	done    chan struct{}
}

// personOf converts a presence for the wire.
func personOf(p presence.Presence) protocol.Person {
	out := protocol.Person{
		Identity: p.Identity, State: string(p.State), Text: p.Text, Activity: string(p.Activity),
		Rooms: p.Rooms, Sessions: p.Sessions, Version: p.Version,
	}
	if !p.LastSeen.IsZero() {
		out.LastSeen = p.LastSeen.UnixMilli()
	}
	return out
}

func isPresenceType(t string) bool {
	switch t {
	case protocol.TypeHeartbeat, protocol.TypeActivity, protocol.TypeStatus, protocol.TypePresence:
		return true
	}
	return false
}

// openPresence starts the connection's presence session in room and the
// watcher of the room's people and of identity's other sessions; it pushes
// the room's current presence first. A failure is logged: the call goes on
// without presence.
func (c *conn) openPresence(identity, room, sid string) {
	t := c.srv.presence
	ctx, cancel := context.WithCancel(context.Background())
	w := t.Watch(ctx, presence.Filter{Rooms: []string{room}, Identities: []string{identity}, Buffer: 256})
	octx, ocancel := context.WithTimeout(ctx, presenceTimeout)
	s, err := t.Open(octx, identity, sid, room)
	ocancel()
	if err != nil {
		cancel()
		c.log.Warn("presence: open session", "err", err)
		return
	}
	cp := &connPresence{session: s, cancel: cancel, done: make(chan struct{})}
	c.pres = cp
	qctx, qcancel := context.WithTimeout(ctx, presenceTimeout)
	people, err := t.Room(qctx, room)
	qcancel()
	if err == nil && len(people) > 0 {
		c.Send(peopleMessage("", people))
	}
	go func() {
		defer close(cp.done)
		for e := range w.Events() {
			c.Send(peopleMessage("", []presence.Presence{e.Presence}))
		}
	}()
}

func peopleMessage(id string, people []presence.Presence) *protocol.PresenceUpdate {
	m := &protocol.PresenceUpdate{Envelope: protocol.Envelope{Type: protocol.TypePresence, ID: id}, People: make([]protocol.Person, 0, len(people))}
	for _, p := range people {
		m.People = append(m.People, personOf(p))
	}
	return m
}

// closePresence ends the session (the person goes offline unless another
// session is left) and the watcher, and waits for it.
func (c *conn) closePresence() {
	cp := c.pres
	if cp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), presenceTimeout)
	if err := cp.session.Close(ctx); err != nil {
		c.log.Debug("presence: close session", "err", err)
	}
	cancel()
	cp.cancel()
	<-cp.done
}

// presenceMessage handles heartbeat, activity, status and presence queries.
func (c *conn) presenceMessage(env protocol.Envelope, raw []byte) {
	decode := func(v any) bool {
		if err := json.Unmarshal(raw, v); err != nil {
			c.sendError(env.ID, env.Type, protocol.CodeBadMessage, "bad %s message: %v", env.Type, err)
			return false
		}
		return true
	}
	if c.pres == nil && env.Type == protocol.TypeHeartbeat {
		return // presence failed at join (logged then); nothing to keep alive
	}
	if c.pres == nil && env.Type != protocol.TypePresence {
		c.sendError(env.ID, env.Type, protocol.CodeInternal, "presence is not available for this session")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), presenceTimeout)
	defer cancel()
	var err error
	switch env.Type {
	case protocol.TypeHeartbeat:
		err = c.pres.session.Heartbeat(ctx)
	case protocol.TypeActivity:
		var m protocol.Activity
		if !decode(&m) {
			return
		}
		err = c.pres.session.SetActivity(ctx, presence.Activity(m.Activity))
	case protocol.TypeStatus:
		var m protocol.Status
		if !decode(&m) {
			return
		}
		err = c.pres.session.SetStatus(ctx, presence.Status{State: presence.State(m.State), Text: m.Text})
	case protocol.TypePresence:
		var m protocol.PresenceQuery
		if !decode(&m) {
			return
		}
		var people []presence.Presence
		if people, err = c.queryPresence(ctx, &m); err == nil {
			c.Send(peopleMessage(env.ID, people))
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, presence.ErrInvalid):
		c.sendError(env.ID, env.Type, protocol.CodeBadMessage, "%v", err)
	default:
		c.replyError(env.ID, env.Type, err)
	}
}

// queryPresence answers a presence query: the identities named, or the
// people of a room (one's own by default).
func (c *conn) queryPresence(ctx context.Context, m *protocol.PresenceQuery) ([]presence.Presence, error) {
	t := c.srv.presence
	if len(m.Identities) > protocol.MaxPresenceQuery {
		return nil, &protocol.Error{Code: protocol.CodeBadMessage, Message: "at most 100 identities per presence query"}
	}
	if len(m.Identities) == 0 {
		room := m.Room
		if room == "" {
			room = c.p.Room()
		}
		return t.Room(ctx, room)
	}
	out := make([]presence.Presence, 0, len(m.Identities))
	for _, id := range m.Identities {
		p, err := t.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
