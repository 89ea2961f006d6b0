package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/huddle-rtc/huddle/internal/redistest"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// clusterNode is one `huddle serve --redis` process.
type clusterNode struct {
	id     string
	url    string
	cmd    *exec.Cmd
	log    *lockedBuffer
	exited chan error
}

func startNode(t *testing.T, bin, redisAddr, id string, leaseTTL time.Duration) *clusterNode {
	t.Helper()
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, false)))
	n := &clusterNode{id: id, url: "http://" + listen, log: &lockedBuffer{}, exited: make(chan error, 1)}
	dataDir := filepath.Join(t.TempDir(), "data")
	n.cmd = exec.Command(bin, "serve", "--dev", "--listen", listen, "--udp-port", strconv.Itoa(freePort(t, true)),
		"--turn=false", "--redis", "redis://"+redisAddr+"/0", "--node-id", id, "--lease-ttl", leaseTTL.String(),
		"--data-dir", dataDir, "--log-level", "info")
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.exited <- n.cmd.Wait() }()
	t.Cleanup(func() {
		stopAt := time.Now()
		defer func() { t.Logf("node %s stopped in %v", id, time.Since(stopAt).Round(time.Millisecond)) }()
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
		// In cluster mode documents live in Redis: no local store.
		if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("node %s created its --data-dir in cluster mode (%v)", id, err)
		}
		if t.Failed() {
			out := n.log.String()
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			t.Logf("node %s log:\n%s", id, out)
		}
	})
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if res, err := hc.Get(n.url + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return n
			}
		}
		select {
		case err := <-n.exited:
			t.Fatalf("node %s exited: %v\n%s", id, err, n.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready\n%s", id, n.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bot is a Go client that publishes a VP8 track or counts what it
// receives, and that can edit the room's document.
type bot struct {
	*client.Client
	got atomic.Int64

	docMu    sync.Mutex
	doc      *webrtc.DataChannel
	docOpen  chan struct{}
	docMsgs  chan map[string]any
	stopSend chan struct{}
	sendDone chan struct{}
}

func clusterToken(t *testing.T, room, identity string) string {
	t.Helper()
	tok, err := auth.Mint(auth.DevAPIKey, auth.DevAPISecret, auth.Token{Room: room, Identity: identity, TTL: time.Hour,
		Grants: []string{protocol.GrantPublish, protocol.GrantSubscribe, protocol.GrantData, protocol.GrantEdit}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dialBot joins room through url (following redirects); a publisher
// sends a VP8 track.
func dialBot(ctx context.Context, t *testing.T, api *webrtc.API, url, room, identity string, publish bool) (*bot, error) {
	b := &bot{docOpen: make(chan struct{}), docMsgs: make(chan map[string]any, 1024)}
	c, err := client.Dial(ctx, url, clusterToken(t, room, identity), client.Options{
		API: api,
		OnTrack: func(_ protocol.Track, tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				b.got.Add(1)
			}
		},
		OnChannel: func(dc *webrtc.DataChannel) {
			if dc.Label() != protocol.ChannelDoc {
				return
			}
			b.docMu.Lock()
			b.doc = dc
			b.docMu.Unlock()
			dc.OnOpen(func() { close(b.docOpen) })
			dc.OnMessage(func(m webrtc.DataChannelMessage) {
				var v map[string]any
				if json.Unmarshal(m.Data, &v) == nil {
					select {
					case b.docMsgs <- v:
					default:
					}
				}
			})
		},
	})
	if err != nil {
		return nil, err
	}
	b.Client = c
	if !publish {
		return b, nil
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, identity+"-cam", identity)
	if err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Publish(ctx, client.PublishTrack{Track: track}); err != nil {
		c.Close()
		return nil, err
	}
	b.stopSend, b.sendDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(b.sendDone)
		frame := append([]byte{0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00}, make([]byte, 300)...)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-b.stopSend:
				return
			case <-c.Done():
				return
			case <-tick.C:
				_ = track.WriteSample(media.Sample{Data: frame, Duration: 20 * time.Millisecond})
			}
		}
	}()
	return b, nil
}

func (b *bot) close() {
	if b.stopSend != nil {
		close(b.stopSend)
		<-b.sendDone
	}
	_ = b.Client.Close()
}

// sendDoc sends one doc-channel message.
func (b *bot) sendDoc(v any) error {
	b.docMu.Lock()
	dc := b.doc
	b.docMu.Unlock()
	if dc == nil {
		return errors.New("no doc channel")
	}
	raw, _ := json.Marshal(v)
	return dc.SendText(string(raw))
}

// docSnapshot says hello and returns the document's text and version.
func (b *bot) docSnapshot(ctx context.Context) (string, int, error) {
	select {
	case <-b.docOpen:
	case <-ctx.Done():
		return "", 0, ctx.Err()
	}
	if err := b.sendDoc(map[string]any{"type": "hello", "client": "writer"}); err != nil {
		return "", 0, err
	}
	for {
		select {
		case m := <-b.docMsgs:
			if m["type"] == "doc_snapshot" {
				text, _ := m["text"].(string)
				v, _ := m["version"].(float64)
				return text, int(v), nil
			}
		case <-ctx.Done():
			return "", 0, ctx.Err()
		}
	}
}

// redial joins again through the first live node of urls that takes it,
// every 300 ms until ctx ends.
func redial(ctx context.Context, t *testing.T, api *webrtc.API, urls []string, room, identity string, publish bool) (*bot, error) {
	var last error
	for i := 0; ctx.Err() == nil; i++ {
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		b, err := dialBot(dctx, t, api, urls[i%len(urls)], room, identity, publish)
		cancel()
		if err == nil {
			return b, nil
		}
		last = err
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("redial %s: %w (last: %v)", identity, ctx.Err(), last)
}

// TestCluster runs three `huddle serve --redis` nodes on one redis-server.
// Publisher and subscriber bots of six rooms dial the nodes round-robin:
// each room's bots land on one node, the rooms spread over the nodes, and
// media flows. A writer commits document operations in one room; its node
// is killed with SIGKILL: the room's bots come back on a live node within
// 15 s with media flowing, and the document there holds every
// acknowledged operation.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three server processes")
	}
	addr := redistest.Start(t)
	bin := huddleBinary(t)
	const leaseTTL = 3 * time.Second
	nodes := []*clusterNode{
		startNode(t, bin, addr, "n1", leaseTTL), startNode(t, bin, addr, "n2", leaseTTL), startNode(t, bin, addr, "n3", leaseTTL),
	}
	urls := []string{nodes[0].url, nodes[1].url, nodes[2].url}
	byURL := map[string]*clusterNode{}
	for _, n := range nodes {
		byURL[n.url] = n
	}
	api, err := client.NewAPI(client.APIOptions{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	type roomBots struct{ pub, sub *bot }
	rooms := map[string]*roomBots{}
	k := 0
	for r := 1; r <= 6; r++ {
		room := fmt.Sprintf("room-%d", r)
		rb := &roomBots{}
		for _, publish := range []bool{true, false} {
			who := "sub"
			if publish {
				who = "pub"
			}
			b, err := dialBot(ctx, t, api, urls[k%3], room, who+strconv.Itoa(r), publish)
			if err != nil {
				t.Fatalf("%s %s via %s: %v", room, who, urls[k%3], err)
			}
			k++
			t.Cleanup(b.close)
			if publish {
				rb.pub = b
			} else {
				rb.sub = b
			}
		}
		rooms[room] = rb
	}
	perNode := map[string][]string{}
	for room, rb := range rooms {
		if rb.pub.URL() != rb.sub.URL() {
			t.Fatalf("%s: publisher on %s, subscriber on %s", room, rb.pub.URL(), rb.sub.URL())
		}
		if len(rb.sub.Joined().Participants) != 1 {
			t.Errorf("%s: the subscriber saw %d others at join; want the publisher", room, len(rb.sub.Joined().Participants))
		}
		id := byURL[rb.pub.URL()].id
		perNode[id] = append(perNode[id], room)
	}
	t.Logf("rooms per node: %v", perNode)
	if len(perNode) < 2 {
		t.Errorf("every room on one node: %v", perNode)
	}
	waitMedia := func(what string, b *bot, limit time.Duration) {
		t.Helper()
		start := b.got.Load()
		deadline := time.Now().Add(limit)
		for b.got.Load() < start+50 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if b.got.Load() < start+50 {
			t.Fatalf("%s: %d packets in %v; want 50 more", what, b.got.Load()-start, limit)
		}
	}
	for room, rb := range rooms {
		waitMedia(room, rb.sub, 10*time.Second)
	}

	// A writer in room-1 commits operations one at a time; acked keeps
	// the text every acknowledged operation made.
	const room = "room-1"
	victim := byURL[rooms[room].pub.URL()]
	writer, err := dialBot(ctx, t, api, victim.url, room, "writer", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(writer.close)
	text, version, err := writer.docSnapshot(ctx)
	if err != nil {
		t.Fatalf("doc snapshot: %v", err)
	}
	acked := text
	for seq := 1; seq <= 30; seq++ {
		ins := string(rune('a' + seq%26))
		op := []any{ins}
		if n := len([]rune(acked)); n > 0 {
			op = []any{n, ins}
		}
		if err := writer.sendDoc(map[string]any{"type": "submit", "seq": seq, "base": version, "op": op}); err != nil {
			t.Fatal(err)
		}
		for got := false; !got; {
			select {
			case m := <-writer.docMsgs:
				switch m["type"] {
				case "ack":
					version = int(m["version"].(float64))
					acked += ins
					got = true
				case "doc_error":
					t.Fatalf("doc error: %v", m)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no ack for seq %d", seq)
			}
		}
	}
	t.Logf("%d operations acknowledged on %s; document version %d", 30, victim.id, version)

	// kill -9 the room's node.
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var live []string
	for _, u := range urls {
		if u != victim.url {
			live = append(live, u)
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
	defer fcancel()
	pub, err := redial(fctx, t, api, live, room, "pub1", true)
	if err != nil {
		t.Fatalf("publisher not back within 15 s: %v", err)
	}
	t.Cleanup(pub.close)
	sub, err := redial(fctx, t, api, live, room, "sub1", false)
	if err != nil {
		t.Fatalf("subscriber not back within 15 s: %v", err)
	}
	t.Cleanup(sub.close)
	if pub.URL() != sub.URL() || pub.URL() == victim.url {
		t.Fatalf("after the kill: publisher on %s, subscriber on %s (dead node %s)", pub.URL(), sub.URL(), victim.url)
	}
	waitMedia("after failover", sub, 15*time.Second-time.Since(killed))
	back := time.Since(killed)
	t.Logf("room %s back on %s with media %v after kill -9 of %s", room, byURL[pub.URL()].id, back.Round(time.Millisecond), victim.id)
	if back > 15*time.Second {
		t.Errorf("failover took %v; want under 15 s", back)
	}
	reader, err := redial(fctx, t, api, live, room, "reader", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reader.close)
	got, gotVersion, err := reader.docSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, acked) || gotVersion < version {
		t.Fatalf("document after failover: %q at %d; want every acknowledged operation: %q at %d", got, gotVersion, acked, version)
	}
	t.Logf("document after failover: version %d, %d code points, every acknowledged operation kept", gotVersion, len([]rune(got)))

	// Drain: SIGTERM the node that now serves room-1. Its clients get a
	// redirect to another live node, follow it, and media flows there; the
	// node exits.
	drained := byURL[pub.URL()]
	if err := drained.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the drained node did not end the subscriber's session within 10 s")
	}
	mv := sub.Moved()
	if mv == nil || mv.Reason != "drain" || mv.URL == drained.url || byURL[mv.URL] == nil {
		t.Fatalf("subscriber's session ended with redirect %+v; want a drain redirect to a live node", mv)
	}
	dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
	defer dcancel()
	pub2, err := redial(dctx, t, api, []string{mv.URL}, room, "pub1", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub2.close)
	sub2, err := redial(dctx, t, api, []string{mv.URL}, room, "sub1", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub2.close)
	waitMedia("after drain", sub2, 10*time.Second)
	select {
	case err := <-drained.exited:
		drained.exited <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the drained node did not exit within 10 s of SIGTERM")
	}
	t.Logf("drain: %s exited; room %s on %s with media %v after SIGTERM", drained.id, room, byURL[sub2.URL()].id, time.Since(termAt).Round(time.Millisecond))
}

// TestClusterBots runs `huddle bots --rooms 6` against three nodes: every
// bot joins, every subscriber gets media, and the rooms spread over the
// nodes (read from each node's /metrics while the bots run).
func TestClusterBots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three server processes")
	}
	addr := redistest.Start(t)
	bin := huddleBinary(t)
	var urls []string
	for _, id := range []string{"n1", "n2", "n3"} {
		urls = append(urls, startNode(t, bin, addr, id, 3*time.Second).url)
	}
	var out, errOut lockedBuffer
	cmd := exec.Command(bin, "bots", "--url", strings.Join(urls, ","), "--rooms", "6", "--publishers", "6", "--subscribers", "6",
		"--duration", "8s", "--audio-only", "--json")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	maxRooms := make([]int, len(urls))
	hc := &http.Client{Timeout: time.Second}
	for running := true; running; {
		select {
		case err := <-done:
			running = false
			if err != nil {
				t.Fatalf("huddle bots: %v\n%s\n%s", err, out.String(), errOut.String())
			}
		case <-time.After(250 * time.Millisecond):
			for i, u := range urls {
				if n := scrapeGauge(hc, u, "huddle_rooms"); n > maxRooms[i] {
					maxRooms[i] = n
				}
			}
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var rep struct {
		Joined  int `json:"joined"`
		Failed  int `json:"failed"`
		NoMedia int `json:"no_media"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("bots output: %v\n%s", err, out.String())
	}
	total, used := 0, 0
	for _, n := range maxRooms {
		total += n
		if n > 0 {
			used++
		}
	}
	t.Logf("bots: %d joined, %d failed, %d without media; rooms per node (max seen): %v", rep.Joined, rep.Failed, rep.NoMedia, maxRooms)
	if rep.Joined != 12 || rep.Failed != 0 || rep.NoMedia != 0 {
		t.Errorf("want 12 bots joined with media")
	}
	if total != 6 || used < 2 {
		t.Errorf("rooms per node %v: want the six rooms, each on one node, over at least two nodes", maxRooms)
	}
}

// scrapeGauge reads one unlabelled gauge from a node's /metrics; -1 when
// it cannot.
func scrapeGauge(hc *http.Client, base, name string) int {
	res, err := hc.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(f)
			}
		}
	}
	return -1
}

// TestClusterStall stops the owner of a room (SIGSTOP) past its lease:
// the room is claimed by the other node, where a writer goes on. When the
// stalled node resumes it must not serve the room any more: its clients
// get a redirect ("moved"), and an operation sent to it right away is
// never acknowledged nor written into the document.
func TestClusterStall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	addr := redistest.Start(t)
	bin := huddleBinary(t)
	const leaseTTL = 2 * time.Second
	nodes := []*clusterNode{startNode(t, bin, addr, "n1", leaseTTL), startNode(t, bin, addr, "n2", leaseTTL)}
	byURL := map[string]*clusterNode{nodes[0].url: nodes[0], nodes[1].url: nodes[1]}
	api, err := client.NewAPI(client.APIOptions{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const room = "stall"
	old, err := dialBot(ctx, t, api, nodes[0].url, room, "old-writer", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(old.close)
	owner := byURL[old.URL()]
	var other *clusterNode
	for _, n := range nodes {
		if n != owner {
			other = n
		}
	}
	if _, _, err := old.docSnapshot(ctx); err != nil {
		t.Fatal(err)
	}

	if err := owner.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = owner.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
	defer fcancel()
	writer, err := redial(fctx, t, api, []string{other.url}, room, "new-writer", false)
	if err != nil {
		t.Fatalf("the room was not claimed by %s while %s was stopped: %v", other.id, owner.id, err)
	}
	t.Cleanup(writer.close)
	if writer.URL() != other.url {
		t.Fatalf("new writer on %s; want %s", writer.URL(), other.url)
	}
	text, version, err := writer.docSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	insertAt := func(text, ins string) []any {
		if n := len([]rune(text)); n > 0 {
			return []any{n, ins}
		}
		return []any{ins}
	}
	if err := writer.sendDoc(map[string]any{"type": "submit", "seq": 1, "base": version, "op": insertAt(text, "new")}); err != nil {
		t.Fatal(err)
	}
	waitAck := func(b *bot, limit time.Duration) (map[string]any, bool) {
		deadline := time.After(limit)
		for {
			select {
			case m := <-b.docMsgs:
				if m["type"] == "ack" || m["type"] == "doc_error" {
					return m, true
				}
			case <-deadline:
				return nil, false
			case <-b.Done():
				return nil, false
			}
		}
	}
	if m, ok := waitAck(writer, 5*time.Second); !ok || m["type"] != "ack" {
		t.Fatalf("new owner: %v", m)
	}

	// Resume the stalled node and at once send it an operation.
	if err := owner.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	_ = old.sendDoc(map[string]any{"type": "submit", "seq": 1, "base": version, "op": insertAt(text, "STALE")})
	if m, ok := waitAck(old, 3*time.Second); ok && m["type"] == "ack" {
		t.Fatalf("the stalled node acknowledged an operation after losing the room: %v", m)
	}
	select {
	case <-old.Done():
	case <-time.After(2 * leaseTTL):
		t.Fatal("the stalled node still serves the room")
	}
	if mv := old.Moved(); mv == nil || mv.Reason != "moved" {
		t.Errorf("old session ended with %+v; want a redirect (moved)", mv)
	}
	reader, err := redial(fctx, t, api, []string{owner.url}, room, "reader", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reader.close)
	if reader.URL() != other.url {
		t.Errorf("a join through the resumed node landed on %s; want %s", reader.URL(), other.url)
	}
	got, _, err := reader.docSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "STALE") || !strings.Contains(got, "new") {
		t.Fatalf("document %q: want the new owner's op and not the stalled node's", got)
	}
	t.Logf("stalled %s gave up the room; document %q", owner.id, got)
}

// TestClusterBotsFailover runs `huddle bots --reconnect` in one room over
// three nodes and kills the room's node with SIGKILL: within 15 s both
// bots are in the room on one live node and media is forwarded there.
func TestClusterBotsFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three server processes")
	}
	addr := redistest.Start(t)
	bin := huddleBinary(t)
	var nodes []*clusterNode
	var urls []string
	for _, id := range []string{"n1", "n2", "n3"} {
		n := startNode(t, bin, addr, id, 3*time.Second)
		nodes = append(nodes, n)
		urls = append(urls, n.url)
	}
	var out, errOut lockedBuffer
	cmd := exec.Command(bin, "bots", "--url", strings.Join(urls, ","), "--room", "failover", "--publishers", "1", "--subscribers", "1",
		"--duration", "30s", "--audio-only", "--reconnect", "--json")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	hc := &http.Client{Timeout: time.Second}
	// serving finds the node with both bots in the room and packets
	// forwarded there between two looks.
	serving := func(among []*clusterNode, limit time.Duration) *clusterNode {
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			for _, n := range among {
				if scrapeGauge(hc, n.url, "huddle_participants") != 2 {
					continue
				}
				before := scrapeGauge(hc, n.url, "huddle_forwarded_packets_total")
				time.Sleep(300 * time.Millisecond)
				if after := scrapeGauge(hc, n.url, "huddle_forwarded_packets_total"); after > before && before >= 0 {
					return n
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	owner := serving(nodes, 15*time.Second)
	if owner == nil {
		t.Fatalf("the bots are not in one room with media\n%s", errOut.String())
	}
	if err := owner.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var live []*clusterNode
	for _, n := range nodes {
		if n != owner {
			live = append(live, n)
		}
	}
	back := serving(live, 15*time.Second)
	if back == nil {
		t.Fatalf("the bots are not back with media on a live node within 15 s of kill -9 of %s", owner.id)
	}
	t.Logf("bots back on %s with media %v after kill -9 of %s", back.id, time.Since(killed).Round(time.Millisecond), owner.id)
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		done <- err // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("huddle bots did not stop")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var rep struct {
		Joined     int `json:"joined"`
		Reconnects int `json:"reconnects"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("bots output: %v\n%s", err, out.String())
	}
	if rep.Joined != 2 || rep.Reconnects < 2 {
		t.Errorf("bots report: %+v; want both joined and reconnected", rep)
	}
	t.Logf("bots report: %d joined, %d reconnects", rep.Joined, rep.Reconnects)
}
