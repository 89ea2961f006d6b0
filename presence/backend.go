package presence

import (
	"context"
	"fmt"
	"time"
)

// Backend stores sessions and statuses and carries events between the
// Trackers that share it. Memory is the in-process one; Redis shares one
// Redis server between nodes. Every method is safe for concurrent use.
// Every change (PutSession, RemoveSession, SetStatus, Reap) increments the
// person's version.
type Backend interface {
	// PutSession creates or replaces a session. ttl is the time from now
	// to s.Deadline; the backend keeps the session at least that long,
	// then until it is removed or reaped.
	PutSession(ctx context.Context, s SessionInfo, ttl time.Duration) error
	// RemoveSession deletes a session; removing a missing one is not an error.
	RemoveSession(ctx context.Context, identity, id string) error
	// SetStatus stores a person's explicit status.
	SetStatus(ctx context.Context, identity string, st Status) error
	// Load returns what is stored about each identity, in the same order;
	// an unknown identity gives a Record with only Identity set.
	Load(ctx context.Context, identities ...string) ([]Record, error)
	// RoomMembers returns, sorted, the identities that have a session in
	// room whose deadline is after now.
	RoomMembers(ctx context.Context, room string, now time.Time) ([]string, error)
	// Reap removes the sessions whose deadline is not after now and
	// returns them. Each session is returned by one call only, whichever
	// node makes it. A session whose record was already lost comes back
	// with only Identity and ID set.
	Reap(ctx context.Context, now time.Time) ([]SessionInfo, error)
	// Publish sends e to every subscriber of every Tracker sharing the
	// backend, this one included.
	Publish(ctx context.Context, e Event) error
	// Subscribe calls deliver with every event published from now on, in
	// order, from one goroutine at a time, until ctx ends or stop is
	// called; stop waits until deliver is no longer running. deliver must
	// not block nor call the backend.
	Subscribe(ctx context.Context, deliver func(Event)) (stop func(), err error)
}

// Option configures a backend.
type Option func(*options)

type options struct {
	prefix string
	retain time.Duration
}

const (
	defaultPrefix = "huddle:presence:"
	defaultRetain = 24 * time.Hour
	// keyGrace is how long Redis keeps a session after its deadline, so
	// that the node that reaps it can still read its rooms.
	keyGrace = 10 * time.Second
	// reapBatch bounds the sessions one Reap call removes.
	reapBatch = 1000
)

// WithPrefix sets the prefix of every Redis key and channel (default
// "huddle:presence:"). Memory ignores it.
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithRetain sets how long a person's explicit status, text and last-seen
// time are kept after their last session ends (default 24 h, at least 1
// minute).
func WithRetain(d time.Duration) Option { return func(o *options) { o.retain = d } }

func buildOptions(opts []Option) (options, error) {
	o := options{prefix: defaultPrefix, retain: defaultRetain}
	for _, f := range opts {
		f(&o)
	}
	if o.retain < time.Minute {
		return o, fmt.Errorf("%w: retention %v is shorter than a minute", ErrInvalid, o.retain)
	}
	return o, nil
}
