package signaling_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/rooms/doc"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// nextOp applies messages until an op arrives, and returns it.
func (p *docPeer) nextOp() map[string]json.RawMessage {
	for range 100 {
		m := p.next()
		if p.handle(m) == "op" {
			return m
		}
	}
	p.t.Fatal("no op within 100 messages")
	return nil
}

func noteField(t *testing.T, m map[string]json.RawMessage) rooms.DocNote {
	t.Helper()
	var n rooms.DocNote
	if err := json.Unmarshal(m["note"], &n); err != nil {
		t.Fatalf("note of %v: %v", m, err)
	}
	return n
}

func snapshotOf(t *testing.T, p *docPeer) rooms.DocSnapshot {
	t.Helper()
	p.send(map[string]any{"type": "hello"})
	for range 100 {
		m := p.next()
		if typ(m) == "doc_snapshot" {
			var sn rooms.DocSnapshot
			b, _ := json.Marshal(m)
			if err := json.Unmarshal(b, &sn); err != nil {
				t.Fatal(err)
			}
			p.text, p.version = sn.Text, sn.Version
			return sn
		}
	}
	t.Fatal("no snapshot")
	return rooms.DocSnapshot{}
}

// Comments and suggestions over real Pion data channels: a commenter with
// grant suggest only, an editor who accepts after concurrent edits, a
// viewer who may not comment, and a late joiner whose snapshot has it all.
func TestDocCommentsAndSuggestions(t *testing.T) {
	store := doc.NewMemStore()
	url, api := docServer(t, store)
	ed := joinDoc(t, url, api, "notes", "ada", protocol.GrantSubscribe, protocol.GrantEdit)
	sue := joinDoc(t, url, api, "notes", "sue", protocol.GrantSubscribe, protocol.GrantSuggest)
	viewer := joinDoc(t, url, api, "notes", "vic", protocol.GrantSubscribe)
	all := []*docPeer{ed, sue, viewer}

	ed.seq++
	ed.pending = doc.Op{{Insert: "hello brave world"}}
	ed.text = "hello brave world"
	ed.send(map[string]any{"type": "submit", "seq": ed.seq, "base": 0, "op": ed.pending})
	for ed.handle(ed.next()) != "ack" {
	}
	for _, p := range all {
		p.drain(1)
	}

	// Sue comments on "brave".
	sue.send(map[string]any{"type": "comment", "base": 1, "from": 6, "to": 11, "text": "which brave?"})
	var thread uint64
	for _, p := range all {
		m := p.nextOp()
		n := noteField(t, m)
		if str(t, m["action"]) != "comment" || n.Thread != 2 || n.Quote != "brave" || *n.From != 6 || *n.To != 11 || n.Name != "sue" || n.Text != "which brave?" {
			t.Fatalf("comment as seen: %v", m)
		}
		thread = n.Thread
	}
	// The viewer may not comment; the refusal names the request.
	viewer.send(map[string]any{"type": "comment", "base": 2, "from": 0, "to": 1, "text": "x"})
	if m := viewer.next(); typ(m) != "doc_error" || str(t, m["code"]) != protocol.CodePermissionDenied || str(t, m["request"]) != "comment" {
		t.Fatalf("viewer comment: %v", m)
	}

	// Sue suggests "very " before "brave" against version 2 while Ada,
	// not having seen it, prepends ">> " (version 3 or 4).
	sue.send(map[string]any{"type": "suggest", "base": 2, "op": []any{6, "very ", 11}})
	ed.seq++
	ed.pending = doc.Op{{Insert: ">> "}, {Retain: 17}}
	ed.text = ">> " + ed.text
	ed.send(map[string]any{"type": "submit", "seq": ed.seq, "base": ed.version, "op": ed.pending})
	var suggestion uint64
	for ed.pending != nil || suggestion == 0 {
		m := ed.next()
		if ed.handle(m) == "op" && str(t, m["action"]) == "suggest" {
			suggestion = noteField(t, m).Suggestion
		}
	}
	for _, p := range []*docPeer{sue, viewer} {
		p.drain(4)
	}
	// Sue may not accept her own suggestion.
	sue.send(map[string]any{"type": "accept", "seq": 1, "suggestion": suggestion})
	if m := sue.next(); typ(m) != "doc_error" || str(t, m["code"]) != protocol.CodePermissionDenied {
		t.Fatalf("accept without edit: %v", m)
	}
	ed.seq++
	ed.send(map[string]any{"type": "accept", "seq": ed.seq, "suggestion": suggestion})
	for _, p := range all {
		m := p.nextOp()
		if str(t, m["action"]) != "accept" || noteField(t, m).Suggestion != suggestion || num(t, m["version"]) != 5 {
			t.Fatalf("accept as seen: %v", m)
		}
		if p.text != ">> hello very brave world" {
			t.Fatalf("text after accept %q", p.text)
		}
	}
	// A reply and a resolve, then a late joiner's snapshot has the thread,
	// moved, and no open suggestion.
	sue.send(map[string]any{"type": "reply", "thread": thread, "text": "the very one"})
	ed.send(map[string]any{"type": "resolve", "thread": thread})
	for _, p := range all {
		p.drain(7)
	}
	late := joinDoc(t, url, api, "notes", "lee", protocol.GrantSubscribe)
	sn := snapshotOf(t, late)
	if sn.Text != ">> hello very brave world" || len(sn.Suggestions) != 0 || len(sn.Threads) != 1 {
		t.Fatalf("late snapshot %+v", sn)
	}
	th := sn.Threads[0]
	if got := string([]rune(sn.Text)[th.From:th.To]); got != "brave" || !th.Resolved || th.Orphaned || len(th.Comments) != 2 || th.Comments[1].Text != "the very one" {
		t.Fatalf("thread %+v holds %q", th, got)
	}

	// Deleting the whole range orphans the thread; a rejected suggestion
	// is gone; the state outlives the room in the store.
	ed.seq++
	ed.pending = doc.Op{{Retain: 14}, {Delete: 5}, {Retain: 6}}
	ed.text = ">> hello very  world"
	ed.send(map[string]any{"type": "submit", "seq": ed.seq, "base": ed.version, "op": ed.pending})
	for ed.handle(ed.next()) != "ack" {
	}
	sue.drain(ed.version)
	sue.send(map[string]any{"type": "suggest", "base": sue.version, "op": []any{20, "!"}})
	m := sue.nextOp()
	s2 := noteField(t, m).Suggestion
	ed.drain(sue.version)
	ed.send(map[string]any{"type": "reject", "suggestion": s2})
	if m := ed.nextOp(); str(t, m["action"]) != "reject" {
		t.Fatalf("reject: %v", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := doc.Open(ctx, store, "notes", doc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts, ss := d.Threads()
	if len(ts) != 1 || !ts[0].Orphaned || ts[0].Quote != "brave" || len(ss) != 0 {
		t.Fatalf("reopened: threads %+v, suggestions %+v", ts, ss)
	}
	sn = snapshotOf(t, late)
	if !sn.Threads[0].Orphaned || sn.Text != ">> hello very  world" {
		t.Fatalf("snapshot after delete: %+v", sn)
	}
}
