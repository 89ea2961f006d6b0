package bots

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/huddle-rtc/huddle/rooms/doc"
)

// TestEditorStateMachineConverges drives editors against a Document in
// memory, delivering each editor's server messages after random delays
// (in order, as the channel does), and checks that all end with the
// server's text.
func TestEditorStateMachineConverges(t *testing.T) {
	ctx := context.Background()
	d, err := doc.Open(ctx, doc.NewMemStore(), "t", doc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 4
	type peer struct {
		ed    *editor
		out   []string  // sent, not yet handled by the server
		in    []*docMsg // from the server, not yet delivered
		after uint64    // the server's entries already queued to in
		id    string
	}
	peers := make([]*peer, n)
	for i := range peers {
		p := &peer{id: string(rune('a' + i))}
		p.ed = &editor{send: func(s string) error { p.out = append(p.out, s); return nil },
			text: doc.NewText(""), stats: &editorStats{acks: &histogram{}}}
		peers[i] = p
	}
	// server handles one request of p and queues the entries that follow.
	server := func(p *peer) {
		if len(p.out) > 0 {
			var req struct {
				Seq, Base uint64
				Op        doc.Op
			}
			if err := json.Unmarshal([]byte(p.out[0]), &req); err != nil {
				t.Fatal(err)
			}
			p.out = p.out[1:]
			if _, err := d.Submit(ctx, p.id, req.Seq, req.Base, req.Op); err != nil {
				t.Fatal(err)
			}
		}
		for _, q := range peers {
			es, err := d.Since(ctx, q.after, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if e.Client == q.id {
					q.in = append(q.in, &docMsg{Type: "ack", Seq: e.Seq, Version: e.Version})
				} else {
					b, _ := json.Marshal(e.Op)
					q.in = append(q.in, &docMsg{Type: "op", Version: e.Version, Op: b})
				}
				q.after = e.Version
			}
		}
	}
	for range 3000 {
		p := peers[rng.IntN(n)]
		switch rng.IntN(3) {
		case 0:
			if err := p.ed.edit(rng); err != nil {
				t.Fatal(err)
			}
		case 1:
			server(p)
		default:
			if len(p.in) > 0 {
				m := p.in[0]
				p.in = p.in[1:]
				if err := p.ed.receive(m); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Drain: everything sent reaches the server, everything back arrives.
	for busy := true; busy; {
		busy = false
		for _, p := range peers {
			for len(p.out) > 0 || len(p.in) > 0 {
				busy = true
				server(p)
				for len(p.in) > 0 {
					m := p.in[0]
					p.in = p.in[1:]
					if err := p.ed.receive(m); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	sn, err := d.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sn.Version < 100 {
		t.Fatalf("only %d versions", sn.Version)
	}
	for _, p := range peers {
		if p.ed.outstanding != nil || p.ed.buffer != nil || p.ed.version != sn.Version || p.ed.text.String() != sn.Text {
			t.Fatalf("editor %s at %d with %q, server at %d with %q", p.id, p.ed.version, p.ed.text.String(), sn.Version, sn.Text)
		}
	}
}
