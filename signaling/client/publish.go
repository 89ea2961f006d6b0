package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// PublishTrack is a local track to publish.
type PublishTrack struct {
	// Track is sent as is; its ID() is the cid of the offer (the track id
	// in a=msid).
	Track webrtc.TrackLocal
	// Source is camera, microphone, screen or screen_audio; empty means
	// camera for video and microphone for audio.
	Source string
	Muted  bool
	// Layers are further simulcast encodings of Track (same id and stream
	// id, each with its own rid, as Track has); see RTPSender.AddEncoding.
	// The writer must put the mid and rid header extensions on packets
	// (see Mid and the sender's parameters).
	Layers []webrtc.TrackLocal
	// OnRTCP, when set, gets the RTCP the server sends about this track
	// (keyframe requests, receiver reports, REMB), on a client goroutine.
	OnRTCP func([]rtcp.Packet)
}

// localTrack is one published track.
type localTrack struct {
	info   protocol.TrackInfo
	sender *webrtc.RTPSender
	sid    string // empty until the server's answer maps it
}

// Publish adds tracks to the publish transport, offers them and waits for
// the server's answer. It returns the server SID of each track, in order.
// It may be called again to add tracks; the offer then lists every track
// still published.
func (c *Client) Publish(ctx context.Context, tracks ...PublishTrack) ([]string, error) {
	if len(tracks) == 0 {
		return nil, errors.New("client: publish: no tracks")
	}
	c.publishMu.Lock()
	defer c.publishMu.Unlock()

	t, err := c.publishTransport()
	if err != nil {
		return nil, err
	}
	added := make([]*localTrack, 0, len(tracks))
	for _, pt := range tracks {
		lt, err := c.addLocal(t, pt)
		if err != nil {
			c.dropLocal(t, added)
			return nil, err
		}
		added = append(added, lt)
	}
	if err := c.negotiate(ctx, t); err != nil {
		c.dropLocal(t, added)
		return nil, fmt.Errorf("client: publish: %w", err)
	}
	sids := make([]string, len(added))
	for i, lt := range added {
		c.mu.Lock()
		sids[i] = lt.sid
		c.mu.Unlock()
		if sids[i] == "" {
			return sids, fmt.Errorf("client: publish: the answer did not map track %q", lt.info.CID)
		}
	}
	return sids, nil
}

// Unpublish stops the track sid: it tells the server, removes the track
// from the publish transport and renegotiates.
func (c *Client) Unpublish(ctx context.Context, sid string) error {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	c.mu.Lock()
	t := c.pub
	var lt *localTrack
	for _, o := range c.outgoing {
		if o.sid == sid {
			lt = o
		}
	}
	c.mu.Unlock()
	if lt == nil || t == nil {
		return fmt.Errorf("client: unpublish: %s is not a track of this client", sid)
	}
	if err := c.send(protocol.Unpublish{Envelope: c.envelope(protocol.TypeUnpublish), Track: sid}); err != nil {
		return fmt.Errorf("client: unpublish: %w", err)
	}
	c.dropLocal(t, []*localTrack{lt})
	if err := c.negotiate(ctx, t); err != nil {
		return fmt.Errorf("client: unpublish: %w", err)
	}
	return nil
}

// Mute tells the room that track sid is muted or not. The caller should
// also stop or resume writing to the track.
func (c *Client) Mute(sid string, muted bool) error {
	c.mu.Lock()
	for _, o := range c.outgoing {
		if o.sid == sid {
			o.info.Muted = muted
		}
	}
	c.mu.Unlock()
	return c.send(protocol.Mute{Envelope: c.envelope(protocol.TypeMute), Track: sid, Muted: muted})
}

// Sender returns the RTPSender of the published track sid, for its
// negotiated parameters (header extension ids) or RTCP.
func (c *Client) Sender(sid string) *webrtc.RTPSender {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.outgoing {
		if o.sid == sid {
			return o.sender
		}
	}
	return nil
}

// Mid returns the mid of the published track sid's media section, or "".
func (c *Client) Mid(sid string) string {
	sender := c.Sender(sid)
	c.mu.Lock()
	t := c.pub
	c.mu.Unlock()
	if sender == nil || t == nil {
		return ""
	}
	for _, tr := range t.pc.GetTransceivers() {
		if tr.Sender() == sender {
			return tr.Mid()
		}
	}
	return ""
}

// publishTransport returns the publish transport, creating it on first use.
func (c *Client) publishTransport() (*transport, error) {
	c.mu.Lock()
	t := c.pub
	c.mu.Unlock()
	if t != nil {
		return t, nil
	}
	t, err := c.newTransport(protocol.TransportPublish)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	closing := c.closing
	if !closing {
		c.pub = t
	}
	c.mu.Unlock()
	if closing {
		_ = t.pc.Close()
		return nil, ErrClosed
	}
	return t, nil
}

// addLocal adds one send-only transceiver and reads its RTCP (without a
// reader, the NACK responder and sender reports see no feedback).
func (c *Client) addLocal(t *transport, pt PublishTrack) (*localTrack, error) {
	if pt.Track == nil {
		return nil, errors.New("client: publish: nil track")
	}
	kind := pt.Track.Kind().String()
	source := pt.Source
	if source == "" {
		source = protocol.SourceCamera
		if pt.Track.Kind() == webrtc.RTPCodecTypeAudio {
			source = protocol.SourceMicrophone
		}
	}
	tr, err := t.pc.AddTransceiverFromTrack(pt.Track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return nil, fmt.Errorf("client: publish %s track %q: %w", kind, pt.Track.ID(), err)
	}
	sender := tr.Sender()
	for _, l := range pt.Layers {
		if err := sender.AddEncoding(l); err != nil {
			_ = t.pc.RemoveTrack(sender)
			return nil, fmt.Errorf("client: publish %s track %q layer %q: %w", kind, pt.Track.ID(), l.RID(), err)
		}
	}
	onRTCP := pt.OnRTCP
	c.goOwned(func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := sender.Read(buf)
			if err != nil {
				return
			}
			if onRTCP == nil {
				continue
			}
			if pkts, err := rtcp.Unmarshal(buf[:n]); err == nil {
				onRTCP(pkts)
			}
		}
	})
	for _, l := range pt.Layers {
		rid := l.RID()
		c.goOwned(func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := sender.ReadSimulcast(buf, rid)
				if err != nil {
					return
				}
				pkts, err := rtcp.Unmarshal(buf[:n])
				if err == nil && onRTCP != nil {
					onRTCP(pkts)
				}
			}
		})
	}
	lt := &localTrack{
		info:   protocol.TrackInfo{CID: pt.Track.ID(), Kind: kind, Source: source, Muted: pt.Muted},
		sender: sender,
	}
	c.mu.Lock()
	c.outgoing = append(c.outgoing, lt)
	c.mu.Unlock()
	return lt, nil
}

// dropLocal removes tracks from the transport and from the list.
func (c *Client) dropLocal(t *transport, tracks []*localTrack) {
	for _, lt := range tracks {
		if err := t.pc.RemoveTrack(lt.sender); err != nil {
			c.log.Debug("client: remove track", "cid", lt.info.CID, "err", err)
		}
	}
	c.mu.Lock()
	c.outgoing = slices.DeleteFunc(c.outgoing, func(o *localTrack) bool { return slices.Contains(tracks, o) })
	c.mu.Unlock()
}

// negotiate offers the publish transport's current tracks, waits for the
// answer (which the read loop applies) and records the SIDs it maps. On a
// refusal the local offer is rolled back.
func (c *Client) negotiate(ctx context.Context, t *transport) error {
	offer, err := t.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("create offer: %w", err)
	}
	if err := t.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("set offer: %w", err)
	}
	c.mu.Lock()
	infos := make([]protocol.TrackInfo, 0, len(c.outgoing))
	for _, o := range c.outgoing {
		infos = append(infos, o.info)
	}
	c.mu.Unlock()
	id := c.newID()
	msg := protocol.SessionDescription{
		Envelope:  protocol.Envelope{Type: protocol.TypeOffer, ID: id},
		Transport: protocol.TransportPublish,
		SDP:       offer.SDP,
		Tracks:    infos,
	}
	r, err := c.roundTrip(ctx, id, msg, func() { c.descriptionSent(t) })
	if err != nil {
		if t.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
			if rbErr := t.pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback}); rbErr != nil {
				c.log.Debug("client: rollback publish offer", "err", rbErr)
			}
		}
		return err
	}
	if r.answer == nil {
		return errors.New("no answer")
	}
	c.mu.Lock()
	for _, m := range r.answer.Published {
		for _, o := range c.outgoing {
			if o.info.CID == m.CID {
				o.sid = m.SID
			}
		}
	}
	c.mu.Unlock()
	return nil
}

// onPublishAnswer applies the server's answer in the read loop, so that
// candidates that follow it find the remote description, then wakes the
// waiting negotiate.
func (c *Client) onPublishAnswer(m *protocol.SessionDescription) {
	if m.Transport != protocol.TransportPublish {
		c.log.Warn("client: answer on unexpected transport", "transport", m.Transport)
		return
	}
	c.mu.Lock()
	t := c.pub
	c.mu.Unlock()
	if t == nil {
		c.resolve(m.ID, reply{err: errors.New("answer without a publish transport")})
		return
	}
	if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.SDP}); err != nil {
		err = fmt.Errorf("apply publish answer: %w", err)
		if !c.resolve(m.ID, reply{err: err}) {
			c.emit(Event{Type: TypeClientError, Message: err})
		}
		return
	}
	if err := c.flushEarly(t); err != nil {
		c.emit(Event{Type: TypeClientError, Message: err})
	}
	c.resolve(m.ID, reply{answer: m})
}
