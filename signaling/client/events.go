package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/gorilla/websocket"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// TypeClientError is the Event type of a failure inside the client that
// no call returns, such as a subscribe offer it could not answer. Its
// Message is an error.
const TypeClientError = "client_error"

// Event is one room event. Message holds, by Type:
//
//	participant_joined, participant_updated  *protocol.ParticipantEvent
//	participant_left                         *protocol.ParticipantLeft
//	track_published                          *protocol.TrackPublished
//	track_unpublished                        *protocol.TrackUnpublished
//	track_muted                              *protocol.TrackMuted
//	quality                                  *protocol.Quality
//	layers                                   *protocol.Layers
//	error                                    *protocol.Error (one no call was waiting for)
//	bye                                      *protocol.Bye
//	presence                                 *protocol.PresenceUpdate (pushed changes)
//	client_error                             error
type Event struct {
	Type    string
	Message any
}

// emit queues ev without blocking; see Events.
func (c *Client) emit(ev Event) {
	select {
	case c.events <- ev:
	default:
		c.dropped.Add(1)
	}
}

// readLoop reads and dispatches every message until the socket ends.
func (c *Client) readLoop() {
	var err error
	for {
		var raw []byte
		_, raw, err = c.conn.ReadMessage()
		if err != nil {
			break
		}
		c.dispatch(raw)
	}
	if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) || errors.Is(err, io.EOF) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	c.mu.Lock()
	c.readErr = err
	pending := c.pending
	c.pending = make(map[string]chan reply)
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- reply{err: err}
	}
	close(c.readDone)
	close(c.events)
}

// dispatch handles one message from the server.
func (c *Client) dispatch(raw []byte) {
	env, err := protocol.Decode(raw)
	if err != nil {
		c.log.Warn("client: undecodable message", "err", err)
		return
	}
	switch env.Type {
	case protocol.TypeJoined:
		var m protocol.Joined
		if c.decode(raw, &m) {
			c.onJoined(&m)
		}
	case protocol.TypeOffer:
		var m protocol.SessionDescription
		if c.decode(raw, &m) {
			if m.Transport != protocol.TransportSubscribe {
				c.log.Warn("client: offer on unexpected transport", "transport", m.Transport)
				return
			}
			if err := c.onSubscribeOffer(&m); err != nil {
				c.emit(Event{Type: TypeClientError, Message: err})
			}
		}
	case protocol.TypeAnswer:
		var m protocol.SessionDescription
		if c.decode(raw, &m) {
			c.onPublishAnswer(&m)
		}
	case protocol.TypeCandidate:
		var m protocol.Candidate
		if c.decode(raw, &m) {
			if err := c.onCandidate(&m); err != nil {
				c.emit(Event{Type: TypeClientError, Message: err})
			}
		}
	case protocol.TypePong:
		var m protocol.Ping
		if c.decode(raw, &m) {
			c.resolve(m.ID, reply{pong: &m})
		}
	case protocol.TypeError:
		m := &protocol.Error{}
		if !c.decode(raw, m) || c.resolve(m.ID, reply{err: m}) {
			return
		}
		// A refusal that lost its id still ends a join in progress.
		if m.ID == "" && (m.Ref == "" || m.Ref == protocol.TypeJoin) && c.resolve(c.joinID(), reply{err: m}) {
			return
		}
		c.emit(Event{Type: env.Type, Message: m})
	case protocol.TypeRedirect:
		m := &protocol.Redirect{}
		if !c.decode(raw, m) {
			return
		}
		if id := c.joinID(); id != "" && c.resolve(id, reply{err: &RedirectError{*m}}) {
			return
		}
		// A joined session moves: it ends like a bye, with the redirect.
		c.mu.Lock()
		c.moved = m
		c.mu.Unlock()
		c.emit(Event{Type: env.Type, Message: m})
		c.byeOnce.Do(func() { close(c.byeSeen) })
	case protocol.TypeBye:
		m := &protocol.Bye{}
		if c.decode(raw, m) {
			c.emit(Event{Type: env.Type, Message: m})
			c.byeOnce.Do(func() { close(c.byeSeen) })
		}
	case protocol.TypeParticipantJoined, protocol.TypeParticipantUpdated:
		m := &protocol.ParticipantEvent{}
		if c.decode(raw, m) {
			c.emit(Event{Type: env.Type, Message: m})
		}
	case protocol.TypeParticipantLeft:
		m := &protocol.ParticipantLeft{}
		if c.decode(raw, m) {
			c.emit(Event{Type: env.Type, Message: m})
		}
	case protocol.TypeTrackPublished:
		m := &protocol.TrackPublished{}
		if c.decode(raw, m) {
			c.mu.Lock()
			c.tracks[m.Track.SID] = m.Track
			c.mu.Unlock()
			c.emit(Event{Type: env.Type, Message: m})
		}
	case protocol.TypeTrackUnpublished:
		m := &protocol.TrackUnpublished{}
		if c.decode(raw, m) {
			c.mu.Lock()
			delete(c.tracks, m.Track)
			c.mu.Unlock()
			c.emit(Event{Type: env.Type, Message: m})
		}
	case protocol.TypeTrackMuted:
		m := &protocol.TrackMuted{}
		if c.decode(raw, m) {
			c.mu.Lock()
			if t, ok := c.tracks[m.Track]; ok {
				t.Muted = m.Muted
				c.tracks[m.Track] = t
			}
			c.mu.Unlock()
			c.emit(Event{Type: env.Type, Message: m})
		}
	case protocol.TypePresence:
		m := &protocol.PresenceUpdate{}
		if c.decode(raw, m) && !c.resolve(m.ID, reply{presence: m}) {
			c.emit(Event{Type: env.Type, Message: m})
		}
	case protocol.TypeLayers:
		m := &protocol.Layers{}
		if c.decode(raw, m) {
			if c.opts.OnLayers != nil {
				c.opts.OnLayers(m)
			}
			c.emit(Event{Type: env.Type, Message: m})
		}
	case protocol.TypeQuality:
		m := &protocol.Quality{}
		if c.decode(raw, m) {
			if c.opts.OnQuality != nil {
				c.opts.OnQuality(m)
			}
			c.emit(Event{Type: env.Type, Message: m})
		}
	default:
		c.log.Debug("client: ignoring message", "type", env.Type)
	}
}

// joinID returns the id of the join in progress, or "" once joined.
func (c *Client) joinID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joined.You.SID != "" {
		return ""
	}
	return c.joiningID
}

func (c *Client) decode(raw []byte, v any) bool {
	if err := json.Unmarshal(raw, v); err != nil {
		c.log.Warn("client: bad message from server", "err", err)
		return false
	}
	return true
}

// onJoined records the session and opens the subscribe transport before
// the join call returns, so the first offer (which follows joined) finds
// it.
func (c *Client) onJoined(m *protocol.Joined) {
	c.mu.Lock()
	c.joined = *m
	for _, t := range m.Tracks {
		c.tracks[t.SID] = t
	}
	c.mu.Unlock()
	if err := c.openSubscribe(); err != nil {
		c.resolve(m.ID, reply{err: err})
		return
	}
	c.resolve(m.ID, reply{joined: m})
}
