package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// transport is one of the two PeerConnections and its candidate plumbing.
type transport struct {
	name string // protocol.TransportPublish or TransportSubscribe
	pc   *webrtc.PeerConnection

	// Local candidates are held until the first description has been
	// sent, so the server never gets a candidate before the SDP it
	// belongs to. candMu is held while candidates are written, so the
	// end-of-candidates marker is never sent before them.
	candMu   sync.Mutex
	descSent bool
	held     []*webrtc.ICECandidate

	// Remote candidates that came before the remote description; only
	// the read loop touches it.
	early []webrtc.ICECandidateInit

	connected chan struct{} // closed when the transport is connected
	ended     chan struct{} // closed when it has failed or closed
	stateOnce struct{ connected, ended sync.Once }
}

// newTransport creates a PeerConnection with the session's ICE servers.
func (c *Client) newTransport(name string) (*transport, error) {
	cfg := webrtc.Configuration{ICEServers: c.opts.ICEServers, ICETransportPolicy: c.opts.ICETransportPolicy}
	if cfg.ICEServers == nil {
		for _, s := range c.Joined().ICEServers {
			cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		}
	}
	pc, err := c.api.NewPeerConnection(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: new %s PeerConnection: %w", name, err)
	}
	t := &transport{name: name, pc: pc, connected: make(chan struct{}), ended: make(chan struct{})}
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		t.candMu.Lock()
		defer t.candMu.Unlock()
		if !t.descSent {
			t.held = append(t.held, cand)
			return
		}
		c.sendCandidate(t.name, cand)
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		c.log.Debug("client: transport state", "transport", name, "state", s.String())
		switch s {
		case webrtc.PeerConnectionStateConnected:
			t.stateOnce.connected.Do(func() { close(t.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			t.stateOnce.ended.Do(func() { close(t.ended) })
		}
	})
	return t, nil
}

// descriptionSent releases the candidates held until the SDP went out.
func (c *Client) descriptionSent(t *transport) {
	t.candMu.Lock()
	defer t.candMu.Unlock()
	if t.descSent {
		return
	}
	t.descSent = true
	for _, cand := range t.held {
		c.sendCandidate(t.name, cand)
	}
	t.held = nil
}

// sendCandidate trickles one local candidate; nil ends them.
func (c *Client) sendCandidate(name string, cand *webrtc.ICECandidate) {
	m := protocol.Candidate{Envelope: protocol.Envelope{Type: protocol.TypeCandidate}, Transport: name}
	if cand != nil {
		init := cand.ToJSON()
		m.Candidate = &protocol.ICECandidate{
			Candidate:        init.Candidate,
			SDPMid:           init.SDPMid,
			SDPMLineIndex:    init.SDPMLineIndex,
			UsernameFragment: init.UsernameFragment,
		}
	}
	if err := c.send(m); err != nil {
		c.log.Debug("client: send candidate", "transport", name, "err", err)
	}
}

// onCandidate applies a remote candidate, or keeps it until the remote
// description is there.
func (c *Client) onCandidate(m *protocol.Candidate) error {
	c.mu.Lock()
	t := c.sub
	if m.Transport == protocol.TransportPublish {
		t = c.pub
	}
	c.mu.Unlock()
	if t == nil {
		return fmt.Errorf("client: candidate for %s transport, which does not exist", m.Transport)
	}
	if m.Candidate == nil {
		return nil // end of candidates: nothing to do for Pion
	}
	init := webrtc.ICECandidateInit{
		Candidate:        m.Candidate.Candidate,
		SDPMid:           m.Candidate.SDPMid,
		SDPMLineIndex:    m.Candidate.SDPMLineIndex,
		UsernameFragment: m.Candidate.UsernameFragment,
	}
	if t.pc.RemoteDescription() == nil {
		t.early = append(t.early, init)
		return nil
	}
	if err := t.pc.AddICECandidate(init); err != nil {
		return fmt.Errorf("client: add %s candidate %q: %w", t.name, init.Candidate, err)
	}
	return nil
}

// flushEarly applies candidates that came before the remote description.
func (c *Client) flushEarly(t *transport) error {
	var errs []error
	for _, init := range t.early {
		if err := t.pc.AddICECandidate(init); err != nil {
			errs = append(errs, fmt.Errorf("client: add %s candidate %q: %w", t.name, init.Candidate, err))
		}
	}
	t.early = nil
	return errors.Join(errs...)
}

// WaitConnected waits until the named transport (protocol.TransportPublish
// or TransportSubscribe) is connected.
func (c *Client) WaitConnected(ctx context.Context, name string) error {
	c.mu.Lock()
	t := c.sub
	if name == protocol.TransportPublish {
		t = c.pub
	}
	c.mu.Unlock()
	if t == nil {
		return fmt.Errorf("client: no %s transport", name)
	}
	select {
	case <-t.connected:
		return nil
	case <-t.ended:
		return fmt.Errorf("client: %s transport failed", name)
	case <-ctx.Done():
		return fmt.Errorf("client: waiting for %s transport: %w", name, ctx.Err())
	}
}

// SelectedPair returns the candidate pair the named transport
// (protocol.TransportPublish or TransportSubscribe) uses, or an error
// when it has none yet.
func (c *Client) SelectedPair(name string) (*webrtc.ICECandidatePair, error) {
	c.mu.Lock()
	t := c.sub
	if name == protocol.TransportPublish {
		t = c.pub
	}
	c.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("client: no %s transport", name)
	}
	var ice *webrtc.ICETransport
	if sctp := t.pc.SCTP(); sctp != nil && sctp.Transport() != nil {
		ice = sctp.Transport().ICETransport()
	}
	for _, tr := range t.pc.GetTransceivers() {
		if ice != nil {
			break
		}
		if s := tr.Sender(); s != nil && s.Transport() != nil {
			ice = s.Transport().ICETransport()
		} else if r := tr.Receiver(); r != nil && r.Transport() != nil {
			ice = r.Transport().ICETransport()
		}
	}
	if ice == nil {
		return nil, fmt.Errorf("client: %s transport has no ICE transport yet", name)
	}
	pair, err := ice.GetSelectedCandidatePair()
	if err != nil {
		return nil, fmt.Errorf("client: %s selected pair: %w", name, err)
	}
	if pair == nil {
		return nil, fmt.Errorf("client: %s transport has no selected pair yet", name)
	}
	return pair, nil
}

// openSubscribe creates the subscribe transport; called from the read
// loop on joined.
func (c *Client) openSubscribe() error {
	t, err := c.newTransport(protocol.TransportSubscribe)
	if err != nil {
		return err
	}
	t.pc.OnTrack(c.onTrack)
	t.pc.OnDataChannel(c.onDataChannel)
	c.mu.Lock()
	closing := c.closing
	if !closing {
		c.sub = t
	}
	c.mu.Unlock()
	if closing {
		_ = t.pc.Close()
		return ErrClosed
	}
	return nil
}

// onSubscribeOffer answers a server offer; called from the read loop.
func (c *Client) onSubscribeOffer(m *protocol.SessionDescription) error {
	c.mu.Lock()
	t := c.sub
	c.mids = maps.Clone(m.Mids)
	if c.mids == nil {
		c.mids = make(map[string]string)
	}
	c.mu.Unlock()
	if t == nil {
		return errors.New("client: subscribe offer before joined")
	}
	if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.SDP}); err != nil {
		return fmt.Errorf("client: apply subscribe offer: %w", err)
	}
	answer, err := t.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("client: create subscribe answer: %w", err)
	}
	if err := t.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("client: set subscribe answer: %w", err)
	}
	err = c.send(protocol.SessionDescription{
		Envelope:  protocol.Envelope{Type: protocol.TypeAnswer},
		Transport: protocol.TransportSubscribe,
		SDP:       answer.SDP,
	})
	if err != nil {
		return err
	}
	c.descriptionSent(t)
	return c.flushEarly(t)
}

// onTrack runs on Pion's goroutine for a new remote track: it names the
// track by its mid and hands it to OnTrack, counted as a client goroutine.
func (c *Client) onTrack(track *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	if !c.enter() {
		return
	}
	defer c.wg.Done()

	info := protocol.Track{Kind: track.Kind().String()}
	c.mu.Lock()
	t := c.sub
	c.mu.Unlock()
	if t != nil {
		for _, tr := range t.pc.GetTransceivers() {
			if tr.Receiver() == recv {
				info.SID = c.midSID(tr.Mid())
				break
			}
		}
	}
	if known, ok := c.Track(info.SID); ok && info.SID != "" {
		info = known
	}
	// Read RTCP so the interceptors see the server's sender reports.
	c.goOwned(func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := recv.Read(buf); err != nil {
				return
			}
		}
	})
	if c.opts.OnTrack != nil {
		c.opts.OnTrack(info, track, recv)
		return
	}
	buf := make([]byte, 1500)
	for {
		if _, _, err := track.Read(buf); err != nil {
			return
		}
	}
}

func (c *Client) midSID(mid string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mids[mid]
}

// Mids returns the latest subscribe offer's mid → track SID map.
func (c *Client) Mids() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.mids)
}

// onDataChannel adopts the server's "data" channel.
func (c *Client) onDataChannel(dc *webrtc.DataChannel) {
	if dc.Label() != protocol.ChannelData {
		if c.opts.OnChannel != nil {
			c.opts.OnChannel(dc)
			return
		}
		c.log.Debug("client: ignoring data channel", "label", dc.Label())
		return
	}
	c.mu.Lock()
	c.data = dc
	c.mu.Unlock()
	dc.OnOpen(func() { c.dataOnce.Do(func() { close(c.dataOpen) }) })
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		var m protocol.DataMessage
		if err := json.Unmarshal(msg.Data, &m); err != nil {
			c.log.Warn("client: bad data message", "err", err)
			return
		}
		if c.opts.OnData != nil {
			c.opts.OnData(m)
		}
	})
}

// WaitData waits until the data channel is open.
func (c *Client) WaitData(ctx context.Context) error {
	select {
	case <-c.dataOpen:
		return nil
	case <-c.readDone:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("client: waiting for the data channel: %w", ctx.Err())
	}
}

// ErrNoData is returned by SendData before the data channel is open.
var ErrNoData = errors.New("client: data channel not open")

// SendData sends data to the identities in to (everyone else when empty)
// over the data channel. Refusals come back through OnData with Type
// "error".
func (c *Client) SendData(to []string, data json.RawMessage) error {
	select {
	case <-c.dataOpen:
	default:
		return ErrNoData
	}
	c.mu.Lock()
	dc := c.data
	c.mu.Unlock()
	b, err := json.Marshal(protocol.DataSend{To: to, Data: data})
	if err != nil {
		return fmt.Errorf("client: encode data message: %w", err)
	}
	if err := dc.SendText(string(b)); err != nil {
		return fmt.Errorf("client: send data: %w", err)
	}
	return nil
}
