package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/internal/redistest"
)

const testTTL = 900 * time.Millisecond

type node struct {
	*Cluster
	mu   sync.Mutex
	lost []string
}

func (n *node) lostRooms() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.lost...)
}

func join(t *testing.T, addr, id string) *node {
	t.Helper()
	n := &node{}
	c, err := Join(context.Background(), Config{
		Redis: redistest.Client(t, addr), NodeID: id, URL: "http://" + id + ".test", LeaseTTL: testTTL,
		OnLost: func(room string) {
			n.mu.Lock()
			n.lost = append(n.lost, room)
			n.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("join %s: %v", id, err)
	}
	n.Cluster = c
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return n
}

// kill stops a node the way kill -9 would: no release, no deregistration.
func (n *node) kill() {
	n.once.Do(func() { close(n.stop) })
	<-n.done
	n.mu.Lock()
	n.Cluster.mu.Lock()
	n.leases = map[string]*lease{}
	n.Cluster.mu.Unlock()
	n.mu.Unlock()
}

// TestPlacement asks every node, concurrently, where each of nine rooms
// goes: for every room they all name the same owner, exactly one node
// serves it, and the rooms spread over the nodes.
func TestPlacement(t *testing.T) {
	addr := redistest.Start(t)
	nodes := []*node{join(t, addr, "a"), join(t, addr, "b"), join(t, addr, "c")}
	ctx := context.Background()
	type answer struct {
		node int
		url  string
		err  error
	}
	perNode := map[string]int{}
	for r := range 9 {
		room := fmt.Sprintf("room-%d", r)
		answers := make(chan answer, 3*len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					u, err := n.Place(ctx, room)
					answers <- answer{i, u, err}
				}()
			}
		}
		wg.Wait()
		close(answers)
		owner := ""
		for a := range answers {
			if a.err != nil {
				t.Fatalf("%s: node %d: %v", room, a.node, a.err)
			}
			u := a.url
			if u == "" {
				u = nodes[a.node].cfg.URL
			}
			if owner == "" {
				owner = u
			} else if owner != u {
				t.Fatalf("%s: two owners: %s and %s", room, owner, u)
			}
		}
		perNode[owner]++
		serving := 0
		for _, n := range nodes {
			if _, ok := n.Token(room); ok {
				serving++
			}
		}
		if serving != 1 {
			t.Fatalf("%s: %d nodes hold the lease", room, serving)
		}
	}
	t.Logf("rooms per node: %v", perNode)
	if len(perNode) < 2 {
		t.Errorf("all rooms on one node: %v", perNode)
	}
	ns, err := nodes[0].Nodes(ctx)
	if err != nil || len(ns) != 3 {
		t.Fatalf("Nodes = %v, %v", ns, err)
	}
}

// TestFailover kills the owner of a room: after the lease TTL another node
// takes the room with a higher fencing token.
func TestFailover(t *testing.T) {
	addr := redistest.Start(t)
	a, b := join(t, addr, "a"), join(t, addr, "b")
	ctx := context.Background()
	// Make a the owner: drain b so that placement picks a.
	if err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if u, err := b.Place(ctx, "r"); err != nil || u != "http://a.test" {
		t.Fatalf("b.Place = %q, %v; want a's URL", u, err)
	}
	if u, err := a.Place(ctx, "r"); err != nil || u != "" {
		t.Fatalf("a.Place = %q, %v; want a to serve", u, err)
	}
	tok1, _ := a.Token("r")
	b.mu.Lock()
	b.Cluster.mu.Lock()
	b.draining = false
	b.Cluster.mu.Unlock()
	b.mu.Unlock()
	if err := b.heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	a.kill()
	killed := time.Now()
	// Until the lease expires the room stays the dead owner's.
	if u, err := b.Place(ctx, "r"); err == nil && u == "" {
		t.Fatal("b took the room while the dead owner's lease still ran")
	}
	var u string
	var err error
	for time.Since(killed) < 3*testTTL {
		if u, err = b.Place(ctx, "r"); err == nil && u == "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || u != "" {
		t.Fatalf("b.Place after the lease expired = %q, %v; want b to serve", u, err)
	}
	tok2, _ := b.Token("r")
	t.Logf("room moved %v after the kill; token %d → %d", time.Since(killed).Round(time.Millisecond), tok1, tok2)
	if tok2 <= tok1 {
		t.Errorf("fencing token %d not above the old %d", tok2, tok1)
	}
}

// TestLostLease takes a room away from its owner behind its back (as
// after a stall): the owner notices at its next renewal and stops.
func TestLostLease(t *testing.T) {
	addr := redistest.Start(t)
	a := join(t, addr, "a")
	ctx := context.Background()
	if u, err := a.Place(ctx, "r"); err != nil || u != "" {
		t.Fatalf("Place = %q, %v", u, err)
	}
	rdb := redistest.Client(t, addr)
	if err := rdb.Set(ctx, a.RoomKey("r"), "z 99", 0).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * testTTL)
	for len(a.lostRooms()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := a.lostRooms(); len(got) != 1 || got[0] != "r" {
		t.Fatalf("lost = %v; want [r]", got)
	}
	if _, ok := a.Token("r"); ok {
		t.Error("a still holds r")
	}
	if v, _ := rdb.Get(ctx, a.RoomKey("r")).Result(); v != "z 99" {
		t.Errorf("the new owner's lease was touched: %q", v)
	}
}

// TestDrainAndRelease: a draining node gets no new room; an idle room's
// lease is released; Close removes the node.
func TestDrainAndRelease(t *testing.T) {
	addr := redistest.Start(t)
	a, b := join(t, addr, "a"), join(t, addr, "b")
	ctx := context.Background()
	if err := a.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		u, err := a.Place(ctx, fmt.Sprintf("d%d", i))
		if err != nil || u != "http://b.test" {
			t.Fatalf("Place on a draining node = %q, %v; want b", u, err)
		}
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Place(ctx, "other"); err == nil {
		t.Fatal("placed with the only other node gone and this one draining")
	}
	ns, err := a.Nodes(ctx)
	if err != nil || len(ns) != 1 || ns[0].ID != "a" || !ns[0].Draining {
		t.Fatalf("Nodes = %+v, %v", ns, err)
	}
}

// TestNodeURLs lists the live nodes that take rooms: a draining node and a
// dead one (once its registration expired) are left out.
func TestNodeURLs(t *testing.T) {
	addr := redistest.Start(t)
	a, b, c := join(t, addr, "a"), join(t, addr, "b"), join(t, addr, "c")
	ctx := context.Background()
	urls, err := a.NodeURLs(ctx)
	if err != nil || fmt.Sprint(urls) != "[http://a.test http://b.test http://c.test]" {
		t.Fatalf("NodeURLs = %v, %v; want the three nodes", urls, err)
	}
	if err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	c.kill()
	killed := time.Now()
	for time.Since(killed) < 3*testTTL {
		if urls, err = a.NodeURLs(ctx); err == nil && fmt.Sprint(urls) == "[http://a.test]" {
			t.Logf("the dead node left the list %v after the kill", time.Since(killed).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("NodeURLs = %v, %v; want only a (b drains, c is dead)", urls, err)
}

// TestPickAvoidsBusyNodes: a node whose CPU is near its limit takes no new
// room while a less busy one can, however few people it holds; when every
// node is busy the least loaded still gets it.
func TestPickAvoidsBusyNodes(t *testing.T) {
	c := &Cluster{cfg: Config{NodeID: "self"}}
	idle := func(id string, people int) Node {
		return Node{ID: id, Load: Load{Participants: people, CPU: 0.2, Cores: 2}}
	}
	busy := func(id string, people int) Node {
		return Node{ID: id, Load: Load{Participants: people, CPU: 1.9, Cores: 2}}
	}
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  string
	}{
		{"a busy empty node loses to a loaded idle one", []Node{busy("a", 0), idle("b", 30)}, "b"},
		{"all busy: the least loaded", []Node{busy("a", 40), busy("b", 10)}, "b"},
		{"a draining idle node is not a choice", []Node{busy("a", 5), {ID: "b", Draining: true, Load: Load{Cores: 2}}}, "a"},
		{"no core count (an older node): never busy", []Node{{ID: "a", Load: Load{CPU: 8}}, idle("b", 30)}, "a"},
	} {
		if got := c.pick(tc.nodes); got != tc.want {
			t.Errorf("%s: picked %q; want %q", tc.name, got, tc.want)
		}
	}
}

// TestPlacementSkipsSilentNodes: a node that stopped heartbeating (killed)
// keeps its record until the record's TTL runs out, but after two missed
// heartbeats no room is placed there and clients are not sent there.
func TestPlacementSkipsSilentNodes(t *testing.T) {
	addr := redistest.Start(t)
	a, b := join(t, addr, "a"), join(t, addr, "b")
	ctx := context.Background()
	if err := b.heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	b.kill()
	killed := time.Now()
	time.Sleep(2*testTTL/3 + testTTL/5) // past two heartbeats, before the TTL
	nodes, err := a.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(killed) >= testTTL || len(nodes) != 2 {
		t.Skipf("the test ran too slowly to see b's record before it expired (%v, %d nodes)", time.Since(killed), len(nodes))
	}
	for i := range 6 {
		room := fmt.Sprintf("room-%d", i)
		if u, err := a.Place(ctx, room); err != nil || u != "" {
			t.Errorf("%s placed at %q (%v); want on a, the only node heartbeating", room, u, err)
		}
	}
	if urls, err := a.NodeURLs(ctx); err != nil || len(urls) != 1 || urls[0] != "http://a.test" {
		t.Errorf("node URLs %v (%v); want only a's", urls, err)
	}
}
