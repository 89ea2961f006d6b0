package sfu

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Transport names, as in the signaling protocol.
const (
	TransportPublish   = "publish"
	TransportSubscribe = "subscribe"
)

// maxDataBuffered is how many bytes may wait in one data channel before
// further messages to that receiver are dropped (a slow receiver must not
// grow the server's memory without bound).
const maxDataBuffered = 4 << 20

// Errors of Peer methods.
var (
	ErrClosed      = errors.New("sfu: peer closed")
	ErrUnpublished = errors.New("sfu: track was unpublished")
)

// PeerEvents is what a Peer tells its owner. Methods may be called from
// Pion's goroutines and must not block for long.
type PeerEvents interface {
	// SubscribeOffer must deliver a server offer to the client.
	SubscribeOffer(sdp string, mids map[string]string)
	// LocalCandidate must deliver a local ICE candidate (nil: the end).
	LocalCandidate(transport string, c *webrtc.ICECandidateInit)
	// TrackPublished reports that media of an announced track arrived.
	TrackPublished(up *UpTrack)
	// DataMessage reports a message the client sent on a data channel.
	DataMessage(label string, data []byte)
	// TransportFailed reports that ICE or DTLS failed for good.
	TransportFailed(transport string, err error)
}

// DataChannelSpec describes one data channel the server opens on the
// subscribe transport.
type DataChannelSpec struct {
	Label          string
	Unordered      bool
	MaxRetransmits *uint16
	// DrainedBelow, when set, makes the peer tell PeerEvents that
	// implement DrainEvents each time the bytes sent on this channel and
	// not yet acknowledged fall to this level or below.
	DrainedBelow uint64
}

// DrainEvents is implemented by PeerEvents that want to know when a
// channel's send buffer drained (see DataChannelSpec.DrainedBelow), to
// send what they held back while it was full.
type DrainEvents interface {
	DataDrained(label string)
}

// Peer is one participant's two transports.
type Peer struct {
	engine *Engine
	id     string
	events PeerEvents
	log    *slog.Logger

	sub      *webrtc.PeerConnection
	channels map[string]*dataChannel

	mu             sync.Mutex
	pub            *webrtc.PeerConnection
	expected       map[string]TrackInfo // publish: msid track id → info
	layered        map[string]*UpTrack  // simulcast tracks by msid track id
	ups            map[string]*UpTrack  // published by this peer, by SID
	downs          map[string]*subscription
	awaitingAnswer bool
	pendingOffer   bool
	pendingCands   map[string][]webrtc.ICECandidateInit
	closed         bool

	down      downlink
	quit      chan struct{} // closed by Close: stops the allocator
	keyframes chan keyframeRequest

	wg sync.WaitGroup
}

type subscription struct {
	down   *DownTrack
	sender *webrtc.RTPSender
}

// NewPeer creates the participant's subscribe transport and its data
// channels. Call Negotiate to send the first offer.
func NewPeer(e *Engine, id string, events PeerEvents, channels []DataChannelSpec) (*Peer, error) {
	p := &Peer{
		engine:       e,
		id:           id,
		events:       events,
		log:          e.log.With("peer", id),
		channels:     map[string]*dataChannel{},
		expected:     map[string]TrackInfo{},
		layered:      map[string]*UpTrack{},
		ups:          map[string]*UpTrack{},
		downs:        map[string]*subscription{},
		pendingCands: map[string][]webrtc.ICECandidateInit{},
		quit:         make(chan struct{}),
		keyframes:    make(chan keyframeRequest, 64),
	}
	sub, err := e.subscribeAPI.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("sfu: subscribe transport: %w", err)
	}
	p.sub = sub
	bwe := e.takeEstimator(sub.ID())
	p.watch(sub, TransportSubscribe)
	for _, spec := range channels {
		ordered := !spec.Unordered
		dc, err := sub.CreateDataChannel(spec.Label, &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: spec.MaxRetransmits})
		if err != nil {
			_ = sub.Close()
			return nil, fmt.Errorf("sfu: data channel %q: %w", spec.Label, err)
		}
		label := spec.Label
		ch := &dataChannel{dc: dc, opened: make(chan struct{})}
		dc.OnOpen(func() { ch.once.Do(func() { close(ch.opened) }) })
		dc.OnMessage(func(m webrtc.DataChannelMessage) { events.DataMessage(label, m.Data) })
		if de, ok := events.(DrainEvents); ok && spec.DrainedBelow > 0 {
			dc.SetBufferedAmountLowThreshold(spec.DrainedBelow)
			dc.OnBufferedAmountLow(func() { de.DataDrained(label) })
		}
		p.channels[label] = ch
	}
	p.wg.Add(3)
	go func() {
		defer p.wg.Done()
		p.runAllocator(bwe, p.quit)
	}()
	go func() {
		defer p.wg.Done()
		// Keyframe requests of this peer's published tracks, off the
		// packet path.
		for {
			select {
			case <-p.quit:
				return
			case r := <-p.keyframes:
				r.l.sendPLI()
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		p.runREMB(p.quit)
	}()
	return p, nil
}

// watch forwards candidates and failures of pc.
func (p *Peer) watch(pc *webrtc.PeerConnection, transport string) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			p.events.LocalCandidate(transport, nil)
			return
		}
		init := c.ToJSON()
		p.events.LocalCandidate(transport, &init)
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed {
			p.events.TransportFailed(transport, fmt.Errorf("%s transport failed", transport))
		}
	})
}

// Negotiate sends a new subscribe offer now, or after the answer to the
// offer in flight. Offers never collide: there is at most one at a time.
func (p *Peer) Negotiate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.negotiateLocked()
}

func (p *Peer) negotiateLocked() {
	if p.closed {
		return
	}
	if p.awaitingAnswer {
		p.pendingOffer = true
		return
	}
	offer, err := p.sub.CreateOffer(nil)
	if err == nil {
		err = p.sub.SetLocalDescription(offer)
	}
	if err != nil {
		p.log.Warn("subscribe offer failed", "err", err)
		p.events.TransportFailed(TransportSubscribe, fmt.Errorf("create offer: %w", err))
		return
	}
	mids := map[string]string{}
	for _, t := range p.sub.GetTransceivers() {
		if s := t.Sender(); s != nil && s.Track() != nil && t.Mid() != "" {
			mids[t.Mid()] = s.Track().ID()
		}
	}
	p.awaitingAnswer = true
	p.pendingOffer = false
	p.events.SubscribeOffer(p.sub.LocalDescription().SDP, mids)
}

// HandleSubscribeAnswer applies the client's answer and sends the next
// offer if changes happened meanwhile.
func (p *Peer) HandleSubscribeAnswer(sdp string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if !p.awaitingAnswer {
		return errors.New("no subscribe offer is waiting for an answer")
	}
	if err := p.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		return fmt.Errorf("apply subscribe answer: %w", err)
	}
	p.awaitingAnswer = false
	p.flushCandidatesLocked(TransportSubscribe, p.sub)
	if p.pendingOffer {
		p.negotiateLocked()
	}
	return nil
}

// HandlePublishOffer applies the client's publish offer, announcing the
// tracks it carries (keyed by the msid track id), and returns the answer.
func (p *Peer) HandlePublishOffer(sdp string, tracks map[string]TrackInfo) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return "", ErrClosed
	}
	if p.pub == nil {
		pub, err := p.engine.publishAPI.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			return "", fmt.Errorf("publish transport: %w", err)
		}
		p.pub = pub
		p.watch(pub, TransportPublish)
		pub.OnTrack(p.onTrack)
	}
	for cid, info := range tracks {
		p.expected[cid] = info
	}
	if err := p.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		return "", fmt.Errorf("apply publish offer: %w", err)
	}
	answer, err := p.pub.CreateAnswer(nil)
	if err == nil {
		err = p.pub.SetLocalDescription(answer)
	}
	if err != nil {
		return "", fmt.Errorf("publish answer: %w", err)
	}
	p.flushCandidatesLocked(TransportPublish, p.pub)
	return p.pub.LocalDescription().SDP, nil
}

// AddCandidate applies a remote ICE candidate; candidates that arrive
// before their description are kept until it is applied.
func (p *Peer) AddCandidate(transport string, c webrtc.ICECandidateInit) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	var pc *webrtc.PeerConnection
	switch transport {
	case TransportPublish:
		pc = p.pub
	case TransportSubscribe:
		pc = p.sub
	default:
		return fmt.Errorf("unknown transport %q", transport)
	}
	if pc == nil || pc.RemoteDescription() == nil {
		if len(p.pendingCands[transport]) < 64 {
			p.pendingCands[transport] = append(p.pendingCands[transport], c)
		}
		return nil
	}
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("add %s candidate: %w", transport, err)
	}
	return nil
}

func (p *Peer) flushCandidatesLocked(transport string, pc *webrtc.PeerConnection) {
	for _, c := range p.pendingCands[transport] {
		if err := pc.AddICECandidate(c); err != nil {
			p.log.Debug("pending candidate refused", "transport", transport, "err", err)
		}
	}
	delete(p.pendingCands, transport)
}

// onTrack starts forwarding a published track whose media arrived. A
// simulcast track arrives once per layer (rid q, h, f): the first makes
// the UpTrack, the others join it.
func (p *Peer) onTrack(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	rid := remote.RID()
	index := 0
	if rid != "" {
		if index = LayerByName(rid); index < 0 {
			p.log.Warn("simulcast layer with an unknown rid; ignored (use q, h, f)", "rid", rid)
			return
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if up := p.layered[remote.ID()]; up != nil && rid != "" {
		l := up.addLayer(index, uint32(remote.SSRC()), remoteSource{remote})
		if l == nil {
			// Pion announces a layer again when a stream with a new SSRC
			// carries its rid: it points the same TrackRemote (and the
			// receiver's RTCP for the rid) at that stream, so the layer's
			// readers go on as they are, their next reads from it.
			if old := up.layer(int32(index)); old != nil {
				if prev := old.ssrc.Swap(uint32(remote.SSRC())); prev != uint32(remote.SSRC()) {
					// Pion gives a stream with an SSRC not in the offer
					// to the rid it carries: the publisher sent another
					// stream (RTX, FEC) with this rid, or restarted it.
					p.log.Warn("simulcast layer now read from another SSRC", "rid", rid, "ssrc", prev, "new_ssrc", uint32(remote.SSRC()))
				}
			}
			p.mu.Unlock()
			p.log.Debug("simulcast layer announced again", "rid", rid)
			return
		}
		p.startReaders(l, recv)
		p.mu.Unlock()
		return
	}
	info, ok := p.expected[remote.ID()]
	if !ok {
		p.mu.Unlock()
		p.log.Warn("track not announced in the offer; ignored", "msid_track", remote.ID(), "kind", remote.Kind())
		return
	}
	delete(p.expected, remote.ID())
	info.Kind = remote.Kind()
	info.Codec = remote.Codec()
	extURIs := map[uint8]string{}
	for _, e := range recv.GetParameters().HeaderExtensions {
		extURIs[uint8(e.ID)] = e.URI
	}
	// The other layers of a simulcast track may arrive at once: they
	// find the group under the same lock.
	up := newUpTrackGroup(info, rid != "", p.pub, extURIs)
	up.keyframes = p.keyframes
	l := up.addLayer(index, uint32(remote.SSRC()), remoteSource{remote})
	p.ups[info.SID] = up
	if rid != "" {
		p.layered[remote.ID()] = up
	}
	p.startReaders(l, recv)
	p.mu.Unlock()
	p.events.TrackPublished(up)
}

// startReaders runs the layer's RTP reader and an RTCP reader for its
// receiver. Called with p.mu held.
func (p *Peer) startReaders(l *layer, recv *webrtc.RTPReceiver) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		l.run()
	}()
	rid := ""
	if l.up.simulcast {
		rid = LayerNames[l.index]
	}
	p.startRTCPReader(rid, recv)
}

// startRTCPReader reads the receiver's RTCP (of layer rid, or of its one
// track) until it ends. Called with p.mu held.
func (p *Peer) startRTCPReader(rid string, recv *webrtc.RTPReceiver) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		// Reading RTCP lets the interceptors see sender reports.
		buf := make([]byte, 1500)
		for {
			var err error
			if rid != "" {
				_, _, err = recv.ReadSimulcast(buf, rid)
			} else {
				_, _, err = recv.Read(buf)
			}
			if err != nil {
				return
			}
		}
	}()
}

// UpTrack returns a track this peer publishes.
func (p *Peer) UpTrack(sid string) *UpTrack {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ups[sid]
}

// Unpublish stops forwarding one of this peer's tracks. Subscribers must
// be unsubscribed by the caller.
func (p *Peer) Unpublish(sid string) {
	p.mu.Lock()
	up := p.ups[sid]
	delete(p.ups, sid)
	if up != nil {
		delete(p.layered, up.info.CID)
	}
	pub := p.pub
	p.mu.Unlock()
	if up == nil || pub == nil {
		return
	}
	ssrcs := up.LayerSSRCs()
	for _, t := range pub.GetTransceivers() {
		r := t.Receiver()
		if r == nil {
			continue
		}
		for _, tr := range r.Tracks() {
			if slices.Contains(ssrcs[:], uint32(tr.SSRC())) {
				_ = r.Stop()
				break
			}
		}
	}
}

// Subscribe adds a down-track of up to the subscribe transport and
// renegotiates.
func (p *Peer) Subscribe(up *UpTrack) (*DownTrack, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	sid := up.info.SID
	if s, ok := p.downs[sid]; ok {
		return s.down, nil
	}
	down := NewDownTrack(up)
	if !up.addDown(down) {
		return nil, fmt.Errorf("subscribe %s: %w", sid, ErrUnpublished)
	}
	sender, err := p.sub.AddTrack(down)
	if err != nil {
		up.removeDown(down)
		return nil, fmt.Errorf("subscribe %s: %w", sid, err)
	}
	p.downs[sid] = &subscription{down: down, sender: sender}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.readSubscriberRTCP(down, sender)
	}()
	p.negotiateLocked()
	return down, nil
}

// Unsubscribe removes the down-track of track sid and renegotiates. It
// reports whether there was one.
func (p *Peer) Unsubscribe(sid string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.downs[sid]
	if !ok || p.closed {
		return false
	}
	delete(p.downs, sid)
	s.down.up.removeDown(s.down)
	if err := p.sub.RemoveTrack(s.sender); err != nil {
		p.log.Debug("remove track", "track", sid, "err", err)
	}
	p.negotiateLocked()
	return true
}

// Subscribed returns the SIDs of the tracks this peer receives.
func (p *Peer) Subscribed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.downs))
	for sid := range p.downs {
		out = append(out, sid)
	}
	return out
}

// DownTracks returns this peer's down-tracks.
func (p *Peer) DownTracks() []*DownTrack {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*DownTrack, 0, len(p.downs))
	for _, s := range p.downs {
		out = append(out, s.down)
	}
	return out
}

// DownTrack returns this peer's down-track for track sid, or nil.
func (p *Peer) DownTrack(sid string) *DownTrack {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.downs[sid]; s != nil {
		return s.down
	}
	return nil
}

// readSubscriberRTCP handles the subscriber's feedback on one down-track:
// keyframe requests go to the publisher (throttled), NACKs are answered
// from the shared history by the reader of the layer each packet came
// from. This is one goroutine per down-track on the RTCP path; the packet
// path has none.
func (p *Peer) readSubscriberRTCP(d *DownTrack, sender *webrtc.RTPSender) {
	var asked nackLog // counts each sequence number asked for once
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		p.down.heard.Store(time.Now().UnixNano())
		for _, pkt := range pkts {
			switch pk := pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				d.plis.Add(1)
				l := d.current.Load()
				if l < 0 {
					l = d.target.Load()
				}
				d.up.RequestLayerKeyframe(int(l))
			case *rtcp.ReceiverReport:
				d.receiverReport(pk.Reports)
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				d.rr.updateREMB(pk, time.Now())
			case *rtcp.TransportLayerNack:
				// Each layer's reader answers the sequence numbers that
				// came from it: the current layer's, and for a moment
				// after a switch the previous one's.
				cur, prev := d.nackLayers(time.Now().UnixNano())
				from := [2]*layer{d.up.layer(cur), d.up.layer(prev)}
				var r nackRequest
				r.down = d
				queue := func() {
					for _, l := range from {
						if l != nil && r.n > 0 {
							l.queueNACK(r)
						}
					}
					r.n = 0
				}
				for _, pair := range pk.Nacks {
					for _, seq := range pair.PacketList() {
						if asked.add(seq) {
							d.nacks.Add(1)
						}
						r.seqs[r.n] = seq
						r.n++
						if r.n == len(r.seqs) {
							queue()
						}
					}
				}
				queue()
			}
		}
	}
}

// receiverReport records the report blocks about this down-track.
func (d *DownTrack) receiverReport(reports []rtcp.ReceptionReport) {
	b := d.binding.Load()
	if b == nil {
		return
	}
	for _, r := range reports {
		if r.SSRC == b.ssrc {
			d.rr.update(r, time.Now())
			d.rr.counts.Store(&rrCounts{
				totalLost: r.TotalLost, highest: r.LastSequenceNumber,
				holes: d.holes.Load() - min(d.holesFilled.Load(), d.holes.Load()),
			})
		}
	}
}

// SendData sends a binary message on the data channel label.
func (p *Peer) SendData(label string, msg []byte) error {
	dc, err := p.writableChannel(label)
	if err != nil {
		return err
	}
	return dc.Send(msg)
}

// SendDataText sends a text message on the data channel label.
func (p *Peer) SendDataText(label string, msg string) error {
	dc, err := p.writableChannel(label)
	if err != nil {
		return err
	}
	return dc.SendText(msg)
}

// DataBuffered returns how many bytes sent on the data channel label are
// not yet acknowledged by the receiver (0 for an unknown label).
func (p *Peer) DataBuffered(label string) uint64 {
	ch := p.channels[label]
	if ch == nil {
		return 0
	}
	return ch.dc.BufferedAmount()
}

// dataChannel is a server-created channel and the moment it opened.
type dataChannel struct {
	dc     *webrtc.DataChannel
	opened chan struct{}
	once   sync.Once
}

// openWait bounds how long a send waits for a channel that is still
// opening. The client may see its end open (and its peers send to it) a
// moment before Pion marks the server's end open.
const openWait = time.Second

// writableChannel returns the open data channel label. Messages to a
// receiver whose channel is backed up are refused, so that one slow
// receiver cannot grow the server's memory.
func (p *Peer) writableChannel(label string) (*webrtc.DataChannel, error) {
	ch := p.channels[label]
	if ch == nil {
		return nil, fmt.Errorf("no data channel %q", label)
	}
	dc := ch.dc
	if dc.ReadyState() == webrtc.DataChannelStateConnecting {
		t := time.NewTimer(openWait)
		select {
		case <-ch.opened:
		case <-t.C:
		}
		t.Stop()
	}
	switch {
	case dc.ReadyState() != webrtc.DataChannelStateOpen:
		return nil, fmt.Errorf("data channel %q is %s", label, dc.ReadyState())
	case dc.BufferedAmount() > maxDataBuffered:
		return nil, fmt.Errorf("data channel %q: receiver is %d bytes behind; message dropped", label, dc.BufferedAmount())
	}
	return dc, nil
}

// Close ends both transports, stops every reader and waits for them.
// Published tracks end (their Done channels close); the caller removes
// their down-tracks from subscribers.
func (p *Peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.quit)
	for _, s := range p.downs {
		s.down.up.removeDown(s.down)
	}
	p.downs = nil
	pub := p.pub
	p.mu.Unlock()
	var errs []error
	if pub != nil {
		errs = append(errs, pub.Close())
	}
	errs = append(errs, p.sub.Close())
	p.wg.Wait()
	return errors.Join(errs...)
}

// isClosedErr reports whether err means the source is gone for good.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed")
}
