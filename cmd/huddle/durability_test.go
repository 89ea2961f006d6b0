package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/rooms/doc"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// TestKill9LosesNoAcknowledgedOperation runs the real server binary,
// has editors insert unique tokens as fast as they are acknowledged,
// kills the server with SIGKILL in the middle, restarts it on the same
// data directory and checks that every acknowledged token is in the
// document exactly once, and that the operations in flight at the kill,
// resubmitted with their sequence numbers, end up there exactly once too.
func TestKill9LosesNoAcknowledgedOperation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the server")
	}
	bin := huddleBinary(t)
	dataDir := t.TempDir()
	api, err := client.NewAPI(client.APIOptions{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}

	srv := startHuddle(t, bin, dataDir)
	const editors = 4
	eds := make([]*durEditor, editors)
	for i := range eds {
		eds[i] = dialEditor(t, api, srv.url, fmt.Sprintf("ed%d", i))
	}
	epoch := eds[0].epoch

	// Edit until enough is acknowledged, then kill -9 while edits fly.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, ed := range eds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ed.editUntil(stop)
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for acked(eds) < 200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-srv.exited
	close(stop)
	wg.Wait()
	before := acked(eds)
	if before < 200 {
		t.Fatalf("only %d operations acknowledged before the kill", before)
	}
	inFlight := 0
	for _, ed := range eds {
		ed.close()
		if ed.pending != nil {
			inFlight++
		}
	}
	t.Logf("killed with %d operations acknowledged, %d in flight", before, inFlight)

	// Restart on the same data directory; resubmit what was in flight.
	srv = startHuddle(t, bin, dataDir)
	for i, old := range eds {
		ed := dialEditor(t, api, srv.url, fmt.Sprintf("ed%d", i))
		if ed.epoch != epoch {
			t.Fatalf("epoch %q after restart, was %q: the document was re-created", ed.epoch, epoch)
		}
		ed.seq, ed.acks = old.seq, old.acks
		if old.pending != nil {
			ed.resubmit(old.pending)
		}
		ed.close()
		eds[i] = ed
	}
	check := dialEditor(t, api, srv.url, "checker")
	defer check.close()
	text := check.text
	for _, ed := range eds {
		for _, tok := range ed.acks {
			if n := strings.Count(text, tok); n != 1 {
				t.Errorf("acknowledged %s appears %d times", tok, n)
			}
		}
	}
	if total := strings.Count(text, "<"); total != acked(eds) {
		t.Errorf("the document holds %d tokens, %d were acknowledged", total, acked(eds))
	}
}

func acked(eds []*durEditor) int {
	n := 0
	for _, ed := range eds {
		ed.mu.Lock()
		n += len(ed.acks)
		ed.mu.Unlock()
	}
	return n
}

type huddleProc struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{} // closed once the process has been waited for
}

// startHuddle runs `huddle serve --dev` on free loopback ports with the
// documents in dataDir; the test's cleanup kills it if still running.
func startHuddle(t *testing.T, bin, dataDir string) *huddleProc {
	t.Helper()
	httpPort, udpPort := freePort(t, false), freePort(t, true)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	var log bytes.Buffer
	var logMu sync.Mutex
	cmd := exec.Command(bin, "serve", "--dev", "--listen", addr, "--udp-port", strconv.Itoa(udpPort), "--data-dir", dataDir)
	cmd.Stdout = lockedWriter{&logMu, &log}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &huddleProc{cmd: cmd, url: "http://" + addr, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if res, err := hc.Get(p.url + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			logMu.Lock()
			defer logMu.Unlock()
			t.Fatalf("server not ready:\n%s", log.String())
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// durEditor inserts tokens "<name:seq>" at the start or the end of its
// text, one request in flight, and records which were acknowledged.
type durEditor struct {
	t     *testing.T
	name  string
	c     *client.Client
	dc    *webrtc.DataChannel
	in    chan map[string]json.RawMessage
	epoch string

	text    string
	version uint64
	seq     uint64
	pending *durReq

	mu   sync.Mutex
	acks []string
}

type durReq struct {
	seq, base uint64
	sent      doc.Op // as sent, against base
	op        doc.Op // transformed past what arrived since
	token     string
}

func dialEditor(t *testing.T, api *webrtc.API, url, name string) *durEditor {
	t.Helper()
	tok, err := auth.Mint(auth.DevAPIKey, auth.DevAPISecret, auth.Token{Room: "durable", Identity: name, Grants: []string{protocol.GrantEdit}, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ed := &durEditor{t: t, name: name, in: make(chan map[string]json.RawMessage, 1<<14)}
	open := make(chan *webrtc.DataChannel, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, tok, client.Options{API: api, OnChannel: func(dc *webrtc.DataChannel) {
		if dc.Label() != protocol.ChannelDoc {
			return
		}
		dc.OnOpen(func() { open <- dc })
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			var v map[string]json.RawMessage
			if json.Unmarshal(m.Data, &v) == nil {
				select {
				case ed.in <- v:
				default: // the test reads far faster than this fills
				}
			}
		})
	}})
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	ed.c = c
	select {
	case ed.dc = <-open:
	case <-ctx.Done():
		t.Fatalf("%s: doc channel did not open", name)
	}
	if err := ed.dc.SendText(`{"type":"hello","client":"durability"}`); err != nil {
		t.Fatal(err)
	}
	m, ok := ed.next(10 * time.Second)
	if !ok || field[string](m, "type") != "doc_snapshot" {
		t.Fatalf("%s: no snapshot: %v", name, m)
	}
	ed.text, ed.version, ed.epoch = field[string](m, "text"), field[uint64](m, "version"), field[string](m, "epoch")
	return ed
}

func field[T any](m map[string]json.RawMessage, k string) T {
	var v T
	_ = json.Unmarshal(m[k], &v)
	return v
}

func (ed *durEditor) close() { _ = ed.c.Close() }

func (ed *durEditor) next(wait time.Duration) (map[string]json.RawMessage, bool) {
	select {
	case m := <-ed.in:
		return m, true
	case <-ed.c.Done():
		return nil, false
	case <-time.After(wait):
		return nil, false
	}
}

// submit sends a new insert of a fresh token.
func (ed *durEditor) submit() error {
	ed.seq++
	tok := fmt.Sprintf("<%s:%d>", ed.name, ed.seq)
	n := len([]rune(ed.text))
	pos := 0
	if ed.seq%2 == 0 {
		pos = n
	}
	op, err := doc.Edit(n, pos, 0, tok)
	if err != nil {
		return err
	}
	ed.pending = &durReq{seq: ed.seq, base: ed.version, sent: op, op: op, token: tok}
	if ed.text, err = doc.Apply(ed.text, op); err != nil {
		return err
	}
	return ed.send(ed.pending)
}

func (ed *durEditor) send(r *durReq) error {
	b, _ := json.Marshal(map[string]any{"type": "submit", "seq": r.seq, "base": r.base, "op": r.sent})
	return ed.dc.SendText(string(b))
}

// handle applies one server message; it reports an ack of the pending
// request.
func (ed *durEditor) handle(m map[string]json.RawMessage) (ack bool, err error) {
	switch field[string](m, "type") {
	case "ack":
		if ed.pending == nil || field[uint64](m, "seq") != ed.pending.seq {
			return false, fmt.Errorf("unexpected ack %v", m)
		}
		ed.mu.Lock()
		ed.acks = append(ed.acks, ed.pending.token)
		ed.mu.Unlock()
		ed.pending = nil
		ed.version = field[uint64](m, "version")
		return true, nil
	case "op":
		op := field[doc.Op](m, "op")
		if ed.pending != nil {
			mine, theirs, err := doc.Transform(ed.pending.op, op, doc.Right)
			if err != nil {
				return false, err
			}
			ed.pending.op, op = mine, theirs
		}
		if ed.text, err = doc.Apply(ed.text, op); err != nil {
			return false, err
		}
		ed.version = field[uint64](m, "version")
		return false, nil
	}
	return false, fmt.Errorf("unexpected %v", m)
}

// editUntil submits and waits for acks until stop or the connection ends.
func (ed *durEditor) editUntil(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if ed.pending == nil {
			if err := ed.submit(); err != nil {
				return // the server is gone
			}
		}
		m, ok := ed.next(time.Second)
		if !ok {
			if ed.c.Err() != nil || isDone(ed.c) {
				return
			}
			continue
		}
		if _, err := ed.handle(m); err != nil {
			ed.t.Errorf("%s: %v", ed.name, err)
			return
		}
	}
}

func isDone(c *client.Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// resubmit sends a request that was in flight at the kill again, as it
// was first sent (same seq and base), and waits for its ack.
func (ed *durEditor) resubmit(r *durReq) {
	if err := ed.send(r); err != nil {
		ed.t.Fatal(err)
	}
	for {
		m, ok := ed.next(10 * time.Second)
		if !ok {
			ed.t.Fatalf("%s: no ack for resubmitted seq %d", ed.name, r.seq)
		}
		if field[string](m, "type") == "ack" {
			ed.mu.Lock()
			ed.acks = append(ed.acks, r.token)
			ed.mu.Unlock()
			return
		}
		if field[string](m, "type") == "doc_error" {
			ed.t.Fatalf("%s: resubmit refused: %v", ed.name, m)
		}
	}
}
