package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Config configures a Tracker. The zero value is usable.
type Config struct {
	// Backend stores sessions and carries events; nil means a new Memory.
	Backend Backend
	// AwayAfter is how long a session may go without a heartbeat before it
	// counts as idle (default 45 s).
	AwayAfter time.Duration
	// OfflineAfter is how long a session may go without a heartbeat before
	// it is gone (default 2 minutes). It must exceed AwayAfter.
	OfflineAfter time.Duration
	// SweepEvery is the period of the timeout sweep (default 1 s).
	SweepEvery time.Duration
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
	// Logger reports sweep failures (default slog.Default()).
	Logger *slog.Logger
}

// Tracker keeps the presence of this node's sessions in a Backend, applies
// timeouts, answers queries about anyone, and hands events to watchers.
type Tracker struct {
	cfg     Config
	backend Backend
	hub     *hub

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopSub func()

	sweepMu sync.Mutex // one sweep at a time

	mu       sync.Mutex
	closed   bool
	sessions map[sessionKey]*Session
}

// New starts a Tracker. It runs until ctx ends or Close is called. Stopping
// does not remove this node's sessions: close them first for a clean
// shutdown; otherwise they go offline everywhere at their deadline, as a
// crashed node's do.
func New(ctx context.Context, cfg Config) (*Tracker, error) {
	if cfg.Backend == nil {
		m, err := NewMemory()
		if err != nil {
			return nil, err
		}
		cfg.Backend = m
	}
	if cfg.AwayAfter == 0 {
		cfg.AwayAfter = 45 * time.Second
	}
	if cfg.OfflineAfter == 0 {
		cfg.OfflineAfter = 2 * time.Minute
	}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AwayAfter < 0 || cfg.OfflineAfter <= cfg.AwayAfter || cfg.SweepEvery < 0 {
		return nil, fmt.Errorf("%w: timeouts away=%v offline=%v sweep=%v (want 0 < away < offline, sweep > 0)",
			ErrInvalid, cfg.AwayAfter, cfg.OfflineAfter, cfg.SweepEvery)
	}
	ctx, cancel := context.WithCancel(ctx)
	t := &Tracker{
		cfg:      cfg,
		backend:  cfg.Backend,
		hub:      newHub(),
		ctx:      ctx,
		cancel:   cancel,
		sessions: make(map[sessionKey]*Session),
	}
	stop, err := t.backend.Subscribe(ctx, t.hub.deliver)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("presence: start tracker: %w", err)
	}
	t.stopSub = stop
	t.wg.Add(1)
	go t.run()
	return t, nil
}

// Close stops the sweep, the subscription and every watcher, and waits for
// them. Sessions left open stay in the backend until their deadline.
func (t *Tracker) Close() error {
	t.cancel()
	t.wg.Wait()
	return nil
}

func (t *Tracker) run() {
	defer t.wg.Done()
	defer t.shutdown()
	tick := time.NewTicker(t.cfg.SweepEvery)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		err := t.sweep(t.ctx)
		switch {
		case err != nil && t.ctx.Err() == nil && !failing:
			failing = true
			t.cfg.Logger.Warn("presence sweep failed; retrying every period", "err", err)
		case err == nil && failing:
			failing = false
			t.cfg.Logger.Info("presence sweep works again")
		}
	}
}

func (t *Tracker) shutdown() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.stopSub()
	t.hub.close()
}

// now is the clock, to the millisecond as Redis stores it.
func (t *Tracker) now() time.Time { return t.cfg.Now().Truncate(time.Millisecond) }

func (t *Tracker) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Watch returns a watcher of the events that match f, until ctx ends or the
// watcher is closed. It sees changes made after it was created.
func (t *Tracker) Watch(ctx context.Context, f Filter) *Watcher {
	return t.hub.watch(ctx, f)
}

// Get returns the presence of identity; someone never seen is offline.
func (t *Tracker) Get(ctx context.Context, identity string) (Presence, error) {
	if err := checkName("identity", identity); err != nil {
		return Presence{}, err
	}
	if t.isClosed() {
		return Presence{}, ErrClosed
	}
	recs, err := t.backend.Load(ctx, identity)
	if err != nil {
		return Presence{}, fmt.Errorf("presence: get %q: %w", identity, err)
	}
	return merge(recs[0], t.now(), t.cfg.AwayAfter), nil
}

// Room returns the presence of everyone in room, sorted by identity.
func (t *Tracker) Room(ctx context.Context, room string) ([]Presence, error) {
	if err := checkName("room", room); err != nil {
		return nil, err
	}
	if t.isClosed() {
		return nil, ErrClosed
	}
	now := t.now()
	ids, err := t.backend.RoomMembers(ctx, room, now)
	if err != nil {
		return nil, fmt.Errorf("presence: room %q: %w", room, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	recs, err := t.backend.Load(ctx, ids...)
	if err != nil {
		return nil, fmt.Errorf("presence: room %q: %w", room, err)
	}
	out := make([]Presence, 0, len(recs))
	for _, r := range recs {
		if p := merge(r, now, t.cfg.AwayAfter); slices.Contains(p.Rooms, room) {
			out = append(out, p)
		}
	}
	return out, nil
}

// publish announces identity's presence to its rooms and to extra rooms.
func (t *Tracker) publish(ctx context.Context, identity string, now time.Time, extra []string) error {
	recs, err := t.backend.Load(ctx, identity)
	if err != nil {
		return fmt.Errorf("presence: publish %q: %w", identity, err)
	}
	p := merge(recs[0], now, t.cfg.AwayAfter)
	if err := t.backend.Publish(ctx, Event{Presence: p, Rooms: union(p.Rooms, extra), At: now}); err != nil {
		return fmt.Errorf("presence: publish %q: %w", identity, err)
	}
	return nil
}

// sweep reaps the sessions past their deadline (on any node), turns this
// node's stale sessions idle, and publishes what changed.
func (t *Tracker) sweep(ctx context.Context) error {
	t.sweepMu.Lock()
	defer t.sweepMu.Unlock()
	now := t.now()
	reaped, err := t.backend.Reap(ctx, now)
	if err != nil {
		return fmt.Errorf("presence: sweep: %w", err)
	}
	touched := make(map[string][]string)
	for _, s := range reaped {
		touched[s.Identity] = append(touched[s.Identity], s.Rooms...)
	}

	t.mu.Lock()
	local := make([]*Session, 0, len(t.sessions))
	for _, s := range t.sessions {
		local = append(local, s)
	}
	t.mu.Unlock()
	var errs []error
	for _, s := range local {
		if err := s.sweep(ctx, now, touched); err != nil {
			errs = append(errs, err)
		}
	}
	for identity, extra := range touched {
		if err := t.publish(ctx, identity, now, extra); err != nil {
			errs = append(errs, err)
		}
	}
	t.hub.prune(now, t.cfg.OfflineAfter)
	return errors.Join(errs...)
}

// Session is one connection of a person, opened on this Tracker. Its
// methods are safe for concurrent use.
type Session struct {
	t        *Tracker
	id       string
	identity string

	mu     sync.Mutex
	info   SessionInfo
	live   bool     // stored in the backend: not closed, not reaped
	last   liveness // as last published
	closed bool
}

// Open starts a session id of identity in rooms and announces it. id must be
// unique among this Tracker's open sessions of identity.
func (t *Tracker) Open(ctx context.Context, identity, id string, rooms ...string) (*Session, error) {
	if err := checkName("identity", identity); err != nil {
		return nil, err
	}
	if err := checkName("session id", id); err != nil {
		return nil, err
	}
	rooms = union(rooms, nil)
	if len(rooms) > MaxRooms {
		return nil, fmt.Errorf("%w: %d rooms (at most %d)", ErrInvalid, len(rooms), MaxRooms)
	}
	for _, r := range rooms {
		if err := checkName("room", r); err != nil {
			return nil, err
		}
	}
	k := sessionKey{identity, id}
	s := &Session{t: t, id: id, identity: identity, info: SessionInfo{ID: id, Identity: identity, Rooms: rooms}}
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return nil, ErrClosed
	case t.sessions[k] != nil:
		t.mu.Unlock()
		return nil, fmt.Errorf("%w: session %q of %q is already open", ErrInvalid, id, identity)
	}
	t.sessions[k] = s
	t.mu.Unlock()

	if err := s.apply(ctx, nil, nil); err != nil {
		_ = s.Close(ctx)
		return nil, err
	}
	return s, nil
}

// ID returns the session's id.
func (s *Session) ID() string { return s.id }

// Identity returns the identity the session belongs to.
func (s *Session) Identity() string { return s.identity }

// Heartbeat tells that the client is still there; it does not change the
// session's activity, so an idle session stays idle.
func (s *Session) Heartbeat(ctx context.Context) error { return s.apply(ctx, nil, nil) }

// SetActivity records what the session is doing; Idle makes it count as
// away until another activity is reported. It counts as a heartbeat.
func (s *Session) SetActivity(ctx context.Context, a Activity) error {
	if err := checkActivity(a); err != nil {
		return err
	}
	return s.apply(ctx, func(info *SessionInfo) error {
		info.Activity = a
		return nil
	}, nil)
}

// SetStatus sets the person's explicit status and text, for all their
// sessions. It counts as a heartbeat.
func (s *Session) SetStatus(ctx context.Context, st Status) error {
	st, err := normalStatus(st)
	if err != nil {
		return err
	}
	return s.apply(ctx, nil, &st)
}

// Join adds room to the session's rooms. It counts as a heartbeat.
func (s *Session) Join(ctx context.Context, room string) error {
	if err := checkName("room", room); err != nil {
		return err
	}
	return s.apply(ctx, func(info *SessionInfo) error {
		if !slices.Contains(info.Rooms, room) && len(info.Rooms) >= MaxRooms {
			return fmt.Errorf("%w: session %q of %q is already in %d rooms", ErrInvalid, info.ID, info.Identity, MaxRooms)
		}
		info.Rooms = union(info.Rooms, []string{room})
		return nil
	}, nil)
}

// Leave removes room from the session's rooms. It counts as a heartbeat.
func (s *Session) Leave(ctx context.Context, room string) error {
	return s.apply(ctx, func(info *SessionInfo) error {
		info.Rooms = slices.DeleteFunc(info.Rooms, func(r string) bool { return r == room })
		return nil
	}, nil)
}

// apply runs edit on a copy of the session, stores it as a heartbeat (and
// status, if not nil) and publishes the person's presence if anything a
// watcher sees may have changed.
func (s *Session) apply(ctx context.Context, edit func(*SessionInfo) error, status *Status) error {
	t := s.t
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || t.isClosed() {
		return ErrClosed
	}
	now := t.now()
	// A session past its deadline may have been reaped, here or elsewhere,
	// and announced offline: storing it again is news.
	revived := !s.live || !now.Before(s.info.Deadline)
	next := s.info
	next.Rooms = slices.Clone(s.info.Rooms)
	if edit != nil {
		if err := edit(&next); err != nil {
			return err
		}
	}
	next.LastSeen, next.Deadline = now, now.Add(t.cfg.OfflineAfter)
	if status != nil {
		if err := t.backend.SetStatus(ctx, next.Identity, *status); err != nil {
			return fmt.Errorf("presence: session %q of %q: %w", next.ID, next.Identity, err)
		}
	}
	if err := t.backend.PutSession(ctx, next, t.cfg.OfflineAfter); err != nil {
		return fmt.Errorf("presence: session %q of %q: %w", next.ID, next.Identity, err)
	}
	left := slices.DeleteFunc(slices.Clone(s.info.Rooms), func(r string) bool { return slices.Contains(next.Rooms, r) })
	changed := status != nil || !slices.Equal(s.info.Rooms, next.Rooms) || s.info.Activity != next.Activity
	s.info, s.live = next, true
	after := sessionLiveness(next, now, t.cfg.AwayAfter)
	if after == s.last && !changed && !revived {
		return nil
	}
	s.last = after
	return t.publish(ctx, next.Identity, now, left)
}

// sweep applies timeouts to this session at now and notes in touched the
// person to publish, if any.
func (s *Session) sweep(ctx context.Context, now time.Time, touched map[string][]string) error {
	t := s.t
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.live {
		return nil
	}
	l := sessionLiveness(s.info, now, t.cfg.AwayAfter)
	switch {
	case l == gone:
		// Reaped by this sweep or by another node's, which publishes.
		s.live, s.last = false, gone
	case l != s.last:
		// Store it again so the person's version moves past the last event.
		if err := t.backend.PutSession(ctx, s.info, s.info.Deadline.Sub(now)); err != nil {
			return fmt.Errorf("presence: sweep session %q of %q: %w", s.info.ID, s.info.Identity, err)
		}
		s.last = l
		touched[s.info.Identity] = append(touched[s.info.Identity], s.info.Rooms...)
	}
	return nil
}

// Close ends the session and announces it; it is idempotent. It works even
// after the Tracker stopped, so that a shutdown can clean up.
func (s *Session) Close(ctx context.Context) error {
	t := s.t
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	t.mu.Lock()
	if t.sessions[sessionKey{s.info.Identity, s.info.ID}] == s {
		delete(t.sessions, sessionKey{s.info.Identity, s.info.ID})
	}
	t.mu.Unlock()
	if err := t.backend.RemoveSession(ctx, s.info.Identity, s.info.ID); err != nil {
		return fmt.Errorf("presence: close session %q of %q: %w", s.info.ID, s.info.Identity, err)
	}
	s.live = false
	return t.publish(ctx, s.info.Identity, t.now(), s.info.Rooms)
}
