package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/internal/redistest"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// startRedis runs a throwaway redis-server (internal/redistest).
func startRedis(t *testing.T) string { return redistest.Start(t) }

type node struct {
	name   string
	base   string
	cmd    *exec.Cmd
	log    *lockedBuffer
	exited chan struct{}
}

// startNode runs `huddle serve` on free loopback ports with args and waits
// for /healthz. It is stopped with SIGTERM when the test ends.
func startPresenceNode(t *testing.T, bin, name string, args ...string) *node {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, false)))
	n := &node{name: name, base: "http://" + addr, log: &lockedBuffer{}, exited: make(chan struct{})}
	all := append([]string{"serve", "--dev", "--listen", addr, "--udp-port", strconv.Itoa(freePort(t, true)),
		"--data-dir", t.TempDir()}, args...)
	n.cmd = exec.Command(bin, all...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, n.log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		if res, err := hc.Get(n.base + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return n
			}
		}
		select {
		case <-n.exited:
			t.Fatalf("%s exited before it was ready:\n%s", name, n.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 20 s:\n%s", name, n.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mintToken(t *testing.T, room, identity string, grants ...string) string {
	t.Helper()
	tok, err := auth.Mint(auth.DevAPIKey, auth.DevAPISecret, auth.Token{Room: room, Identity: identity, TTL: time.Hour, Grants: grants}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitPerson polls c's presence query of identity until cond holds, and
// returns the person and when it held.
func waitPerson(ctx context.Context, t *testing.T, c *client.Client, identity, what string, limit time.Duration, cond func(protocol.Person) bool) (protocol.Person, time.Time) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last []protocol.Person
	for {
		people, err := c.QueryPresence(ctx, identity)
		if err == nil && len(people) == 1 && cond(people[0]) {
			return people[0], time.Now()
		}
		last = people
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %+v, %v", what, limit, last, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterPresence: two `huddle serve` processes share a real Redis.
// People joined on one node are seen (pushed, queried, listed by the admin
// API) on the other; when a node is killed with SIGKILL, its people turn
// offline on the surviving node once their sessions' deadline passes.
func TestClusterPresence(t *testing.T) {
	addr := startRedis(t)
	bin := huddleBinary(t)
	const offline = 3 * time.Second
	args := []string{"--redis", "redis://" + addr + "/0", "--presence-away", "1500ms", "--presence-offline", offline.String()}
	a := startPresenceNode(t, bin, "node A", args...)
	b := startPresenceNode(t, bin, "node B", args...)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	grants := []string{protocol.GrantSubscribe, protocol.GrantData}
	dial := func(n *node, room, identity string) *client.Client {
		c, err := client.Dial(ctx, n.base, mintToken(t, room, identity, grants...), client.Options{
			LoopbackOnly: true, HeartbeatInterval: 300 * time.Millisecond, EventBuffer: 1024,
		})
		if err != nil {
			t.Fatalf("%s on %s: %v", identity, n.name, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// In cluster mode a room lives on one node (the client follows the
	// redirect there): ada's room and bob's room must be on different
	// nodes, so bob tries rooms until his lands on the node ada is not on.
	ada := dial(a, "room-a", "ada")
	var bob *client.Client
	var bobNode *node
	for i := 0; bob == nil; i++ {
		if i == 20 {
			t.Fatal("20 rooms in a row were placed on ada's node")
		}
		c := dial(b, fmt.Sprintf("room-b%d", i), "bob")
		if c.URL() != ada.URL() {
			bob = c
			bobNode = b
			if strings.Contains(c.URL(), strings.TrimPrefix(a.base, "http://")) {
				bobNode = a
			}
			break
		}
		_ = c.Close()
	}
	start := time.Now()
	_, at := waitPerson(ctx, t, ada, "bob", "ada's node sees bob (other node) online", 10*time.Second,
		func(p protocol.Person) bool { return p.State == protocol.PresenceOnline })
	t.Logf("bob's join on %s seen from ada's node in %v", bobNode.name, at.Sub(start).Round(time.Millisecond))

	// A status set on bob's node is seen on ada's.
	if err := bob.SetStatus(protocol.PresenceBusy, "on the other node"); err != nil {
		t.Fatal(err)
	}
	waitPerson(ctx, t, ada, "bob", "ada's node sees bob busy", 10*time.Second,
		func(p protocol.Person) bool { return p.State == protocol.PresenceBusy && p.Text == "on the other node" })

	// Queries on either node see both people.
	people, err := bob.QueryPresence(ctx, "ada", "bob")
	if err != nil || len(people) != 2 || people[0].State != protocol.PresenceOnline || people[1].State != protocol.PresenceBusy {
		t.Fatalf("bob's node query of ada and bob: %+v, %v", people, err)
	}
	adaNode := a
	if bobNode == a {
		adaNode = b
	}
	req, _ := http.NewRequest("GET", adaNode.base+"/admin/presence?identity=bob", nil)
	req.Header.Set("Authorization", "Bearer "+mintToken(t, "*", "ops", protocol.GrantAdmin))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var listed struct{ People []protocol.Person }
	_ = json.NewDecoder(res.Body).Decode(&listed)
	res.Body.Close()
	if len(listed.People) != 1 || listed.People[0].State != protocol.PresenceBusy {
		t.Fatalf("ada's node admin presence of bob: %+v", listed)
	}

	// Kill bob's node: no goodbye reaches Redis. bob goes offline on
	// ada's node after the deadline of his last heartbeat.
	if err := bobNode.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-bobNode.exited
	p, at := waitPerson(ctx, t, ada, "bob", "bob offline on ada's node after his node died", 4*offline,
		func(p protocol.Person) bool { return p.State == protocol.PresenceOffline })
	took := at.Sub(killed)
	t.Logf("%s killed; bob offline on ada's node after %v (offline timeout %v, heartbeats every 300 ms): %+v", bobNode.name, took.Round(time.Millisecond), offline, p)
	if took < offline-time.Second {
		t.Errorf("bob offline %v after the kill: sooner than his last heartbeat's deadline allows", took)
	}
	people, err = ada.QueryPresence(ctx, "ada", "bob")
	if err != nil || len(people) != 2 || people[0].State != protocol.PresenceOnline || people[1].State != protocol.PresenceOffline || people[1].Text != "on the other node" {
		t.Fatalf("after the kill: %+v, %v", people, err)
	}
}
