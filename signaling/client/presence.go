package client

import (
	"context"
	"fmt"
	"time"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// heartbeatLoop sends a heartbeat every interval until the connection ends.
func (c *Client) heartbeatLoop(every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-c.readDone:
			return
		case <-tick.C:
			if err := c.Heartbeat(); err != nil {
				c.log.Debug("client: heartbeat", "err", err)
			}
		}
	}
}

// Heartbeat tells the server this session is still there. The client
// sends one every Options.HeartbeatInterval by itself.
func (c *Client) Heartbeat() error {
	return c.send(protocol.Envelope{Type: protocol.TypeHeartbeat})
}

// SetActivity reports what this session is doing (protocol.ActivityInCall,
// ActivityEditing, ActivityScreenSharing, ActivityIdle, …). Refusals arrive
// as error events.
func (c *Client) SetActivity(activity string) error {
	return c.send(protocol.Activity{Envelope: c.envelope(protocol.TypeActivity), Activity: activity})
}

// SetStatus sets the person's explicit status (busy, away, or "" / online)
// and status text, for all their sessions.
func (c *Client) SetStatus(state, text string) error {
	return c.send(protocol.Status{Envelope: c.envelope(protocol.TypeStatus), State: state, Text: text})
}

// QueryPresence returns the presence of identities, or of everyone in the
// client's room when none are given.
func (c *Client) QueryPresence(ctx context.Context, identities ...string) ([]protocol.Person, error) {
	id := c.newID()
	r, err := c.roundTrip(ctx, id, protocol.PresenceQuery{Envelope: protocol.Envelope{Type: protocol.TypePresence, ID: id}, Identities: identities}, nil)
	if err != nil {
		return nil, fmt.Errorf("client: presence: %w", err)
	}
	if r.presence == nil {
		return nil, fmt.Errorf("client: presence: no reply")
	}
	return r.presence.People, nil
}
