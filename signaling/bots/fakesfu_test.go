package bots

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// fakeSFU is a small forwarding server for testing the bots without the
// real one: it verifies tokens with the dev key, forwards every published
// track to everyone else in the room, and renegotiates a subscriber's
// transport whenever its set of tracks changes, one offer at a time.
type fakeSFU struct {
	t        *testing.T
	api      *webrtc.API
	verifier *auth.Verifier
	srv      *httptest.Server
	ctx      context.Context
	wg       sync.WaitGroup // forwarding loops

	mu     sync.Mutex
	nextID int
	rooms  map[string][]*fakePeer
	tracks map[string][]*fakeTrack // by room
}

type fakeTrack struct {
	sid, owner string
	local      *webrtc.TrackLocalStaticRTP
}

type fakePeer struct {
	sfu     *fakeSFU
	sid     string
	room    string
	ws      *websocket.Conn
	writeMu sync.Mutex
	sub     *webrtc.PeerConnection
	pub     *webrtc.PeerConnection
	dirty   chan struct{} // the track set changed
	answers chan string   // subscribe answers
	sent    map[string]*webrtc.RTPSender
	cids    map[string]string // publish cid → SID
}

func newFakeSFU(t *testing.T) *fakeSFU {
	t.Helper()
	api, err := client.NewAPI(client.APIOptions{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(map[string]string{auth.DevAPIKey: auth.DevAPISecret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &fakeSFU{t: t, api: api, verifier: v, ctx: ctx, rooms: map[string][]*fakePeer{}, tracks: map[string][]*fakeTrack{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		cancel()
		s.srv.Close()
		s.wg.Wait()
	})
	return s
}

func (s *fakeSFU) id(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	return prefix + strconv.Itoa(s.nextID)
}

func (s *fakeSFU) serve(w http.ResponseWriter, r *http.Request) {
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	p := &fakePeer{sfu: s, ws: ws, dirty: make(chan struct{}, 1), answers: make(chan string, 1),
		sent: map[string]*webrtc.RTPSender{}, cids: map[string]string{}}
	ctx, cancel := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		s.leave(p)
		for _, pc := range []*webrtc.PeerConnection{p.sub, p.pub} {
			if pc != nil {
				_ = pc.Close()
			}
		}
		wg.Wait()
	}()
	for {
		_, raw, err := ws.ReadMessage()
		if err != nil {
			return
		}
		env, _ := protocol.Decode(raw)
		switch env.Type {
		case protocol.TypeJoin:
			var m protocol.Join
			_ = json.Unmarshal(raw, &m)
			claims, err := s.verifier.Verify(m.Token)
			if err != nil {
				p.write(protocol.Error{Envelope: protocol.Envelope{Type: protocol.TypeError, ID: m.ID}, Code: protocol.CodeTokenInvalid, Message: err.Error(), Ref: "join"})
				continue
			}
			p.sid, p.room = s.id("PA_"), claims.Room
			if p.sub, err = s.api.NewPeerConnection(webrtc.Configuration{}); err != nil {
				s.t.Error(err)
				return
			}
			p.trickle(p.sub, protocol.TransportSubscribe)
			if _, err := p.sub.CreateDataChannel(protocol.ChannelData, nil); err != nil {
				s.t.Error(err)
				return
			}
			p.write(protocol.Joined{Envelope: protocol.Envelope{Type: protocol.TypeJoined, ID: m.ID}, Room: p.room,
				You: protocol.Participant{SID: p.sid, Identity: claims.Identity}})
			s.mu.Lock()
			s.rooms[p.room] = append(s.rooms[p.room], p)
			s.mu.Unlock()
			p.dirty <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.negotiateLoop(ctx, m.AutoSubscribe == nil || *m.AutoSubscribe)
			}()
		case protocol.TypeAnswer:
			var m protocol.SessionDescription
			_ = json.Unmarshal(raw, &m)
			p.answers <- m.SDP
		case protocol.TypeOffer:
			var m protocol.SessionDescription
			_ = json.Unmarshal(raw, &m)
			p.answerPublish(&m)
		case protocol.TypeCandidate:
			var m protocol.Candidate
			_ = json.Unmarshal(raw, &m)
			pc := p.sub
			if m.Transport == protocol.TransportPublish {
				pc = p.pub
			}
			if m.Candidate != nil && pc != nil {
				_ = pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: m.Candidate.Candidate, SDPMid: m.Candidate.SDPMid, SDPMLineIndex: m.Candidate.SDPMLineIndex})
			}
		case protocol.TypeLeave:
			p.write(protocol.Bye{Envelope: protocol.Envelope{Type: protocol.TypeBye}, Reason: "left"})
			return
		}
	}
}

func (s *fakeSFU) leave(p *fakePeer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	peers := s.rooms[p.room]
	for i, o := range peers {
		if o == p {
			s.rooms[p.room] = append(peers[:i:i], peers[i+1:]...)
			break
		}
	}
	tracks := s.tracks[p.room][:0]
	for _, tr := range s.tracks[p.room] {
		if tr.owner != p.sid {
			tracks = append(tracks, tr)
		}
	}
	s.tracks[p.room] = tracks
	s.touch(p.room)
}

// touch marks every peer of room for renegotiation; s.mu is held.
func (s *fakeSFU) touch(room string) {
	for _, o := range s.rooms[room] {
		select {
		case o.dirty <- struct{}{}:
		default:
		}
	}
}

func (p *fakePeer) write(v any) {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_ = p.ws.WriteJSON(v)
}

func (p *fakePeer) trickle(pc *webrtc.PeerConnection, transport string) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		m := protocol.Candidate{Envelope: protocol.Envelope{Type: protocol.TypeCandidate}, Transport: transport}
		if c != nil {
			init := c.ToJSON()
			m.Candidate = &protocol.ICECandidate{Candidate: init.Candidate, SDPMid: init.SDPMid, SDPMLineIndex: init.SDPMLineIndex}
		}
		p.write(m)
	})
}

// negotiateLoop sends a subscribe offer whenever the track set changed,
// waiting for each answer before the next.
func (p *fakePeer) negotiateLoop(ctx context.Context, auto bool) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.dirty:
		}
		p.sfu.mu.Lock()
		want := map[string]*fakeTrack{}
		if auto {
			for _, tr := range p.sfu.tracks[p.room] {
				if tr.owner != p.sid {
					want[tr.sid] = tr
				}
			}
		}
		p.sfu.mu.Unlock()
		for sid, sender := range p.sent {
			if want[sid] == nil {
				_ = p.sub.RemoveTrack(sender)
				delete(p.sent, sid)
			}
		}
		for sid, tr := range want {
			if p.sent[sid] == nil {
				sender, err := p.sub.AddTrack(tr.local)
				if err != nil {
					p.sfu.t.Error(err)
					return
				}
				p.sent[sid] = sender
			}
		}
		offer, err := p.sub.CreateOffer(nil)
		if err == nil {
			err = p.sub.SetLocalDescription(offer)
		}
		if err != nil {
			if ctx.Err() == nil && p.sub.ConnectionState() != webrtc.PeerConnectionStateClosed {
				p.sfu.t.Errorf("fake sfu: subscribe offer: %v", err)
			}
			return
		}
		mids := map[string]string{}
		for _, tr := range p.sub.GetTransceivers() {
			for sid, sender := range p.sent {
				if tr.Sender() == sender {
					mids[tr.Mid()] = sid
				}
			}
		}
		p.write(protocol.SessionDescription{Envelope: protocol.Envelope{Type: protocol.TypeOffer},
			Transport: protocol.TransportSubscribe, SDP: offer.SDP, Mids: mids})
		select {
		case <-ctx.Done():
			return
		case sdp := <-p.answers:
			if err := p.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
				if ctx.Err() == nil && p.sub.ConnectionState() != webrtc.PeerConnectionStateClosed {
					p.sfu.t.Errorf("fake sfu: subscribe answer: %v", err)
				}
				return
			}
		}
	}
}

// answerPublish answers a publish offer; each new track is forwarded to
// the room once its first packet arrives.
func (p *fakePeer) answerPublish(m *protocol.SessionDescription) {
	s := p.sfu
	if p.pub == nil {
		pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			s.t.Error(err)
			return
		}
		p.pub = pc
		p.trickle(pc, protocol.TransportPublish)
		pc.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			s.mu.Lock()
			sid := p.cids[remote.ID()]
			s.mu.Unlock()
			local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, sid, p.sid)
			if err != nil {
				s.t.Error(err)
				return
			}
			s.mu.Lock()
			s.tracks[p.room] = append(s.tracks[p.room], &fakeTrack{sid: sid, owner: p.sid, local: local})
			s.touch(p.room)
			s.mu.Unlock()
			s.wg.Add(1)
			defer s.wg.Done()
			buf := make([]byte, 1500)
			for {
				n, _, err := remote.Read(buf)
				if err != nil {
					return
				}
				_, _ = local.Write(buf[:n])
			}
		})
	}
	var published []protocol.TrackMapping
	s.mu.Lock()
	for _, ti := range m.Tracks {
		if p.cids[ti.CID] == "" {
			s.nextID++
			p.cids[ti.CID] = "TR_" + strconv.Itoa(s.nextID)
		}
		published = append(published, protocol.TrackMapping{CID: ti.CID, SID: p.cids[ti.CID]})
	}
	s.mu.Unlock()
	err := p.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.SDP})
	var answer webrtc.SessionDescription
	if err == nil {
		answer, err = p.pub.CreateAnswer(nil)
	}
	if err == nil {
		err = p.pub.SetLocalDescription(answer)
	}
	if err != nil {
		p.write(protocol.Error{Envelope: protocol.Envelope{Type: protocol.TypeError, ID: m.ID}, Code: protocol.CodeBadSDP, Message: err.Error()})
		return
	}
	p.write(protocol.SessionDescription{Envelope: protocol.Envelope{Type: protocol.TypeAnswer, ID: m.ID},
		Transport: protocol.TransportPublish, SDP: answer.SDP, Published: published})
}

// TestRunWithFakeSFU runs the whole bot runner against the fake SFU:
// joins, publishing, renegotiated subscriptions, media with latency, and
// leaving.
func TestRunWithFakeSFU(t *testing.T) {
	s := newFakeSFU(t)
	var progress bytes.Buffer
	r := runBots(t, Config{
		URL: s.srv.URL, Room: "t", Rooms: 2, Publishers: 2, Subscribers: 3,
		Duration: 3 * time.Second, Video: "vp8_180p.ivf", Progress: &progress,
	})
	// One publisher per room, two tracks each, to every subscriber there.
	if r.Joined != 5 || r.Tracks != 6 || r.NoMedia != 0 {
		t.Errorf("joined %d, tracks %d, no media %d; want 5, 6, 0", r.Joined, r.Tracks, r.NoMedia)
	}
	if r.RecvPackets == 0 || r.LostPackets != 0 || r.SentPackets == 0 {
		t.Errorf("sent %d received %d lost %d", r.SentPackets, r.RecvPackets, r.LostPackets)
	}
	// A bound that catches packets held back, not a benchmark: under the
	// race detector on a loaded machine p99 reaches a few hundred ms.
	if r.LatencyMS.P50 <= 0 || r.LatencyMS.P99 > 2000 {
		t.Errorf("latency %+v", r.LatencyMS)
	}
	if r.JoinMS.P50 <= 0 || r.FirstMediaMS.P50 < r.JoinMS.P50 {
		t.Errorf("join %+v first media %+v", r.JoinMS, r.FirstMediaMS)
	}
	if !strings.Contains(progress.String(), "joined 5/5") {
		t.Errorf("progress line %q", progress.String())
	}
}

func TestRunFailsOnRefusedTokens(t *testing.T) {
	s := newFakeSFU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := Run(ctx, Config{URL: s.srv.URL, Subscribers: 2, Duration: time.Second,
		APIKey: auth.DevAPIKey, APISecret: "another-secret-another-secret-another-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed != 2 || r.Joined != 0 || r.Err() == nil || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "2× subscriber bots: client: join: token_invalid") {
		t.Errorf("failed %d joined %d errors %q", r.Failed, r.Joined, r.Errors)
	}
}
