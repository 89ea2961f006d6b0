package signaling_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/presence"
	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/sfu"
	"github.com/huddle-rtc/huddle/signaling"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// startPresenceServer is startTestServer with the given presence tracker
// (nil: the server's own).
func startPresenceServer(t *testing.T, tracker *presence.Tracker) (*testServer, *signaling.Server, *rooms.Registry) {
	t.Helper()
	return startAdminServer(t, signaling.Config{Presence: tracker}, rooms.Config{})
}

// startAdminServer runs the server in process with cfg and rcfg (the
// registry, verifier, engine and loggers are filled in).
func startAdminServer(t *testing.T, cfg signaling.Config, rcfg rooms.Config) (*testServer, *signaling.Server, *rooms.Registry) {
	t.Helper()
	discard := slog.New(slog.DiscardHandler)
	eng, err := sfu.NewEngine(sfu.Config{
		UDPPort: 0, IncludeLoopback: true,
		IPFilter: func(ip net.IP) bool { return ip.IsLoopback() },
		Logger:   discard,
	})
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	rcfg.Engine, rcfg.Logger, rcfg.Version = eng, discard, "test"
	reg := rooms.NewRegistry(rcfg)
	verifier, err := auth.NewVerifier(map[string]string{auth.DevAPIKey: auth.DevAPISecret}, nil)
	if err != nil {
		t.Fatalf("verifier: %v", err)
	}
	cfg.Registry, cfg.Verifier, cfg.Logger = reg, verifier, discard
	srv := signaling.New(cfg)
	hs := httptest.NewServer(srv.Handler())
	api, err := client.NewAPI(client.APIOptions{LoopbackOnly: true})
	if err != nil {
		t.Fatalf("api: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
		_ = eng.Close()
	})
	return &testServer{url: hs.URL, api: api}, srv, reg
}

// people returns every person p was told about, in order.
func people(p *peer) []protocol.Person {
	var out []protocol.Person
	for _, ev := range p.eventsCopy() {
		if m, ok := ev.Message.(*protocol.PresenceUpdate); ok {
			out = append(out, m.People...)
		}
	}
	return out
}

// waitPerson waits until the latest presence p got of identity satisfies
// cond, and returns it.
func waitPerson(t *testing.T, p *peer, identity, what string, cond func(protocol.Person) bool) protocol.Person {
	t.Helper()
	var last protocol.Person
	ok := waitFor(5*time.Second, func() bool {
		for _, x := range people(p) {
			if x.Identity == identity {
				last = x
			}
		}
		return last.Identity == identity && cond(last)
	})
	if !ok {
		t.Fatalf("%s: %s: last presence of %s is %+v", p.identity, what, identity, last)
	}
	return last
}

// TestPresenceOverSignaling: two sessions of one identity merge; another
// participant sees every change (join, status, activity, idle, leave);
// the person's own other session hears of its changes; queries answer
// anyone; bad input gets bad_message.
func TestPresenceOverSignaling(t *testing.T) {
	s, _, _ := startPresenceServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ada1 := s.join(t, "standup", "ada")
	bob := s.join(t, "standup", "bob")
	waitPerson(t, bob, "ada", "ada online", func(p protocol.Person) bool {
		return p.State == protocol.PresenceOnline && p.Sessions == 1
	})
	// bob learns of his own presence too (his identity is watched).
	waitPerson(t, bob, "bob", "bob online", func(p protocol.Person) bool { return p.State == protocol.PresenceOnline })

	// A second session of ada, in another room: the sessions merge.
	ada2 := s.join(t, "design", "ada")
	merged := func(p protocol.Person) bool {
		return p.Sessions == 2 && slices.Equal(p.Rooms, []string{"design", "standup"})
	}
	waitPerson(t, bob, "ada", "two sessions merged", merged)
	waitPerson(t, ada1, "ada", "ada1 sees its other session", merged)

	// The status set on one session is the person's: bob and ada1 see it.
	if err := ada2.SetStatus(protocol.PresenceBusy, "heads down"); err != nil {
		t.Fatal(err)
	}
	busy := func(p protocol.Person) bool { return p.State == protocol.PresenceBusy && p.Text == "heads down" }
	waitPerson(t, bob, "ada", "busy with text", busy)
	waitPerson(t, ada1, "ada", "ada1 sees busy", busy)

	// The most telling activity of the active sessions wins.
	if err := ada1.SetActivity(protocol.ActivityInCall); err != nil {
		t.Fatal(err)
	}
	if err := ada2.SetActivity(protocol.ActivityScreenSharing); err != nil {
		t.Fatal(err)
	}
	waitPerson(t, bob, "ada", "screen sharing", func(p protocol.Person) bool {
		return p.Activity == protocol.ActivityScreenSharing && p.State == protocol.PresenceBusy
	})

	// The second session ends: back to one session, in one room, still busy.
	if err := ada2.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitPerson(t, bob, "ada", "one session left", func(p protocol.Person) bool {
		return p.Sessions == 1 && slices.Equal(p.Rooms, []string{"standup"}) &&
			p.State == protocol.PresenceBusy && p.Activity == protocol.ActivityInCall
	})

	// Idle on every session: away, whatever the explicit status.
	if err := ada1.SetActivity(protocol.ActivityIdle); err != nil {
		t.Fatal(err)
	}
	waitPerson(t, bob, "ada", "idle means away", func(p protocol.Person) bool {
		return p.State == protocol.PresenceAway && p.Activity == protocol.ActivityIdle
	})
	if err := ada1.SetStatus("", ""); err != nil {
		t.Fatal(err)
	}
	if err := ada1.SetActivity(protocol.ActivityEditing); err != nil {
		t.Fatal(err)
	}
	waitPerson(t, bob, "ada", "back online, editing", func(p protocol.Person) bool {
		return p.State == protocol.PresenceOnline && p.Activity == protocol.ActivityEditing && p.Text == ""
	})

	// Queries: named identities, and the room by default.
	got, err := bob.QueryPresence(ctx, "ada", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Identity != "ada" || got[0].State != protocol.PresenceOnline ||
		got[1].Identity != "nobody" || got[1].State != protocol.PresenceOffline {
		t.Fatalf("query ada, nobody = %+v", got)
	}
	room, err := bob.QueryPresence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(room) != 2 || room[0].Identity != "ada" || room[1].Identity != "bob" {
		t.Fatalf("query of the room = %+v", room)
	}

	// Bad input: a clear error, the session goes on.
	if err := bob.SetStatus("sleeping", ""); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetActivity(string(make([]byte, 100))); err != nil {
		t.Fatal(err)
	}
	errs := func() int {
		n := 0
		for _, ev := range bob.eventsCopy() {
			if e, ok := ev.Message.(*protocol.Error); ok && e.Code == protocol.CodeBadMessage &&
				(e.Ref == protocol.TypeStatus || e.Ref == protocol.TypeActivity) {
				n++
			}
		}
		return n
	}
	if !waitFor(5*time.Second, func() bool { return errs() == 2 }) {
		t.Fatalf("bad status and activity: %d bad_message errors, want 2: %s", errs(), eventTypes(bob))
	}
	var pe *protocol.Error
	if _, err := bob.QueryPresence(ctx, make([]string, 101)...); !errors.As(err, &pe) || pe.Code != protocol.CodeBadMessage {
		t.Fatalf("query of 101 identities: %v, want bad_message", err)
	}

	// The last session closes: offline, with a last-seen time.
	ada1.close()
	p := waitPerson(t, bob, "ada", "offline", func(p protocol.Person) bool {
		return p.State == protocol.PresenceOffline && p.Sessions == 0
	})
	if p.LastSeen == 0 {
		t.Errorf("offline presence has no last_seen: %+v", p)
	}
}

// TestPresenceTimeouts: a session that stops sending heartbeats turns away
// after AwayAfter and offline after OfflineAfter, and a heartbeat brings it
// back.
func TestPresenceTimeouts(t *testing.T) {
	tracker, err := presence.New(context.Background(), presence.Config{
		AwayAfter: 400 * time.Millisecond, OfflineAfter: 1200 * time.Millisecond, SweepEvery: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := startPresenceServer(t, tracker)
	t.Cleanup(func() { _ = tracker.Close() }) // after the server's shutdown

	bob := s.join(t, "room", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet, err := client.Dial(ctx, s.url, token(t, "room", "cy", allGrants...), client.Options{
		API: s.api, LoopbackOnly: true, HeartbeatInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	waitPerson(t, bob, "cy", "cy online", func(p protocol.Person) bool { return p.State == protocol.PresenceOnline })
	start := time.Now()
	waitPerson(t, bob, "cy", "cy away without heartbeats", func(p protocol.Person) bool { return p.State == protocol.PresenceAway })
	away := time.Since(start)
	if err := quiet.Heartbeat(); err != nil {
		t.Fatal(err)
	}
	waitPerson(t, bob, "cy", "cy back online after a heartbeat", func(p protocol.Person) bool { return p.State == protocol.PresenceOnline })
	start = time.Now()
	waitPerson(t, bob, "cy", "cy offline without heartbeats", func(p protocol.Person) bool { return p.State == protocol.PresenceOffline })
	t.Logf("away after %v, offline after %v (away 400ms, offline 1200ms, sweep 50ms)", away.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if time.Since(start) < time.Second {
		t.Errorf("offline after %v, before OfflineAfter", time.Since(start))
	}
}
