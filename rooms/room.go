// Package rooms owns the room registry and each room's state: who is in
// it, which tracks are published, who receives what, the relay of data
// messages, and the lifecycle (a room exists while someone is in it).
// It drives the sfu package and speaks to clients through a Sink; the
// signaling package owns the wire.
package rooms

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/huddle-rtc/huddle/rooms/doc"
	"github.com/huddle-rtc/huddle/rooms/events"
	"github.com/huddle-rtc/huddle/sfu"
	"github.com/huddle-rtc/huddle/signaling/protocol"
	"github.com/pion/webrtc/v4"
)

// Sink delivers messages to one client. Send must not block: the
// signaling layer queues and drops a client that cannot keep up.
type Sink interface {
	Send(msg any)
	// Close ends the client's connection after queued messages are sent.
	Close()
}

// Config sets up a Registry.
type Config struct {
	Engine          *sfu.Engine
	Logger          *slog.Logger
	MaxParticipants int // per room; 0 means 200
	MaxDataMessage  int // bytes; 0 means 16 KiB
	ICEServers      []protocol.ICEServer
	Version         string
	// Docs keeps the rooms' documents; nil means an in-memory store.
	Docs doc.Store
	// Events receives room, participant and track events; nil means a
	// new bus of events.DefaultCapacity.
	Events *events.Bus
	// ICEServersFor, when set, adds servers for one participant to
	// ICEServers (the embedded TURN server's credential for its identity).
	ICEServersFor func(identity string) []protocol.ICEServer
}

// Registry holds the rooms of this node.
type Registry struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	rooms map[string]*Room

	quality latestQuality // per participant SID, for the admin API

	retiredPackets atomic.Uint64
	retiredBytes   atomic.Uint64
	wg             sync.WaitGroup
}

// NewRegistry returns an empty registry.
func NewRegistry(cfg Config) *Registry {
	if cfg.MaxParticipants == 0 {
		cfg.MaxParticipants = 200
	}
	if cfg.MaxDataMessage == 0 {
		cfg.MaxDataMessage = 16 << 10
	}
	if cfg.Docs == nil {
		cfg.Docs = doc.NewMemStore()
	}
	if cfg.Events == nil {
		cfg.Events = events.New(0)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Registry{cfg: cfg, log: log, rooms: map[string]*Room{}}
}

// Room is one room's state.
type Room struct {
	name string
	reg  *Registry

	mu           sync.Mutex
	participants map[string]*Participant // by SID
	tracks       map[string]*track       // by SID

	created     time.Time
	qualityQuit chan struct{} // closed when the room ends: stops its quality reports
	qualityMu   sync.Mutex
	latest      map[string]protocol.Quality // by participant SID

	docMu sync.Mutex
	doc   *doc.Document // opened on first use, closed when the room ends
	ended bool          // the room was dropped: its document stays closed
}

type track struct {
	info  protocol.Track
	up    *sfu.UpTrack
	owner *Participant
}

// Participant is one session in a room.
type Participant struct {
	room    *Room
	info    protocol.Participant
	grants  map[string]bool
	autoSub bool
	sink    Sink
	peer    *sfu.Peer
	log     *slog.Logger

	mu       sync.Mutex
	left     bool
	expected map[string]string // publish: cid → track SID, until media arrives

	docState
}

// JoinRequest is a verified request to enter a room.
type JoinRequest struct {
	Room          string
	Identity      string
	Name          string
	Metadata      string
	Grants        []string
	AutoSubscribe bool
}

// Stats are the registry's gauges and counters.
type Stats struct {
	Rooms, Participants, Tracks int
	ForwardedPackets            uint64
	ForwardedBytes              uint64
}

// Stats counts rooms, participants and tracks and sums the forwarded
// traffic of live and ended tracks.
func (r *Registry) Stats() Stats {
	s := Stats{ForwardedPackets: r.retiredPackets.Load(), ForwardedBytes: r.retiredBytes.Load()}
	r.mu.Lock()
	rooms := make([]*Room, 0, len(r.rooms))
	for _, rm := range r.rooms {
		rooms = append(rooms, rm)
	}
	r.mu.Unlock()
	s.Rooms = len(rooms)
	for _, rm := range rooms {
		rm.mu.Lock()
		s.Participants += len(rm.participants)
		s.Tracks += len(rm.tracks)
		for _, t := range rm.tracks {
			_, _, p, b := t.up.Stats()
			s.ForwardedPackets += p
			s.ForwardedBytes += b
		}
		rm.mu.Unlock()
	}
	return s
}

func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])[:12]
}

// Join admits a participant: it creates its transports, tells the room,
// and returns the joined message to send. The caller sends it, then calls
// Start.
func (r *Registry) Join(req JoinRequest, sink Sink) (*Participant, *protocol.Joined, error) {
	p := &Participant{
		info: protocol.Participant{
			SID:      newID("PA_"),
			Identity: req.Identity,
			Name:     req.Name,
			Metadata: req.Metadata,
			JoinedAt: time.Now().UnixMilli(),
			Grants:   req.Grants,
		},
		grants:   map[string]bool{},
		autoSub:  req.AutoSubscribe,
		sink:     sink,
		expected: map[string]string{},
	}
	for _, g := range req.Grants {
		p.grants[g] = true
	}
	p.log = r.log.With("room", req.Room, "participant", p.info.SID, "identity", req.Identity)
	peer, err := sfu.NewPeer(r.cfg.Engine, p.info.SID, p, dataChannels)
	if err != nil {
		return nil, nil, &protocol.Error{Code: protocol.CodeInternal, Message: "cannot create transports"}
	}
	p.peer = peer
	// A refused join closes its transports after the room's lock is
	// released (this defer runs after the unlock deferred below), and
	// before Join returns, so no goroutine outlives it.
	var refused *sfu.Peer
	defer func() {
		if refused != nil {
			_ = refused.Close()
		}
	}()

	r.mu.Lock()
	rm := r.rooms[req.Room]
	if rm == nil {
		rm = &Room{name: req.Room, reg: r, participants: map[string]*Participant{}, tracks: map[string]*track{}, created: time.Now()}
		r.rooms[req.Room] = rm
		r.emit(events.RoomStarted, req.Room, roomEvent{Room: req.Room})
		rm.startQuality()
	}
	rm.mu.Lock()
	r.mu.Unlock()
	defer rm.mu.Unlock()
	if len(rm.participants) >= r.cfg.MaxParticipants {
		refused = peer
		return nil, nil, &protocol.Error{Code: protocol.CodeRoomFull, Message: fmt.Sprintf("room %q has %d participants, the maximum", req.Room, len(rm.participants))}
	}
	p.room = rm
	joined := &protocol.Joined{
		Envelope:       protocol.Envelope{Type: protocol.TypeJoined},
		Room:           req.Room,
		You:            p.info,
		Participants:   []protocol.Participant{},
		Tracks:         []protocol.Track{},
		ICEServers:     r.cfg.ICEServers,
		Server:         protocol.ServerInfo{Version: r.cfg.Version, Protocol: protocol.Version},
		MaxDataMessage: r.cfg.MaxDataMessage,
	}
	if r.cfg.ICEServersFor != nil {
		joined.ICEServers = append(slices.Clone(r.cfg.ICEServers), r.cfg.ICEServersFor(req.Identity)...)
	}
	if joined.ICEServers == nil {
		joined.ICEServers = []protocol.ICEServer{}
	}
	for _, o := range rm.participants {
		joined.Participants = append(joined.Participants, o.publicInfo())
		o.sink.Send(&protocol.ParticipantEvent{Envelope: protocol.Envelope{Type: protocol.TypeParticipantJoined}, Participant: p.publicInfo()})
	}
	for _, t := range rm.tracks {
		joined.Tracks = append(joined.Tracks, t.info)
	}
	rm.participants[p.info.SID] = p
	r.emit(events.ParticipantJoined, req.Room, p.publicInfo())
	return p, joined, nil
}

// publicInfo is what others see of p (no grants).
func (p *Participant) publicInfo() protocol.Participant {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := p.info
	i.Grants = nil
	return i
}

// Start sends the first subscribe offer (data channels and every track
// the participant receives). Call after the joined message went out.
func (p *Participant) Start() {
	rm := p.room
	rm.mu.Lock()
	var ups []*sfu.UpTrack
	if p.autoSub && p.grants[protocol.GrantSubscribe] {
		for _, t := range rm.tracks {
			ups = append(ups, t.up)
		}
	}
	rm.mu.Unlock()
	for _, up := range ups {
		if _, err := p.peer.Subscribe(up); err != nil {
			p.log.Warn("subscribe", "track", up.Info().SID, "err", err)
		}
	}
	p.peer.Negotiate()
}

// SID returns the participant's session id.
func (p *Participant) SID() string { return p.info.SID }

// Peer returns the participant's transports.
func (p *Participant) Peer() *sfu.Peer { return p.peer }

func errorf(code, format string, args ...any) *protocol.Error {
	return &protocol.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// PublishOffer handles a publish offer and returns the answer.
func (p *Participant) PublishOffer(msg *protocol.SessionDescription) (*protocol.SessionDescription, error) {
	if !p.grants[protocol.GrantPublish] {
		return nil, errorf(protocol.CodePermissionDenied, "token has no publish grant")
	}
	if len(msg.Tracks) > 16 {
		return nil, errorf(protocol.CodeBadMessage, "at most 16 tracks per offer")
	}
	infos := map[string]sfu.TrackInfo{}
	var mapping []protocol.TrackMapping
	published := p.publishedByCID()
	p.mu.Lock()
	for _, t := range msg.Tracks {
		if t.CID == "" || (t.Kind != protocol.KindAudio && t.Kind != protocol.KindVideo) {
			p.mu.Unlock()
			return nil, errorf(protocol.CodeBadMessage, "each track needs a cid and a kind of audio or video")
		}
		sid, ok := p.expected[t.CID]
		if !ok {
			sid = published[t.CID]
		}
		if sid == "" {
			sid = newID("TR_")
			p.expected[t.CID] = sid
		}
		source := t.Source
		if source == "" {
			source = protocol.SourceCamera
			if t.Kind == protocol.KindAudio {
				source = protocol.SourceMicrophone
			}
		}
		infos[t.CID] = sfu.TrackInfo{SID: sid, CID: t.CID, Participant: p.info.SID, Identity: p.info.Identity, Source: source}
		mapping = append(mapping, protocol.TrackMapping{CID: t.CID, SID: sid})
	}
	p.mu.Unlock()
	answer, err := p.peer.HandlePublishOffer(msg.SDP, infos)
	if err != nil {
		return nil, errorf(protocol.CodeBadSDP, "%v", err)
	}
	return &protocol.SessionDescription{
		Envelope:  protocol.Envelope{Type: protocol.TypeAnswer, ID: msg.ID},
		Transport: protocol.TransportPublish,
		SDP:       answer,
		Published: mapping,
	}, nil
}

// publishedByCID maps the client ids of p's published tracks to SIDs.
func (p *Participant) publishedByCID() map[string]string {
	rm := p.room
	rm.mu.Lock()
	defer rm.mu.Unlock()
	out := map[string]string{}
	for sid, t := range rm.tracks {
		if t.owner == p {
			out[t.up.Info().CID] = sid
		}
	}
	return out
}

// SubscribeAnswer applies the client's answer to the last subscribe offer.
func (p *Participant) SubscribeAnswer(sdp string) error {
	if err := p.peer.HandleSubscribeAnswer(sdp); err != nil {
		return errorf(protocol.CodeBadSDP, "%v", err)
	}
	return nil
}

// Candidate applies a remote ICE candidate.
func (p *Participant) Candidate(transport string, c *protocol.ICECandidate) error {
	if c == nil {
		return nil // end of candidates
	}
	init := webrtc.ICECandidateInit{Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex, UsernameFragment: c.UsernameFragment}
	if err := p.peer.AddCandidate(transport, init); err != nil {
		return errorf(protocol.CodeBadSDP, "%v", err)
	}
	return nil
}

// Subscribe subscribes to tracks; unknown ones are reported.
func (p *Participant) Subscribe(sids []string) error {
	return p.SubscribeWith(sids, SubscribeOptions{})
}

// SubscribeOptions are what a subscriber wants of video tracks; a zero
// field keeps what was asked before.
type SubscribeOptions struct {
	// Quality (q, h, f) is the highest simulcast layer wanted.
	Quality string
	// Paused stops or resumes the video for now.
	Paused *bool
	// MaxWidth and MaxHeight are the size the video is shown at (0: any);
	// either one set sets both.
	MaxWidth, MaxHeight *int
}

// maxVideoSide bounds a requested video size (8K is 7680).
const maxVideoSide = 16384

// SubscribeWith subscribes to tracks, or changes existing subscriptions
// (see SubscribeOptions).
func (p *Participant) SubscribeWith(sids []string, opts SubscribeOptions) error {
	if !p.grants[protocol.GrantSubscribe] {
		return errorf(protocol.CodePermissionDenied, "token has no subscribe grant")
	}
	layer := -1
	if opts.Quality != "" {
		if layer = sfu.LayerByName(opts.Quality); layer < 0 {
			return errorf(protocol.CodeBadMessage, "quality must be q, h or f, not %q", opts.Quality)
		}
	}
	sizeSet := opts.MaxWidth != nil || opts.MaxHeight != nil
	var width, height int
	if opts.MaxWidth != nil {
		width = *opts.MaxWidth
	}
	if opts.MaxHeight != nil {
		height = *opts.MaxHeight
	}
	if width < 0 || height < 0 || width > maxVideoSide || height > maxVideoSide {
		return errorf(protocol.CodeBadMessage, "max_width and max_height must be 0 to %d, not %dx%d", maxVideoSide, width, height)
	}
	paused := opts.Paused
	var missing []string
	for _, sid := range sids {
		t := p.room.track(sid)
		switch {
		case t == nil:
			missing = append(missing, sid)
		case t.owner == p:
			return errorf(protocol.CodeBadMessage, "cannot subscribe to one's own track %s", sid)
		default:
			d, err := p.peer.Subscribe(t.up)
			if errors.Is(err, sfu.ErrUnpublished) {
				missing = append(missing, sid)
			} else if err != nil {
				return errorf(protocol.CodeInternal, "subscribe %s: %v", sid, err)
			}
			if d != nil && layer >= 0 {
				d.SetMaxLayer(layer)
			}
			if d != nil && sizeSet {
				d.SetMaxSize(width, height)
			}
			if d != nil && paused != nil && t.info.Kind == protocol.KindVideo {
				d.SetPaused(*paused)
			}
		}
	}
	if len(missing) > 0 {
		return errorf(protocol.CodeUnknownTrack, "no such tracks: %v", missing)
	}
	return nil
}

// Unsubscribe stops receiving tracks.
func (p *Participant) Unsubscribe(sids []string) error {
	var missing []string
	for _, sid := range sids {
		if !p.peer.Unsubscribe(sid) {
			missing = append(missing, sid)
		}
	}
	if len(missing) > 0 {
		return errorf(protocol.CodeUnknownTrack, "not subscribed to: %v", missing)
	}
	return nil
}

// Mute mutes or unmutes one of the participant's tracks.
func (p *Participant) Mute(sid string, muted bool) error {
	rm := p.room
	rm.mu.Lock()
	t := rm.tracks[sid]
	if t == nil || t.owner != p {
		rm.mu.Unlock()
		return errorf(protocol.CodeUnknownTrack, "no track %s of yours", sid)
	}
	t.info.Muted = muted
	t.up.SetMuted(muted)
	rm.broadcastLocked(&protocol.TrackMuted{Envelope: protocol.Envelope{Type: protocol.TypeTrackMuted}, Track: sid, Participant: p.info.SID, Muted: muted})
	rm.mu.Unlock()
	rm.reg.emit(events.TrackMuted, rm.name, t.info)
	return nil
}

// Unpublish removes one of the participant's tracks.
func (p *Participant) Unpublish(sid string) error {
	t := p.room.track(sid)
	if t == nil || t.owner != p {
		return errorf(protocol.CodeUnknownTrack, "no track %s of yours", sid)
	}
	p.room.removeTrack(sid)
	p.peer.Unpublish(sid)
	return nil
}

// Update changes the participant's name or metadata.
func (p *Participant) Update(name, metadata *string) error {
	p.mu.Lock()
	if name != nil {
		if len(*name) > 256 {
			p.mu.Unlock()
			return errorf(protocol.CodeBadMessage, "name longer than 256 bytes")
		}
		p.info.Name = *name
	}
	if metadata != nil {
		if len(*metadata) > 4096 {
			p.mu.Unlock()
			return errorf(protocol.CodeBadMessage, "metadata longer than 4096 bytes")
		}
		p.info.Metadata = *metadata
	}
	p.mu.Unlock()
	info := p.publicInfo()
	rm := p.room
	rm.mu.Lock()
	rm.broadcastLocked(&protocol.ParticipantEvent{Envelope: protocol.Envelope{Type: protocol.TypeParticipantUpdated}, Participant: info})
	rm.mu.Unlock()
	rm.reg.emit(events.ParticipantUpdated, rm.name, info)
	return nil
}

// Leave removes the participant: its tracks leave every subscriber, the
// room is told, its transports close. Safe to call more than once.
func (p *Participant) Leave(reason string) {
	p.mu.Lock()
	if p.left {
		p.mu.Unlock()
		return
	}
	p.left = true
	p.mu.Unlock()
	rm := p.room
	rm.mu.Lock()
	var own []string
	for sid, t := range rm.tracks {
		if t.owner == p {
			own = append(own, sid)
		}
	}
	rm.mu.Unlock()
	for _, sid := range own {
		rm.removeTrack(sid)
	}
	rm.mu.Lock()
	delete(rm.participants, p.info.SID)
	rm.broadcastLocked(&protocol.ParticipantLeft{Envelope: protocol.Envelope{Type: protocol.TypeParticipantLeft}, SID: p.info.SID, Identity: p.info.Identity, Reason: reason})
	empty := len(rm.participants) == 0
	rm.mu.Unlock()
	rm.reg.quality.forget(p.info.SID)
	rm.reg.emit(events.ParticipantLeft, rm.name, participantLeft{SID: p.info.SID, Identity: p.info.Identity, Reason: reason})
	p.stopFollowing()
	if err := p.peer.Close(); err != nil {
		p.log.Debug("close transports", "err", err)
	}
	if empty {
		rm.reg.dropIfEmpty(rm)
	}
	p.log.Info("left", "reason", reason)
}

func (r *Registry) dropIfEmpty(rm *Room) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm.mu.Lock()
	drop := len(rm.participants) == 0 && r.rooms[rm.name] == rm
	if drop {
		delete(r.rooms, rm.name)
		r.emit(events.RoomClosed, rm.name, roomEvent{Room: rm.name})
	}
	rm.mu.Unlock()
	if drop {
		rm.stopQuality()
		// Under r.mu, so that a new room of the same name cannot open the
		// document while this one still writes it.
		rm.closeDoc()
	}
}

func (rm *Room) track(sid string) *track {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return rm.tracks[sid]
}

// broadcastLocked sends msg to every participant.
func (rm *Room) broadcastLocked(msg any) {
	for _, o := range rm.participants {
		o.sink.Send(msg)
	}
}

// removeTrack unpublishes a track: every subscriber drops it and the room
// is told.
func (rm *Room) removeTrack(sid string) {
	rm.mu.Lock()
	t := rm.tracks[sid]
	if t == nil {
		rm.mu.Unlock()
		return
	}
	delete(rm.tracks, sid)
	t.up.Retire()
	subs := make([]*Participant, 0, len(rm.participants))
	for _, o := range rm.participants {
		if o != t.owner {
			subs = append(subs, o)
		}
	}
	rm.broadcastLocked(&protocol.TrackUnpublished{Envelope: protocol.Envelope{Type: protocol.TypeTrackUnpublished}, Track: sid, Participant: t.info.Participant})
	rm.mu.Unlock()
	rm.reg.emit(events.TrackUnpublished, rm.name, t.info)
	for _, o := range subs {
		o.peer.Unsubscribe(sid)
	}
	_, _, pk, b := t.up.Stats()
	rm.reg.retiredPackets.Add(pk)
	rm.reg.retiredBytes.Add(b)
}

// The sfu.PeerEvents of a participant.

// SubscribeOffer implements sfu.PeerEvents.
func (p *Participant) SubscribeOffer(sdp string, mids map[string]string) {
	p.sink.Send(&protocol.SessionDescription{Envelope: protocol.Envelope{Type: protocol.TypeOffer}, Transport: protocol.TransportSubscribe, SDP: sdp, Mids: mids})
}

// LocalCandidate implements sfu.PeerEvents.
func (p *Participant) LocalCandidate(transport string, c *webrtc.ICECandidateInit) {
	msg := &protocol.Candidate{Envelope: protocol.Envelope{Type: protocol.TypeCandidate}, Transport: transport}
	if c != nil {
		msg.Candidate = &protocol.ICECandidate{Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex, UsernameFragment: c.UsernameFragment}
	}
	p.sink.Send(msg)
}

// TrackPublished implements sfu.PeerEvents: the track joins the room and
// every auto-subscribed participant receives it.
func (p *Participant) TrackPublished(up *sfu.UpTrack) {
	info := up.Info()
	p.mu.Lock()
	for cid, sid := range p.expected {
		if sid == info.SID {
			delete(p.expected, cid)
		}
	}
	left := p.left
	p.mu.Unlock()
	if left {
		return
	}
	kind := protocol.KindVideo
	if info.Kind == webrtc.RTPCodecTypeAudio {
		kind = protocol.KindAudio
	}
	t := &track{
		info: protocol.Track{SID: info.SID, Participant: info.Participant, Identity: info.Identity, Kind: kind, Source: info.Source, Codec: info.Codec.MimeType},
		up:   up, owner: p,
	}
	rm := p.room
	rm.mu.Lock()
	rm.tracks[info.SID] = t
	rm.broadcastLocked(&protocol.TrackPublished{Envelope: protocol.Envelope{Type: protocol.TypeTrackPublished}, Track: t.info})
	rm.reg.emit(events.TrackPublished, rm.name, t.info)
	var subs []*Participant
	for _, o := range rm.participants {
		if o != p && o.autoSub && o.grants[protocol.GrantSubscribe] {
			subs = append(subs, o)
		}
	}
	rm.mu.Unlock()
	for _, o := range subs {
		if _, err := o.peer.Subscribe(up); err != nil {
			o.log.Debug("auto-subscribe", "track", info.SID, "err", err)
		}
	}
	// When the publisher's track ends, it leaves the room.
	rm.reg.wg.Add(1)
	go func() {
		defer rm.reg.wg.Done()
		<-up.Done()
		rm.removeTrack(info.SID)
	}()
	p.log.Info("track published", "track", info.SID, "kind", kind, "codec", info.Codec.MimeType)
}

// DataMessage implements sfu.PeerEvents: it relays a data message.
func (p *Participant) DataMessage(label string, data []byte) {
	switch label {
	case protocol.ChannelDoc:
		p.docMessage(data)
		return
	case protocol.ChannelCursor:
		p.cursorMessage(data)
		return
	case protocol.ChannelData:
	default:
		return
	}
	reply := func(code, format string, args ...any) {
		b, _ := json.Marshal(protocol.DataMessage{Type: "error", Code: code, Message: fmt.Sprintf(format, args...)})
		_ = p.peer.SendDataText(label, string(b))
	}
	max := p.room.reg.cfg.MaxDataMessage
	if len(data) > max {
		reply(protocol.CodeMessageTooLarge, "data message is %d bytes; the limit is %d", len(data), max)
		return
	}
	if !p.grants[protocol.GrantData] {
		reply(protocol.CodePermissionDenied, "token has no data grant")
		return
	}
	var in protocol.DataSend
	if err := json.Unmarshal(data, &in); err != nil || len(in.Data) == 0 {
		reply(protocol.CodeBadMessage, "expected {\"to\": [...], \"data\": ...}")
		return
	}
	out, err := json.Marshal(protocol.DataMessage{Type: "message", From: p.info.Identity, SID: p.info.SID, Data: in.Data})
	if err != nil {
		reply(protocol.CodeBadMessage, "data is not valid JSON")
		return
	}
	rm := p.room
	rm.mu.Lock()
	var targets []*Participant
	for _, o := range rm.participants {
		if o == p {
			continue
		}
		if len(in.To) == 0 || slices.Contains(in.To, o.info.Identity) {
			targets = append(targets, o)
		}
	}
	rm.mu.Unlock()
	for _, o := range targets {
		if err := o.peer.SendDataText(label, string(out)); err != nil {
			o.log.Debug("data relay", "err", err)
		}
	}
}

// TransportFailed implements sfu.PeerEvents: a dead transport ends the
// session.
func (p *Participant) TransportFailed(transport string, err error) {
	p.log.Info("transport failed", "transport", transport, "err", err)
	reg := p.room.reg
	reg.wg.Add(1)
	go func() {
		defer reg.wg.Done()
		p.sink.Close()
		p.Leave("disconnected")
	}()
}

// Close ends every session (telling each client why) and waits for the
// registry's goroutines.
func (r *Registry) Close(reason string) {
	r.mu.Lock()
	var all []*Participant
	for _, rm := range r.rooms {
		rm.mu.Lock()
		for _, p := range rm.participants {
			all = append(all, p)
		}
		rm.mu.Unlock()
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.sink.Send(&protocol.Bye{Envelope: protocol.Envelope{Type: protocol.TypeBye}, Reason: reason})
			p.Leave(reason)
			p.sink.Close()
		}()
	}
	wg.Wait()
	r.wg.Wait()
}
