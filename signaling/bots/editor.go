package bots

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/rooms/doc"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// editorStats is what one editor bot measures.
type editorStats struct {
	ops     uint64     // local edits made
	acks    *histogram // submit to ack
	final   string     // the editor's text once everyone stopped
	version uint64     // and its version
	server  string     // the server's text, from a fresh snapshot
	sVer    uint64
	checked bool // final and server were both read
	joined  bool // arrived at the room's start barrier
	arrived bool // at the room's end barrier (runBot arrives for an editor that did not)
}

// editBarrier lets the editors of a room finish together: each one stops
// editing, waits for its last ack, then arrives with the version of its
// last ack; once all have arrived, every committed operation is at or
// below the highest of those versions.
type editBarrier struct {
	mu       sync.Mutex
	left     int
	top      uint64
	released chan struct{}
}

func newEditBarrier(n int) *editBarrier {
	b := &editBarrier{left: n, released: make(chan struct{})}
	if n == 0 {
		close(b.released)
	}
	return b
}

// arrive counts one editor, with the version of its last ack (0 for one
// that failed); each editor arrives exactly once.
func (b *editBarrier) arrive(version uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.top = max(b.top, version)
	b.left--
	if b.left == 0 {
		close(b.released)
	}
}

// wait returns the top version once every editor has arrived.
func (b *editBarrier) wait(ctx context.Context) (uint64, error) {
	select {
	case <-b.released:
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.top, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for the other editors to finish: %w", ctx.Err())
	}
}

// docMsg is any message the server sends on the doc channel.
type docMsg struct {
	Type    string          `json:"type"`
	Seq     uint64          `json:"seq"`
	Version uint64          `json:"version"`
	Text    string          `json:"text"`
	Op      json.RawMessage `json:"op"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
}

// editor is the client side of the document: the state machine of
// PROTOCOL.md (synchronized, awaiting an ack, awaiting an ack with a
// buffer of later edits), owned by one goroutine.
type editor struct {
	send        func(string) error // to the doc channel
	text        *doc.Text
	version     uint64
	seq         uint64
	outstanding doc.Op // sent, not acknowledged
	sentAt      time.Time
	buffer      doc.Op // made while outstanding, composed
	stats       *editorStats
}

// flush submits the buffer if nothing is in flight.
func (ed *editor) flush() error {
	if ed.outstanding != nil || ed.buffer == nil {
		return nil
	}
	ed.outstanding, ed.buffer = ed.buffer, nil
	ed.seq++
	b, err := json.Marshal(map[string]any{"type": "submit", "seq": ed.seq, "base": ed.version, "op": ed.outstanding})
	if err != nil {
		return err
	}
	ed.sentAt = time.Now()
	return ed.send(string(b))
}

// edit applies a random local edit and submits or buffers it.
func (ed *editor) edit(rng *rand.Rand) error {
	n := ed.text.Len()
	var op doc.Op
	var err error
	if n > 0 && (rng.IntN(5) < 2 || n > 2000) {
		pos := rng.IntN(n)
		op, err = doc.Edit(n, pos, 1+rng.IntN(min(3, n-pos)), "")
	} else {
		op, err = doc.Edit(n, rng.IntN(n+1), 0, randWord(rng))
	}
	if err != nil {
		return err
	}
	if err := ed.apply(op); err != nil {
		return err
	}
	ed.stats.ops++
	if ed.buffer == nil {
		ed.buffer = op
	} else if ed.buffer, err = doc.Compose(ed.buffer, op); err != nil {
		return err
	}
	return ed.flush()
}

// editAlphabet mixes ASCII with two-, three- and four-byte code points.
var editAlphabet = []rune("abcdefgh ijklmnop\nqrstuvwxyz éü日本😀")

func randWord(rng *rand.Rand) string {
	var sb strings.Builder
	for range 1 + rng.IntN(4) {
		sb.WriteRune(editAlphabet[rng.IntN(len(editAlphabet))])
	}
	return sb.String()
}

func (ed *editor) apply(op doc.Op) error {
	return ed.text.Apply(op)
}

// receive handles one message from the server.
func (ed *editor) receive(m *docMsg) error {
	switch m.Type {
	case "ack":
		if ed.outstanding == nil || m.Seq != ed.seq {
			return fmt.Errorf("ack of seq %d, in flight: %d", m.Seq, ed.seq)
		}
		ed.stats.acks.add(time.Since(ed.sentAt))
		ed.outstanding = nil
		ed.version = m.Version
		return ed.flush()
	case "op":
		if m.Version != ed.version+1 {
			return fmt.Errorf("op of version %d at version %d", m.Version, ed.version)
		}
		op, err := doc.ParseOp(m.Op)
		if err != nil {
			return err
		}
		if ed.outstanding != nil {
			if ed.outstanding, op, err = doc.Transform(ed.outstanding, op, doc.Right); err != nil {
				return err
			}
		}
		if ed.buffer != nil {
			if ed.buffer, op, err = doc.Transform(ed.buffer, op, doc.Right); err != nil {
				return err
			}
		}
		ed.version = m.Version
		return ed.apply(op)
	case "doc_error":
		return fmt.Errorf("server refused a request: %s: %s", m.Code, m.Message)
	case "doc_snapshot":
		return errors.New("unexpected snapshot")
	}
	return nil
}

// runEditor joins, edits at EditRate until ctx ends, moves its cursor ten
// times a second, then finishes with the others and compares texts.
func runEditor(ctx context.Context, e *env, spec botSpec, token string, res *botResult) (err error) {
	st := res.editor
	msgs := make(chan *docMsg, 4096)
	docOpen := make(chan *webrtc.DataChannel, 1)
	curOpen := make(chan *webrtc.DataChannel, 1)
	quit := make(chan struct{}) // closed on return: unblocks OnMessage
	dialStart := time.Now()
	jctx, cancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	c, err := client.Dial(jctx, spec.urls[0], token, client.Options{
		API:    e.api,
		Logger: e.cfg.Logger,
		OnChannel: func(dc *webrtc.DataChannel) {
			switch dc.Label() {
			case protocol.ChannelDoc:
				dc.OnOpen(func() { docOpen <- dc })
				dc.OnMessage(func(m webrtc.DataChannelMessage) {
					var dm docMsg
					if json.Unmarshal(m.Data, &dm) != nil {
						dm = docMsg{Type: "doc_error", Code: "bad_message", Message: "not JSON"}
					}
					select { // the channel is reliable: never drop, wait
					case msgs <- &dm:
					case <-quit:
					}
				})
			case protocol.ChannelCursor:
				dc.OnOpen(func() { curOpen <- dc })
			}
		},
	})
	if err != nil {
		cancel()
		close(quit)
		return err
	}
	defer c.Close()
	defer close(quit) // before Close, which may wait for OnMessage
	var dc, cur *webrtc.DataChannel
	select {
	case dc = <-docOpen:
	case <-jctx.Done():
		cancel()
		return fmt.Errorf("doc channel did not open: %w", jctx.Err())
	}
	cancel()
	next := func(ctx context.Context) (*docMsg, error) {
		select {
		case m := <-msgs:
			return m, nil
		case <-c.Done():
			return nil, errors.New("the server ended the session")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	hello := func(ctx context.Context) (*docMsg, error) {
		if err := dc.SendText(`{"type":"hello","client":"` + spec.identity + "." + e.run + `"}`); err != nil {
			return nil, err
		}
		for {
			m, err := next(ctx)
			if err != nil {
				return nil, fmt.Errorf("waiting for the snapshot: %w", err)
			}
			if m.Type == "doc_snapshot" {
				return m, nil
			}
		}
	}
	sctx, scancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	sn, err := hello(sctx)
	scancel()
	if err != nil {
		return err
	}
	res.joined = true
	res.joinTime = time.Since(dialStart)
	e.progress.joined.Add(1)
	ed := &editor{send: dc.SendText, text: doc.NewText(sn.Text), version: sn.Version, stats: st}

	// Start editing together once every editor of the room has joined (or
	// failed), so that the figures are of editing, not of a join storm.
	st.joined = true
	e.ready[spec.room].arrive(0)
	wctx, wcancel := context.WithTimeout(ctx, e.cfg.JoinTimeout+e.cfg.Stagger*time.Duration(e.cfg.Editors))
	_, _ = e.ready[spec.room].wait(wctx)
	wcancel()
	for len(msgs) > 0 { // what others sent meanwhile
		if err := ed.receive(<-msgs); err != nil {
			return err
		}
	}

	// Edit until ctx ends, each editor at its own phase of the period.
	period := time.Duration(float64(time.Second) / e.cfg.EditRate)
	rng := spec.rng
	phase := time.NewTimer(time.Duration(rng.Int64N(int64(period) + 1)))
	select {
	case <-phase.C:
	case <-ctx.Done():
	}
	phase.Stop()
	editTick := time.NewTicker(period)
	defer editTick.Stop()
	curTick := time.NewTicker(100 * time.Millisecond)
	defer curTick.Stop()
editing:
	for {
		select {
		case <-ctx.Done():
			break editing
		case <-c.Done():
			return errors.New("the server ended the session")
		case m := <-msgs:
			if err := ed.receive(m); err != nil {
				return err
			}
		case <-editTick.C:
			if err := ed.edit(rng); err != nil {
				return err
			}
		case <-curTick.C:
			if cur == nil {
				select {
				case cur = <-curOpen:
				default:
					continue
				}
			}
			n := ed.text.Len()
			a, h := rng.IntN(n+1), rng.IntN(n+1)
			_ = cur.SendText(fmt.Sprintf(`{"version":%d,"anchor":%d,"head":%d}`, ed.version, a, h))
		}
	}

	// Finish: wait for the last ack, then for everyone, then catch up with
	// the highest version and compare with a fresh snapshot.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer fcancel()
	for ed.outstanding != nil || ed.buffer != nil {
		m, err := next(fctx)
		if err != nil {
			return fmt.Errorf("waiting for the last ack: %w", err)
		}
		if err := ed.receive(m); err != nil {
			return err
		}
	}
	st.arrived = true
	e.barrier(spec.room).arrive(ed.version)
	top, err := e.barrier(spec.room).wait(fctx)
	if err != nil {
		return err
	}
	for ed.version < top {
		m, err := next(fctx)
		if err != nil {
			return fmt.Errorf("catching up to version %d: %w", top, err)
		}
		if err := ed.receive(m); err != nil {
			return err
		}
	}
	st.final, st.version = ed.text.String(), ed.version
	sn, err = hello(fctx)
	if err != nil {
		return err
	}
	st.server, st.sVer, st.checked = sn.Text, sn.Version, true
	leave(ctx, c)
	return nil
}

// converged reports whether an editor's text equals the server's.
func (s *editorStats) converged() bool {
	return s.checked && s.final == s.server && s.version == s.sVer && utf8.ValidString(s.final)
}
