package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

func freePort(t *testing.T, udp bool) int {
	t.Helper()
	if udp {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRedis runs a throwaway redis-server on a free loopback port.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not on PATH; CI must install it (`make deps`)")
		}
		t.Skip("redis-server is not on PATH; `make deps` installs it")
	}
	port := freePort(t, false)
	dir := t.TempDir()
	log := &lockedBuffer{}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s does not answer: %v\n%s", addr, err, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// huddleBinary returns $HUDDLE_BIN or builds the command into a temporary
// directory.
func huddleBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("HUDDLE_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "huddle")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

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

// watcher collects the presence pushes a client gets.
type watcher struct {
	mu     sync.Mutex
	people []protocol.Person
	at     []time.Time
	done   chan struct{}
}

func watch(c *client.Client) *watcher {
	w := &watcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ev := range c.Events() {
			if m, ok := ev.Message.(*protocol.PresenceUpdate); ok {
				w.mu.Lock()
				for _, p := range m.People {
					w.people = append(w.people, p)
					w.at = append(w.at, time.Now())
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// wait returns the first push about identity after since that satisfies
// cond, and when it came.
func (w *watcher) wait(t *testing.T, identity, what string, since time.Time, limit time.Duration, cond func(protocol.Person) bool) (protocol.Person, time.Time) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		w.mu.Lock()
		for i, p := range w.people {
			if p.Identity == identity && !w.at[i].Before(since) && cond(p) {
				at := w.at[i]
				w.mu.Unlock()
				return p, at
			}
		}
		last := fmt.Sprint(w.people)
		w.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; pushes: %s", what, limit, last)
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
	dial := func(n *node, identity string) *client.Client {
		c, err := client.Dial(ctx, n.base, mintToken(t, "shared", identity, grants...), client.Options{
			LoopbackOnly: true, HeartbeatInterval: 300 * time.Millisecond, EventBuffer: 1024,
		})
		if err != nil {
			t.Fatalf("%s on %s: %v", identity, n.name, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ada := dial(a, "ada")
	adaW := watch(ada)
	start := time.Now()
	bob := dial(b, "bob")
	_, at := adaW.wait(t, "bob", "ada (node A) hears bob (node B) online", start, 10*time.Second,
		func(p protocol.Person) bool { return p.State == protocol.PresenceOnline })
	t.Logf("bob's join on node B reached ada on node A in %v", at.Sub(start).Round(time.Millisecond))

	// A status set on node B, pushed to node A.
	if err := bob.SetStatus(protocol.PresenceBusy, "on node B"); err != nil {
		t.Fatal(err)
	}
	adaW.wait(t, "bob", "ada sees bob busy", start, 10*time.Second,
		func(p protocol.Person) bool { return p.State == protocol.PresenceBusy && p.Text == "on node B" })

	// Queries on either node see both people.
	people, err := ada.QueryPresence(ctx, "bob")
	if err != nil || len(people) != 1 || people[0].State != protocol.PresenceBusy {
		t.Fatalf("node A query of bob: %+v, %v", people, err)
	}
	people, err = bob.QueryPresence(ctx)
	if err != nil || len(people) != 2 || people[0].Identity != "ada" || people[1].Identity != "bob" {
		t.Fatalf("node B query of the room: %+v, %v", people, err)
	}
	req, _ := http.NewRequest("GET", a.base+"/admin/presence?room=shared", nil)
	req.Header.Set("Authorization", "Bearer "+mintToken(t, "*", "ops", protocol.GrantAdmin))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var listed struct{ People []protocol.Person }
	_ = json.NewDecoder(res.Body).Decode(&listed)
	res.Body.Close()
	if len(listed.People) != 2 {
		t.Fatalf("node A admin presence of the room: %+v", listed)
	}

	// Kill node B: no goodbye reaches Redis. bob goes offline on node A
	// after the deadline of his last heartbeat.
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-b.exited
	p, at := adaW.wait(t, "bob", "bob offline on node A after node B died", killed, 4*offline,
		func(p protocol.Person) bool { return p.State == protocol.PresenceOffline })
	took := at.Sub(killed)
	t.Logf("node B killed; bob offline on node A after %v (offline timeout %v, heartbeats every 300 ms): %+v", took.Round(time.Millisecond), offline, p)
	if took < offline-time.Second {
		t.Errorf("bob offline %v after the kill: sooner than his last heartbeat's deadline allows", took)
	}
	people, err = ada.QueryPresence(ctx, "ada", "bob")
	if err != nil || people[0].State != protocol.PresenceOnline || people[1].State != protocol.PresenceOffline || people[1].Text != "on node B" {
		t.Fatalf("after the kill: %+v, %v", people, err)
	}
}
