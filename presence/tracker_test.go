package presence

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// backendFactory returns the backend of a node; the nodes of one test share
// their store.
type backendFactory func(t *testing.T, node string) Backend

// eachBackend runs test on one shared Memory, then on one real Redis.
func eachBackend(t *testing.T, test func(t *testing.T, backend backendFactory)) {
	t.Run("memory", func(t *testing.T) {
		mem, err := NewMemory()
		must(t, err)
		test(t, func(*testing.T, string) Backend { return mem })
	})
	t.Run("redis", func(t *testing.T) {
		addr := startRedis(t)
		test(t, func(t *testing.T, node string) Backend { return newRedisBackend(t, addr, node) })
	})
}

// newTracker starts a tracker on b with the default
// timeouts and clk; the background sweep is too slow to matter, so tests
// call sweep themselves.
func newTracker(t *testing.T, ctx context.Context, b Backend, clk *clock) *Tracker {
	t.Helper()
	tr, err := New(ctx, Config{Backend: b, Now: clk.Now, SweepEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func sweep(t *testing.T, tr *Tracker) {
	t.Helper()
	if err := tr.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, tr *Tracker, identity, id string, rooms ...string) *Session {
	t.Helper()
	s, err := tr.Open(context.Background(), identity, id, rooms...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(t *testing.T, tr *Tracker, identity string) Presence {
	t.Helper()
	p, err := tr.Get(context.Background(), identity)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// next returns the next event of w. Memory delivers before the change
// returns; Redis a moment later.
func next(t *testing.T, w *Watcher) Event {
	t.Helper()
	select {
	case e, ok := <-w.Events():
		if !ok {
			t.Fatal("watcher closed")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
		return Event{}
	}
}

// none fails if w holds an event. With Redis, a wrong event may still be
// on its way; the next call to next then sees it.
func none(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case e := <-w.Events():
		t.Fatalf("unexpected event %+v", e)
	default:
	}
}

func wantState(t *testing.T, p Presence, identity string, s State, a Activity) {
	t.Helper()
	if p.Identity != identity || p.State != s || p.Activity != a {
		t.Fatalf("got %s %s/%q, want %s %s/%q (%+v)", p.Identity, p.State, p.Activity, identity, s, a, p)
	}
}

func TestTimeoutsAndHeartbeat(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		tr := newTracker(t, ctx, backend(t, "node-a"), clk)
		w := tr.Watch(ctx, Filter{Rooms: []string{"standup"}})

		start := clk.Now()
		s := open(t, tr, "alice", "tab", "standup")
		e := next(t, w)
		wantState(t, e.Presence, "alice", Online, "")
		if !slices.Equal(e.Rooms, []string{"standup"}) || e.Presence.Sessions != 1 || !e.Presence.LastSeen.Equal(start) {
			t.Fatalf("first event %+v", e)
		}

		clk.Advance(44 * time.Second)
		sweep(t, tr)
		none(t, w)
		wantState(t, get(t, tr, "alice"), "alice", Online, "")

		clk.Advance(time.Second) // 45 s without a heartbeat
		sweep(t, tr)
		wantState(t, next(t, w).Presence, "alice", Away, Idle)
		wantState(t, get(t, tr, "alice"), "alice", Away, Idle)
		sweep(t, tr)
		none(t, w)

		must(t, s.Heartbeat(ctx))
		wantState(t, next(t, w).Presence, "alice", Online, "")
		seen := clk.Now()

		clk.Advance(45 * time.Second)
		sweep(t, tr)
		wantState(t, next(t, w).Presence, "alice", Away, Idle)
		clk.Advance(75*time.Second - time.Millisecond)
		sweep(t, tr)
		none(t, w)
		clk.Advance(time.Millisecond) // 2 minutes without a heartbeat
		sweep(t, tr)
		e = next(t, w)
		wantState(t, e.Presence, "alice", Offline, "")
		if !slices.Equal(e.Rooms, []string{"standup"}) || len(e.Presence.Rooms) != 0 || e.Presence.Sessions != 0 {
			t.Fatalf("offline event %+v", e)
		}
		p := get(t, tr, "alice")
		wantState(t, p, "alice", Offline, "")
		if !p.LastSeen.Equal(seen) {
			t.Fatalf("last seen %v, want %v", p.LastSeen, seen)
		}
		if ps, err := tr.Room(ctx, "standup"); err != nil || len(ps) != 0 {
			t.Fatalf("room after timeout: %v %v", ps, err)
		}

		// The connection was still open after all: a heartbeat brings it back.
		must(t, s.Heartbeat(ctx))
		e = next(t, w)
		wantState(t, e.Presence, "alice", Online, "")
		if !slices.Equal(e.Presence.Rooms, []string{"standup"}) {
			t.Fatalf("revived %+v", e)
		}

		must(t, s.Close(ctx))
		wantState(t, next(t, w).Presence, "alice", Offline, "")
		if err := s.Heartbeat(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("heartbeat after close: %v", err)
		}
	})
}

func TestBusySticks(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		tr := newTracker(t, ctx, backend(t, "node-a"), clk)
		w := tr.Watch(ctx, Filter{Identities: []string{"alice"}})
		s := open(t, tr, "alice", "tab", "standup")
		next(t, w)

		must(t, s.SetStatus(ctx, Status{State: Busy, Text: "focus time"}))
		e := next(t, w)
		wantState(t, e.Presence, "alice", Busy, "")
		if e.Presence.Text != "focus time" {
			t.Fatalf("text %q", e.Presence.Text)
		}
		must(t, s.Heartbeat(ctx))
		none(t, w)
		must(t, s.SetActivity(ctx, Editing))
		wantState(t, next(t, w).Presence, "alice", Busy, Editing)

		// A second session that is active keeps the person busy while the
		// first one idles.
		phone := open(t, tr, "alice", "phone")
		wantState(t, next(t, w).Presence, "alice", Busy, Editing)
		clk.Advance(30 * time.Second)
		must(t, phone.Heartbeat(ctx))
		clk.Advance(20 * time.Second)
		sweep(t, tr)
		e = next(t, w)
		wantState(t, e.Presence, "alice", Busy, "")
		if e.Presence.Sessions != 2 {
			t.Fatalf("sessions %d", e.Presence.Sessions)
		}

		// Everyone idle: away wins over busy, and the text stays.
		clk.Advance(45 * time.Second)
		sweep(t, tr)
		e = next(t, w)
		wantState(t, e.Presence, "alice", Away, Idle)
		if e.Presence.Text != "focus time" {
			t.Fatalf("text lost: %+v", e.Presence)
		}
		must(t, s.Heartbeat(ctx))
		wantState(t, next(t, w).Presence, "alice", Busy, Editing)

		// The explicit status survives going offline and coming back.
		must(t, s.Close(ctx))
		next(t, w)
		must(t, phone.Close(ctx))
		wantState(t, next(t, w).Presence, "alice", Offline, "")
		s = open(t, tr, "alice", "tab2")
		wantState(t, next(t, w).Presence, "alice", Busy, "")

		must(t, s.SetStatus(ctx, Status{State: Online}))
		e = next(t, w)
		wantState(t, e.Presence, "alice", Online, "")
		if e.Presence.Text != "" {
			t.Fatalf("text not cleared: %q", e.Presence.Text)
		}
		must(t, s.SetStatus(ctx, Status{State: Away, Text: "lunch"}))
		wantState(t, next(t, w).Presence, "alice", Away, "")
	})
}

func TestIdleReportIsAway(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		tr := newTracker(t, ctx, backend(t, "node-a"), clk)
		w := tr.Watch(ctx, Filter{Identities: []string{"alice"}})
		s := open(t, tr, "alice", "tab")
		next(t, w)

		must(t, s.SetActivity(ctx, Idle))
		wantState(t, next(t, w).Presence, "alice", Away, Idle)
		must(t, s.Heartbeat(ctx)) // an idle tab still heartbeats
		none(t, w)
		wantState(t, get(t, tr, "alice"), "alice", Away, Idle)
		must(t, s.SetActivity(ctx, InCall))
		wantState(t, next(t, w).Presence, "alice", Online, InCall)
		must(t, s.SetActivity(ctx, "drawing"))
		wantState(t, next(t, w).Presence, "alice", Online, "drawing")
	})
}

func TestMergeSessions(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		tr := newTracker(t, ctx, backend(t, "node-a"), clk)
		tab := open(t, tr, "alice", "tab", "design")
		phone := open(t, tr, "alice", "phone", "standup")

		p := get(t, tr, "alice")
		wantState(t, p, "alice", Online, "")
		if p.Sessions != 2 || !slices.Equal(p.Rooms, []string{"design", "standup"}) {
			t.Fatalf("merged %+v", p)
		}
		must(t, tab.SetActivity(ctx, Editing))
		must(t, phone.SetActivity(ctx, InCall))
		wantState(t, get(t, tr, "alice"), "alice", Online, InCall)
		must(t, tab.SetActivity(ctx, ScreenSharing))
		wantState(t, get(t, tr, "alice"), "alice", Online, ScreenSharing)

		// One session idle: still online, with the other's activity.
		must(t, tab.SetActivity(ctx, Idle))
		wantState(t, get(t, tr, "alice"), "alice", Online, InCall)
		// One session stale: the same.
		clk.Advance(30 * time.Second)
		must(t, tab.SetActivity(ctx, Editing))
		clk.Advance(20 * time.Second)
		sweep(t, tr)
		wantState(t, get(t, tr, "alice"), "alice", Online, Editing)

		// The phone is gone 2 minutes after its last heartbeat; the tab is left.
		clk.Advance(70 * time.Second)
		must(t, tab.Heartbeat(ctx))
		sweep(t, tr)
		p = get(t, tr, "alice")
		wantState(t, p, "alice", Online, Editing)
		if p.Sessions != 1 || !slices.Equal(p.Rooms, []string{"design"}) {
			t.Fatalf("after the phone timed out %+v", p)
		}
		must(t, tab.Close(ctx))
		p = get(t, tr, "alice")
		wantState(t, p, "alice", Offline, "")
		if p.Sessions != 0 || len(p.Rooms) != 0 || !p.LastSeen.Equal(clk.Now()) {
			t.Fatalf("after close %+v", p)
		}
	})
}

func TestQueries(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		tr := newTracker(t, ctx, backend(t, "node-a"), clk)
		open(t, tr, "alice", "1", "r1")
		bob := open(t, tr, "bob", "1", "r1", "r2")
		carol := open(t, tr, "carol", "1", "r2")
		must(t, carol.SetActivity(ctx, Idle))

		room := func(name string) []string {
			ps, err := tr.Room(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, p := range ps {
				out = append(out, p.Identity+":"+string(p.State))
			}
			return out
		}
		if got := room("r1"); !slices.Equal(got, []string{"alice:online", "bob:online"}) {
			t.Fatalf("r1 %v", got)
		}
		if got := room("r2"); !slices.Equal(got, []string{"bob:online", "carol:away"}) {
			t.Fatalf("r2 %v", got)
		}
		if got := room("nowhere"); len(got) != 0 {
			t.Fatalf("nowhere %v", got)
		}
		must(t, bob.Leave(ctx, "r1"))
		if got := room("r1"); !slices.Equal(got, []string{"alice:online"}) {
			t.Fatalf("r1 after leave %v", got)
		}
		must(t, bob.Join(ctx, "r3"))
		if got := room("r3"); !slices.Equal(got, []string{"bob:online"}) {
			t.Fatalf("r3 after join %v", got)
		}
		p := get(t, tr, "nobody")
		if p.State != Offline || p.Sessions != 0 || !p.LastSeen.IsZero() {
			t.Fatalf("unknown person %+v", p)
		}
	})
}

func TestEventsReachTheirRooms(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		tr := newTracker(t, ctx, backend(t, "node-a"), clk)
		r1 := tr.Watch(ctx, Filter{Rooms: []string{"r1"}})
		r2 := tr.Watch(ctx, Filter{Rooms: []string{"r2"}})
		r3 := tr.Watch(ctx, Filter{Rooms: []string{"r3"}})
		own := tr.Watch(ctx, Filter{Identities: []string{"alice"}})
		all := tr.Watch(ctx, Filter{})

		tab := open(t, tr, "alice", "tab", "r1", "r2")
		for _, w := range []*Watcher{r1, r2, own, all} {
			e := next(t, w)
			if e.Presence.Identity != "alice" || !slices.Equal(e.Rooms, []string{"r1", "r2"}) {
				t.Fatalf("open event %+v", e)
			}
		}
		none(t, r3)

		// Leaving r2 tells r2 too, with a presence that is no longer in it.
		must(t, tab.Leave(ctx, "r2"))
		e := next(t, r2)
		if !slices.Equal(e.Rooms, []string{"r1", "r2"}) || !slices.Equal(e.Presence.Rooms, []string{"r1"}) {
			t.Fatalf("leave event %+v", e)
		}
		next(t, r1)
		next(t, own)
		next(t, all)
		none(t, r3)

		open(t, tr, "bob", "1", "r3")
		if e := next(t, r3); e.Presence.Identity != "bob" {
			t.Fatalf("r3 got %+v", e)
		}
		next(t, all)
		none(t, r1)
		none(t, r2)
		none(t, own)

		// Alice's phone, in no room, reaches her other sessions and her rooms.
		phone := open(t, tr, "alice", "phone")
		if e := next(t, own); e.Presence.Sessions != 2 {
			t.Fatalf("own event %+v", e)
		}
		next(t, r1)
		next(t, all)
		// A heartbeat that changes nothing is not an event.
		must(t, phone.Heartbeat(ctx))
		for _, w := range []*Watcher{r1, r2, r3, own, all} {
			none(t, w)
		}
	})
}

func TestWatcherBufferAndLifetime(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	tr := newTracker(t, ctx, nil, clk)
	wctx, cancel := context.WithCancel(ctx)
	slow := tr.Watch(wctx, Filter{Identities: []string{"alice"}, Buffer: 2})
	s := open(t, tr, "alice", "tab")
	for _, a := range []Activity{Editing, InCall, ScreenSharing, "x"} {
		must(t, s.SetActivity(ctx, a))
	}
	if a, b := next(t, slow), next(t, slow); a.Presence.Activity != ScreenSharing || b.Presence.Activity != "x" {
		t.Fatalf("kept %q %q, want the newest two", a.Presence.Activity, b.Presence.Activity)
	}
	if slow.Dropped() != 3 {
		t.Fatalf("dropped %d, want 3", slow.Dropped())
	}
	cancel()
	select {
	case _, ok := <-slow.Events():
		if ok {
			t.Fatal("event after cancel")
		}
	case <-time.After(time.Second):
		t.Fatal("channel not closed after cancel")
	}

	other := tr.Watch(ctx, Filter{})
	must(t, tr.Close())
	if _, ok := <-other.Events(); ok {
		t.Fatal("event after Close")
	}
	if _, ok := <-tr.Watch(ctx, Filter{}).Events(); ok {
		t.Fatal("watcher of a closed tracker is open")
	}
	if err := s.Heartbeat(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("heartbeat after tracker close: %v", err)
	}
	if _, err := tr.Get(ctx, "alice"); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
}

func TestStaleEventsDropped(t *testing.T) {
	h := newHub()
	w := h.watch(t.Context(), Filter{})
	defer h.close()
	at := time.Now()
	h.deliver(Event{Presence: Presence{Identity: "a", State: Away, Version: 5}, At: at})
	h.deliver(Event{Presence: Presence{Identity: "a", State: Online, Version: 4}, At: at}) // late
	h.deliver(Event{Presence: Presence{Identity: "a", State: Away, Version: 6}, At: at})   // no change
	h.deliver(Event{Presence: Presence{Identity: "a", State: Offline, Version: 7}, At: at})
	if e := next(t, w); e.Presence.Version != 5 {
		t.Fatalf("got %+v", e)
	}
	if e := next(t, w); e.Presence.Version != 7 {
		t.Fatalf("got %+v", e)
	}
	none(t, w)
	h.prune(at.Add(time.Minute), 30*time.Second)
	if len(h.seen) != 0 {
		t.Fatalf("offline person not pruned: %v", h.seen)
	}
}

// TestKilledNode runs two trackers on one Memory: when one stops without
// closing its sessions, the other reports its people offline at their
// deadline.
func TestKilledNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		actx, kill := context.WithCancel(ctx)
		a := newTracker(t, actx, backend(t, "node-a"), clk)
		b := newTracker(t, ctx, backend(t, "node-b"), clk)
		w := b.Watch(ctx, Filter{Rooms: []string{"standup"}})

		open(t, a, "alice", "tab", "standup")
		wantState(t, next(t, w).Presence, "alice", Online, "")
		bob := open(t, b, "bob", "phone", "standup")
		wantState(t, next(t, w).Presence, "bob", Online, "")
		if ps, err := a.Room(ctx, "standup"); err != nil || len(ps) != 2 {
			t.Fatalf("node a sees %v %v", ps, err)
		}

		kill()
		must(t, a.Close())
		clk.Advance(60 * time.Second)
		must(t, bob.Heartbeat(ctx))
		sweep(t, b)
		none(t, w)                                            // alice's node is gone: no away event...
		wantState(t, get(t, b, "alice"), "alice", Away, Idle) // ...but she reads as away
		clk.Advance(60 * time.Second)
		must(t, bob.Heartbeat(ctx))
		sweep(t, b)
		wantState(t, next(t, w).Presence, "alice", Offline, "")
		none(t, w)
		ps, err := b.Room(ctx, "standup")
		if err != nil || len(ps) != 1 || ps[0].Identity != "bob" {
			t.Fatalf("room after reap %v %v", ps, err)
		}
	})
}

// TestReapedElsewhere: a live node's session that missed its deadline is
// reaped by another node; its next heartbeat announces it again.
func TestReapedElsewhere(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend backendFactory) {
		ctx := t.Context()
		clk := newClock()
		a := newTracker(t, ctx, backend(t, "node-a"), clk)
		b := newTracker(t, ctx, backend(t, "node-b"), clk)
		w := b.Watch(ctx, Filter{Identities: []string{"alice"}})
		s := open(t, a, "alice", "tab", "standup")
		wantState(t, next(t, w).Presence, "alice", Online, "")
		clk.Advance(2 * time.Minute)
		sweep(t, b)
		wantState(t, next(t, w).Presence, "alice", Offline, "")
		must(t, s.Heartbeat(ctx))
		e := next(t, w)
		wantState(t, e.Presence, "alice", Online, "")
		if !slices.Equal(e.Presence.Rooms, []string{"standup"}) {
			t.Fatalf("revived %+v", e.Presence)
		}
		sweep(t, a)
		none(t, w)
	})
}

func TestValidation(t *testing.T) {
	ctx := t.Context()
	tr := newTracker(t, ctx, nil, newClock())
	s := open(t, tr, "alice", "tab")
	long := strings.Repeat("x", MaxNameLen+1)
	for name, err := range map[string]error{
		"empty identity":   func() error { _, err := tr.Open(ctx, "", "x"); return err }(),
		"long identity":    func() error { _, err := tr.Open(ctx, long, "x"); return err }(),
		"control in id":    func() error { _, err := tr.Open(ctx, "bob", "a\x00b"); return err }(),
		"bad utf8 room":    func() error { _, err := tr.Open(ctx, "bob", "x", "\xff"); return err }(),
		"duplicate":        func() error { _, err := tr.Open(ctx, "alice", "tab"); return err }(),
		"offline status":   s.SetStatus(ctx, Status{State: Offline}),
		"unknown status":   s.SetStatus(ctx, Status{State: "dnd"}),
		"long text":        s.SetStatus(ctx, Status{Text: strings.Repeat("é", MaxTextLen+1)}),
		"newline in text":  s.SetStatus(ctx, Status{Text: "a\nb"}),
		"long activity":    s.SetActivity(ctx, Activity(strings.Repeat("a", MaxActivityLen+1))),
		"empty room":       s.Join(ctx, ""),
		"get bad identity": func() error { _, err := tr.Get(ctx, ""); return err }(),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	must(t, s.SetStatus(ctx, Status{Text: strings.Repeat("é", MaxTextLen)}))
	for i := range MaxRooms {
		must(t, s.Join(ctx, "room"+strconv.Itoa(i)))
	}
	if err := s.Join(ctx, "one too many"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("join past MaxRooms: %v", err)
	}
	if _, err := New(ctx, Config{AwayAfter: time.Minute, OfflineAfter: time.Second}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("away after offline: %v", err)
	}
}
