package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sync"
	"time"

	"github.com/huddle-rtc/huddle/rooms/doc"
	"github.com/huddle-rtc/huddle/sfu"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// The data channels the server opens on every subscribe transport.
var dataChannels = func() []sfu.DataChannelSpec {
	zero := uint16(0)
	return []sfu.DataChannelSpec{
		{Label: protocol.ChannelData},
		{Label: protocol.ChannelDoc},
		{Label: protocol.ChannelCursor, Unordered: true, MaxRetransmits: &zero, DrainedBelow: cursorBacklog / 2},
	}
}()

// docTimeout bounds one document request (a store commit included).
const docTimeout = 10 * time.Second

// docState is a participant's side of the room document: its client id in
// the engine and its sender goroutine (Document.Follow), which delivers
// acks and others' operations in version order.
type docState struct {
	docClient string // "" until hello: the participant's SID
	docCancel context.CancelFunc
	docDone   chan struct{}

	// heldCursors are the latest cursors of others (by sender SID) that
	// were not relayed to this participant while its cursor channel was
	// backed up; they go out when it drains.
	cursorMu    sync.Mutex
	heldCursors map[string][]byte
}

// document opens the room's document on first use.
func (rm *Room) document() (*doc.Document, error) {
	rm.docMu.Lock()
	defer rm.docMu.Unlock()
	if rm.doc != nil {
		return rm.doc, nil
	}
	if rm.ended {
		return nil, doc.ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), docTimeout)
	defer cancel()
	d, err := doc.Open(ctx, rm.reg.cfg.Docs, rm.name, doc.Options{})
	if err != nil {
		return nil, err
	}
	rm.doc = d
	return d, nil
}

// closeDoc closes the room's document, if it was opened.
func (rm *Room) closeDoc() {
	rm.docMu.Lock()
	d := rm.doc
	rm.doc, rm.ended = nil, true
	rm.docMu.Unlock()
	if d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), docTimeout)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		rm.reg.log.Warn("close document", "room", rm.name, "err", err)
	}
}

// docIn is any message a client sends on the doc channel.
type docIn struct {
	Type    string          `json:"type"`
	Client  string          `json:"client,omitempty"`
	Seq     uint64          `json:"seq,omitempty"`
	Base    uint64          `json:"base,omitempty"`
	Op      json.RawMessage `json:"op,omitempty"`
	Version uint64          `json:"version,omitempty"`
	From    uint64          `json:"from,omitempty"`
	To      uint64          `json:"to,omitempty"`
	// Comments and suggestions.
	Text       string `json:"text,omitempty"`
	Thread     uint64 `json:"thread,omitempty"`
	Suggestion uint64 `json:"suggestion,omitempty"`
}

// DocSnapshot is the doc_snapshot message.
type DocSnapshot struct {
	Type    string `json:"type"`
	Epoch   string `json:"epoch"`
	Version uint64 `json:"version"`
	Text    string `json:"text"`
	// Threads and open suggestions at Version.
	Threads     []doc.Thread     `json:"threads"`
	Suggestions []doc.Suggestion `json:"suggestions"`
}

// DocAck acknowledges the receiver's own committed request.
type DocAck struct {
	Type    string `json:"type"`
	Seq     uint64 `json:"seq"`
	Version uint64 `json:"version"`
}

// DocOp is a committed operation the receiver has not applied.
type DocOp struct {
	Type    string     `json:"type"`
	Version uint64     `json:"version"`
	Client  string     `json:"client"`
	Action  doc.Action `json:"action"`
	Op      doc.Op     `json:"op"`
	Seq     uint64     `json:"seq,omitempty"`
	Note    *DocNote   `json:"note,omitempty"`
}

// DocNote is what a comment or suggestion op adds (see PROTOCOL.md).
type DocNote struct {
	Thread     uint64 `json:"thread,omitempty"`
	Suggestion uint64 `json:"suggestion,omitempty"`
	From       *int   `json:"from,omitempty"`
	To         *int   `json:"to,omitempty"`
	Quote      string `json:"quote,omitempty"`
	Text       string `json:"text,omitempty"`
	Op         doc.Op `json:"op,omitempty"`
	Name       string `json:"name"`
	Time       int64  `json:"time"`
}

// noteOf returns the note of a comment, suggestion or accept entry.
func noteOf(e *doc.Entry) *DocNote {
	if e.Note == nil {
		return nil
	}
	n := &DocNote{Name: e.Note.Name, Time: e.Time.UnixMilli(), Text: e.Note.Text}
	switch e.Action {
	case doc.ActionComment:
		from, to := e.Note.From, e.Note.To
		n.Thread, n.From, n.To, n.Quote = e.Version, &from, &to, e.Note.Quote
	case doc.ActionReply, doc.ActionResolve, doc.ActionReopen:
		n.Thread = e.Ref
	case doc.ActionSuggest:
		n.Suggestion, n.Op = e.Version, e.Note.Op
	case doc.ActionReject, doc.ActionAccept:
		n.Suggestion = e.Ref
	}
	return n
}

// DocError refuses a request.
type DocError struct {
	Type     string       `json:"type"`
	Code     string       `json:"code"`
	Message  string       `json:"message"`
	Seq      uint64       `json:"seq,omitempty"`
	Request  string       `json:"request,omitempty"` // the refused comment or suggestion request's type
	LastSeq  uint64       `json:"last_seq,omitempty"`
	Snapshot *DocSnapshot `json:"snapshot,omitempty"`
}

// DocHistoryEntry is one version in a history reply.
type DocHistoryEntry struct {
	Version uint64     `json:"version"`
	Client  string     `json:"client"`
	Action  doc.Action `json:"action"`
	Ref     uint64     `json:"ref,omitempty"`
	Time    int64      `json:"time"` // Unix milliseconds
}

// DocHistory answers history.
type DocHistory struct {
	Type    string            `json:"type"`
	Entries []DocHistoryEntry `json:"entries"`
}

func (p *Participant) docSend(msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return p.peer.SendDataText(protocol.ChannelDoc, string(b))
}

func (p *Participant) docRefuse(seq uint64, err error) {
	code := string(doc.KindOf(err))
	if code == "" {
		code = protocol.CodeInternal
	}
	msg := &DocError{Type: "doc_error", Code: code, Message: err.Error(), Seq: seq}
	var be *doc.BehindError
	if errors.As(err, &be) {
		msg.LastSeq = be.LastSeq
		msg.Snapshot = snapshotMsg(be.Snapshot)
		p.follow(be.Snapshot, msg)
		return
	}
	_ = p.docSend(msg)
}

func snapshotMsg(s doc.Snapshot) *DocSnapshot {
	ts, ss := s.Threads, s.Suggestions
	if ts == nil {
		ts = []doc.Thread{}
	}
	if ss == nil {
		ss = []doc.Suggestion{}
	}
	return &DocSnapshot{Type: "doc_snapshot", Epoch: s.Epoch, Version: s.Version, Text: s.Text, Threads: ts, Suggestions: ss}
}

// clientID is the participant's id in the document engine.
func (p *Participant) clientID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.docClient == "" {
		return p.info.SID
	}
	return p.docClient
}

// stopFollowing ends the sender goroutine and waits for it.
func (p *Participant) stopFollowing() {
	p.mu.Lock()
	cancel, done := p.docCancel, p.docDone
	p.docCancel, p.docDone = nil, nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// follow (re)starts the sender goroutine: first sends first (the snapshot
// or a too_far_behind refusal that carries it), then every entry after the
// snapshot's version.
func (p *Participant) follow(sn doc.Snapshot, first any) {
	p.stopFollowing()
	d, err := p.room.document()
	if err != nil {
		p.docRefuse(0, err)
		return
	}
	if err := p.docSend(first); err != nil {
		p.log.Debug("doc send", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.mu.Lock()
	if p.left {
		p.mu.Unlock()
		cancel()
		return
	}
	p.docCancel, p.docDone = cancel, done
	p.mu.Unlock()
	me := p.clientID()
	go func() {
		defer close(done)
		err := d.Follow(ctx, sn.Version, 256, func(es []doc.Entry) error {
			for _, e := range es {
				var msg any
				if e.Client == me && e.Action == doc.ActionEdit {
					msg = &DocAck{Type: "ack", Seq: e.Seq, Version: e.Version}
				} else {
					msg = &DocOp{Type: "op", Version: e.Version, Client: e.Client, Action: e.Action, Op: e.Op, Seq: e.Seq, Note: noteOf(&e)}
				}
				if err := p.docSend(msg); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			p.log.Info("doc sender stopped; the client must send hello again", "err", err)
		}
	}()
}

// docMessage handles one message on the doc channel.
func (p *Participant) docMessage(data []byte) {
	if max := p.room.reg.cfg.MaxDataMessage; len(data) > max {
		_ = p.docSend(&DocError{Type: "doc_error", Code: protocol.CodeMessageTooLarge, Message: fmt.Sprintf("doc message is %d bytes; the limit is %d", len(data), max)})
		return
	}
	var in docIn
	if err := json.Unmarshal(data, &in); err != nil {
		_ = p.docSend(&DocError{Type: "doc_error", Code: protocol.CodeBadMessage, Message: "expected a JSON object with a type"})
		return
	}
	d, err := p.room.document()
	if err != nil {
		p.docRefuse(in.Seq, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), docTimeout)
	defer cancel()
	var res doc.Result
	switch in.Type {
	case "hello":
		if in.Client != "" {
			if len(in.Client) > 64 {
				_ = p.docSend(&DocError{Type: "doc_error", Code: protocol.CodeBadMessage, Message: "client id longer than 64 bytes"})
				return
			}
			p.mu.Lock()
			p.docClient = p.info.Identity + "/" + in.Client
			p.mu.Unlock()
		}
		sn, err := d.Snapshot(ctx)
		if err != nil {
			p.docRefuse(0, err)
			return
		}
		p.follow(sn, snapshotMsg(sn))
		return
	case "history":
		to := in.To
		if to == 0 {
			to = d.Stats().Durable
		}
		from := in.From
		if from == 0 && to > 100 {
			from = to - 99
		}
		if to >= from && to-from >= 1000 {
			from = to - 999
		}
		es, err := d.History(ctx, from, to)
		if err != nil {
			p.docRefuse(0, err)
			return
		}
		out := &DocHistory{Type: "history", Entries: make([]DocHistoryEntry, 0, len(es))}
		for _, e := range es {
			out.Entries = append(out.Entries, DocHistoryEntry{Version: e.Version, Client: e.Client, Action: e.Action, Ref: e.Ref, Time: e.Time.UnixMilli()})
		}
		_ = p.docSend(out)
		return
	case "submit", "undo", "redo", "restore":
	case "comment", "reply", "resolve", "reopen", "suggest", "accept", "reject":
		p.noteMessage(ctx, d, &in)
		return
	default:
		_ = p.docSend(&DocError{Type: "doc_error", Code: protocol.CodeBadMessage, Message: fmt.Sprintf("unknown doc message type %q", in.Type)})
		return
	}
	if !p.grants[protocol.GrantEdit] {
		_ = p.docSend(&DocError{Type: "doc_error", Code: protocol.CodePermissionDenied, Message: "token has no edit grant", Seq: in.Seq})
		return
	}
	me := p.clientID()
	switch in.Type {
	case "submit":
		op, perr := doc.ParseOp(in.Op)
		if perr != nil {
			p.docRefuse(in.Seq, perr)
			return
		}
		res, err = d.Submit(ctx, me, in.Seq, in.Base, op)
	case "undo":
		res, err = d.Undo(ctx, me, in.Seq)
	case "redo":
		res, err = d.Redo(ctx, me, in.Seq)
	case "restore":
		res, err = d.Restore(ctx, me, in.Seq, in.Version)
	}
	if err != nil {
		p.docRefuse(in.Seq, err)
		return
	}
	if res.Duplicate {
		// Committed before (typically before a reconnect): the sender
		// goroutine, which started after it, will not acknowledge it.
		_ = p.docSend(&DocAck{Type: "ack", Seq: in.Seq, Version: res.Version})
	}
}

// Cursor relays to a receiver are skipped while it has more than
// cursorBacklog bytes of cursors not yet acknowledged.
const cursorBacklog = 1024

// cursorIn is what a client sends on the cursor channel.
type cursorIn struct {
	Version uint64 `json:"version"`
	Anchor  int    `json:"anchor"`
	Head    int    `json:"head"`
}

// CursorMessage is a relayed cursor or selection.
type CursorMessage struct {
	SID      string `json:"sid"`
	Identity string `json:"identity"`
	Name     string `json:"name"`
	Color    string `json:"color"`
	Version  uint64 `json:"version"`
	Anchor   int    `json:"anchor"`
	Head     int    `json:"head"`
}

// ColorOf is the colour of identity's cursor: a hue derived from it.
func ColorOf(identity string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(identity))
	return fmt.Sprintf("hsl(%d, 70%%, 45%%)", h.Sum32()%360)
}

// cursorMessage relays a cursor to everyone else in the room; malformed
// or oversized ones are dropped (the channel is lossy anyway).
func (p *Participant) cursorMessage(data []byte) {
	if len(data) > p.room.reg.cfg.MaxDataMessage {
		return
	}
	var in cursorIn
	if err := json.Unmarshal(data, &in); err != nil || in.Anchor < 0 || in.Head < 0 {
		return
	}
	info := p.publicInfo()
	b, err := json.Marshal(&CursorMessage{SID: info.SID, Identity: info.Identity, Name: info.Name, Color: ColorOf(info.Identity), Version: in.Version, Anchor: in.Anchor, Head: in.Head})
	if err != nil {
		return
	}
	rm := p.room
	rm.mu.Lock()
	targets := make([]*Participant, 0, len(rm.participants))
	for _, o := range rm.participants {
		if o != p {
			targets = append(targets, o)
		}
	}
	rm.mu.Unlock()
	for _, o := range targets {
		// Unordered messages go out before ordered ones on the same SCTP
		// association, so a cursor backlog would delay document operations:
		// a receiver with cursors in flight skips this one (a later cursor
		// replaces it).
		if o.peer.DataBuffered(protocol.ChannelCursor) > cursorBacklog {
			o.holdCursor(info.SID, b)
			continue
		}
		_ = o.peer.SendDataText(protocol.ChannelCursor, string(b))
	}
}

// holdCursor keeps the latest cursor of sender that this participant's
// backed-up channel skipped, to send when it drains: else the sender's
// caret would stay where it was until it moved again.
func (p *Participant) holdCursor(sender string, msg []byte) {
	p.cursorMu.Lock()
	defer p.cursorMu.Unlock()
	if p.heldCursors == nil {
		p.heldCursors = map[string][]byte{}
	}
	p.heldCursors[sender] = msg
}

// DataDrained sends the cursors held back while the cursor channel was
// backed up, those of senders still in the room; it runs on the data
// channel's goroutine when the channel drains.
func (p *Participant) DataDrained(label string) {
	if label != protocol.ChannelCursor {
		return
	}
	p.cursorMu.Lock()
	held := p.heldCursors
	p.heldCursors = nil
	p.cursorMu.Unlock()
	if len(held) == 0 {
		return
	}
	rm := p.room
	for sender, msg := range held {
		rm.mu.Lock()
		_, present := rm.participants[sender]
		rm.mu.Unlock()
		if present {
			_ = p.peer.SendDataText(protocol.ChannelCursor, string(msg))
		}
	}
}

// noteMessage handles a comment or suggestion request.
func (p *Participant) noteMessage(ctx context.Context, d *doc.Document, in *docIn) {
	edit, suggest := p.grants[protocol.GrantEdit], p.grants[protocol.GrantSuggest]
	refuse := func(err error) {
		code := string(doc.KindOf(err))
		if code == "" {
			code = protocol.CodeInternal
		}
		_ = p.docSend(&DocError{Type: "doc_error", Code: code, Message: err.Error(), Seq: in.Seq, Request: in.Type})
	}
	if !edit && (!suggest || in.Type == "accept") {
		need := "edit or suggest"
		if in.Type == "accept" {
			need = "edit"
		}
		_ = p.docSend(&DocError{Type: "doc_error", Code: protocol.CodePermissionDenied, Message: "token has no " + need + " grant", Seq: in.Seq, Request: in.Type})
		return
	}
	me, name := p.clientID(), p.publicInfo().Name
	var err error
	switch in.Type {
	case "comment":
		if in.From > math.MaxInt32 || in.To > math.MaxInt32 {
			refuse(fmt.Errorf("range %d..%d: %w", in.From, in.To, doc.ErrOutOfRange))
			return
		}
		_, err = d.Comment(ctx, me, name, in.Base, int(in.From), int(in.To), in.Text)
	case "reply":
		_, err = d.Reply(ctx, me, name, in.Thread, in.Text)
	case "resolve", "reopen":
		_, err = d.Resolve(ctx, me, name, in.Thread, in.Type == "resolve")
	case "suggest":
		op, perr := doc.ParseOp(in.Op)
		if perr != nil {
			refuse(perr)
			return
		}
		_, err = d.Suggest(ctx, me, name, in.Base, op)
	case "accept":
		var res doc.Result
		res, err = d.Accept(ctx, me, name, in.Seq, in.Suggestion)
		if err == nil && res.Duplicate {
			_ = p.docSend(&DocAck{Type: "ack", Seq: in.Seq, Version: res.Version})
		}
	case "reject":
		onlyBy := ""
		if !edit {
			onlyBy = me
		}
		_, err = d.Reject(ctx, me, name, in.Suggestion, onlyBy)
	}
	if err != nil {
		refuse(err)
	}
}
