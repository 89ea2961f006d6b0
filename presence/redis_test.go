package presence

import (
	"context"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// startRedis runs a throwaway redis-server (internal/redistest).
func startRedis(t *testing.T) string { return redistest.Start(t) }

// newRedisBackend connects one node (its own client) to the Redis at addr.
func newRedisBackend(t *testing.T, addr, node string) *Redis {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	b, err := NewRedis(c, node)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRedisNodes runs two nodes on one real Redis with the real clock and
// short timeouts: each sees the other's people, and when a node is killed
// (stopped without closing its sessions) its people go offline on the other
// node once their keys' deadline passes, not before.
func TestRedisNodes(t *testing.T) {
	addr := startRedis(t)
	ctx := t.Context()
	cfg := Config{AwayAfter: time.Second, OfflineAfter: 2 * time.Second, SweepEvery: 50 * time.Millisecond}

	cfgA := cfg
	cfgA.Backend = newRedisBackend(t, addr, "node-a")
	actx, kill := context.WithCancel(ctx)
	a, err := New(actx, cfgA)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	bb := newRedisBackend(t, addr, "node-b")
	cfgB := cfg
	cfgB.Backend = bb
	b, err := New(ctx, cfgB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	w := b.Watch(ctx, Filter{Rooms: []string{"standup"}})
	await := func(what string, ok func(Presence) bool) Event {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case e := <-w.Events():
				if ok(e.Presence) {
					return e
				}
			case <-timeout:
				t.Fatalf("no event: %s", what)
			}
		}
	}

	aliceSeen := time.Now()
	alice, err := a.Open(ctx, "alice", "tab-1", "standup")
	if err != nil {
		t.Fatal(err)
	}
	e := await("alice online on node b", func(p Presence) bool { return p.Identity == "alice" })
	if e.Presence.State != Online || e.Presence.Sessions != 1 {
		t.Fatalf("node b got %+v", e.Presence)
	}
	bob, err := b.Open(ctx, "bob", "phone", "standup")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := a.Get(ctx, "bob"); err != nil || p.State == Offline {
		t.Fatalf("node a sees bob as %+v, %v", p, err)
	}
	ps, err := a.Room(ctx, "standup")
	if err != nil || len(ps) != 2 || ps[0].Identity != "alice" || ps[1].Identity != "bob" {
		t.Fatalf("node a sees the room as %+v, %v", ps, err)
	}
	recs, err := bb.Load(ctx, "alice")
	if err != nil || len(recs[0].Sessions) != 1 || recs[0].Sessions[0].Node != "node-a" {
		t.Fatalf("alice's record %+v, %v", recs, err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ttl, err := c.PTTL(ctx, "huddle:presence:sessions:alice").Result()
	if err != nil || ttl <= 0 || ttl > cfg.OfflineAfter+keyGrace {
		t.Fatalf("alice's session key TTL %v, %v", ttl, err)
	}
	_ = alice // never closed: its node dies with it open

	kill()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// Bob stays online on node b while alice's deadline runs out.
	done := make(chan struct{})
	beat := make(chan error, 1)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				beat <- nil
				return
			case <-tick.C:
				if err := bob.Heartbeat(ctx); err != nil {
					beat <- err
					return
				}
			}
		}
	}()
	e = await("alice offline after her node died", func(p Presence) bool {
		return p.Identity == "alice" && p.State == Offline
	})
	close(done)
	if err := <-beat; err != nil {
		t.Fatal(err)
	}
	if early := e.At.Sub(aliceSeen); early < cfg.OfflineAfter-10*time.Millisecond {
		t.Fatalf("alice went offline %v after her last heartbeat, before the %v deadline", early, cfg.OfflineAfter)
	}
	if p, err := b.Get(ctx, "alice"); err != nil || p.State != Offline {
		t.Fatalf("node b: alice is %+v, %v", p, err)
	}
	ps, err = b.Room(ctx, "standup")
	if err != nil || len(ps) != 1 || ps[0].Identity != "bob" || ps[0].State != Online {
		t.Fatalf("room after the reap %+v, %v", ps, err)
	}
	// Nothing of alice's session is left in Redis.
	if n, err := c.Exists(ctx, "huddle:presence:sessions:alice").Result(); err != nil || n != 0 {
		t.Fatalf("alice's sessions key still exists: %d, %v", n, err)
	}
	if _, err := c.ZScore(ctx, "huddle:presence:deadlines", "alice\x00tab-1").Result(); err != redis.Nil {
		t.Fatalf("alice still in deadlines: %v", err)
	}
	if _, err := c.ZScore(ctx, "huddle:presence:room:standup", "alice\x00tab-1").Result(); err != redis.Nil {
		t.Fatalf("alice still in the room index: %v", err)
	}

	// A clean close is seen at once, not at the deadline.
	closed := time.Now()
	if err := bob.Close(ctx); err != nil {
		t.Fatal(err)
	}
	await("bob offline after close", func(p Presence) bool { return p.Identity == "bob" && p.State == Offline })
	if d := time.Since(closed); d >= cfg.OfflineAfter {
		t.Fatalf("bob went offline %v after close", d)
	}
}
