package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// fakeServer speaks just enough of the protocol, with Pion on its side, to
// exercise the client: it admits the token "good", offers one VP8 track
// (TR_cam) and the data channel, answers publish offers, echoes data
// messages and counts the RTP it receives.
type fakeServer struct {
	t   *testing.T
	api *webrtc.API
	srv *httptest.Server
	// extra runs after joined is sent, on the connection's goroutine.
	extra func(s *fakeConn)
	// refuseWithoutID leaves the id off join refusals.
	refuseWithoutID bool

	mu        sync.Mutex
	published map[string]*rtpSink // by SID
	gotAnswer bool
}

// rtpSink records what arrived on one published track.
type rtpSink struct {
	mu          sync.Mutex
	packets     int
	captureExts int
	first       chan struct{}
	once        sync.Once
}

type fakeConn struct {
	fs      *fakeServer
	ws      *websocket.Conn
	writeMu sync.Mutex
	sub     *webrtc.PeerConnection
	pub     *webrtc.PeerConnection
	video   *webrtc.TrackLocalStaticRTP
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	api, err := NewAPI(APIOptions{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{t: t, api: api, published: make(map[string]*rtpSink)}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serveWS))
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fakeServer) sink(sid string) *rtpSink {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	s, ok := fs.published[sid]
	if !ok {
		s = &rtpSink{first: make(chan struct{})}
		fs.published[sid] = s
	}
	return s
}

func (fs *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/ws" {
		http.NotFound(w, r)
		return
	}
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	c := &fakeConn{fs: fs, ws: ws}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		for _, pc := range []*webrtc.PeerConnection{c.sub, c.pub} {
			if pc != nil {
				_ = pc.Close()
			}
		}
	}()
	defer cancel()
	for {
		_, raw, err := ws.ReadMessage()
		if err != nil {
			return
		}
		env, err := protocol.Decode(raw)
		if err != nil {
			fs.t.Errorf("fake server: bad frame %q", raw)
			return
		}
		switch env.Type {
		case protocol.TypeJoin:
			var m protocol.Join
			_ = json.Unmarshal(raw, &m)
			if m.Token != "good" {
				id := m.ID
				if fs.refuseWithoutID {
					id = ""
				}
				c.write(protocol.Error{Envelope: protocol.Envelope{Type: protocol.TypeError, ID: id}, Code: protocol.CodeTokenInvalid, Message: "bad token", Ref: "join"})
				continue
			}
			c.write(protocol.Joined{
				Envelope: protocol.Envelope{Type: protocol.TypeJoined, ID: m.ID},
				Room:     "r",
				You:      protocol.Participant{SID: "PA_me", Identity: "me", Name: "Me"},
				Tracks: []protocol.Track{{SID: "TR_cam", Participant: "PA_bob", Identity: "bob",
					Kind: protocol.KindVideo, Source: protocol.SourceCamera, Codec: "video/VP8"}},
				ICEServers:     []protocol.ICEServer{},
				Server:         protocol.ServerInfo{Version: "test", Protocol: protocol.Version},
				MaxDataMessage: 16384,
			})
			c.offerSubscribe(ctx, &wg)
			if fs.extra != nil {
				fs.extra(c)
			}
		case protocol.TypeAnswer:
			var m protocol.SessionDescription
			_ = json.Unmarshal(raw, &m)
			if err := c.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.SDP}); err != nil {
				fs.t.Errorf("fake server: subscribe answer: %v", err)
			}
			fs.mu.Lock()
			fs.gotAnswer = true
			fs.mu.Unlock()
		case protocol.TypeOffer:
			var m protocol.SessionDescription
			_ = json.Unmarshal(raw, &m)
			c.answerPublish(&m)
		case protocol.TypeCandidate:
			var m protocol.Candidate
			_ = json.Unmarshal(raw, &m)
			pc := c.sub
			if m.Transport == protocol.TransportPublish {
				pc = c.pub
			}
			if m.Candidate != nil && pc != nil {
				if err := pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: m.Candidate.Candidate, SDPMid: m.Candidate.SDPMid, SDPMLineIndex: m.Candidate.SDPMLineIndex}); err != nil {
					fs.t.Errorf("fake server: candidate %s: %v", m.Transport, err)
				}
			}
		case protocol.TypePing:
			var m protocol.Ping
			_ = json.Unmarshal(raw, &m)
			c.write(protocol.Ping{Envelope: protocol.Envelope{Type: protocol.TypePong, ID: m.ID}, TS: m.TS})
		case protocol.TypeLeave:
			c.write(protocol.Bye{Envelope: protocol.Envelope{Type: protocol.TypeBye}, Reason: "left"})
			return
		default:
			// subscribe, mute, ...: accepted silently
		}
	}
}

func (c *fakeConn) write(v any) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.ws.WriteJSON(v)
}

func (c *fakeConn) trickle(pc *webrtc.PeerConnection, transport string) {
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		m := protocol.Candidate{Envelope: protocol.Envelope{Type: protocol.TypeCandidate}, Transport: transport}
		if cand != nil {
			init := cand.ToJSON()
			m.Candidate = &protocol.ICECandidate{Candidate: init.Candidate, SDPMid: init.SDPMid, SDPMLineIndex: init.SDPMLineIndex}
		}
		c.write(m)
	})
}

// offerSubscribe sends one VP8 track and the data channel, and writes RTP
// to the track until ctx ends.
func (c *fakeConn) offerSubscribe(ctx context.Context, wg *sync.WaitGroup) {
	t := c.fs.t
	pc, err := c.fs.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Errorf("fake server: %v", err)
		return
	}
	c.sub = pc
	c.trickle(pc, protocol.TransportSubscribe)
	dc, err := pc.CreateDataChannel(protocol.ChannelData, nil)
	if err != nil {
		t.Errorf("fake server: %v", err)
		return
	}
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		var in protocol.DataSend
		if err := json.Unmarshal(msg.Data, &in); err != nil {
			t.Errorf("fake server: data message %q: %v", msg.Data, err)
			return
		}
		b, _ := json.Marshal(protocol.DataMessage{Type: "message", From: "me", SID: "PA_me", Data: in.Data})
		_ = dc.SendText(string(b))
	})
	c.video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "cam-id", "PA_bob")
	if err != nil {
		t.Errorf("fake server: %v", err)
		return
	}
	tr, err := pc.AddTransceiverFromTrack(c.video, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Errorf("fake server: %v", err)
		return
	}
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		t.Errorf("fake server: subscribe offer: %v", err)
		return
	}
	c.write(protocol.SessionDescription{
		Envelope:  protocol.Envelope{Type: protocol.TypeOffer},
		Transport: protocol.TransportSubscribe,
		SDP:       offer.SDP,
		Mids:      map[string]string{tr.Mid(): "TR_cam"},
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		p := rtp.Packet{Header: rtp.Header{Version: 2}, Payload: []byte{0x10, 0, 0, 0, 0}}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				p.SequenceNumber++
				p.Timestamp += 900
				_ = c.video.WriteRTP(&p)
			}
		}
	}()
}

// answerPublish answers a publish offer and maps every cid to "TR_" + cid.
func (c *fakeConn) answerPublish(m *protocol.SessionDescription) {
	t := c.fs.t
	if c.pub == nil {
		pc, err := c.fs.api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Errorf("fake server: %v", err)
			return
		}
		c.pub = pc
		c.trickle(pc, protocol.TransportPublish)
		pc.OnTrack(func(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
			sink := c.fs.sink("TR_" + tr.ID())
			extID := ExtensionID(recv.GetParameters().HeaderExtensions, URIAbsCaptureTime)
			buf := make([]byte, 1500)
			var h rtp.Header
			for {
				n, _, err := tr.Read(buf)
				if err != nil {
					return
				}
				if _, err := h.Unmarshal(buf[:n]); err != nil {
					continue
				}
				sink.mu.Lock()
				sink.packets++
				if extID != 0 && len(h.GetExtension(extID)) == 8 {
					sink.captureExts++
				}
				sink.mu.Unlock()
				sink.once.Do(func() { close(sink.first) })
			}
		})
	}
	pc := c.pub
	var published []protocol.TrackMapping
	for _, ti := range m.Tracks {
		published = append(published, protocol.TrackMapping{CID: ti.CID, SID: "TR_" + ti.CID})
	}
	err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.SDP})
	var answer webrtc.SessionDescription
	if err == nil {
		answer, err = pc.CreateAnswer(nil)
	}
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err != nil {
		c.write(protocol.Error{Envelope: protocol.Envelope{Type: protocol.TypeError, ID: m.ID}, Code: protocol.CodeBadSDP, Message: err.Error(), Ref: "offer"})
		return
	}
	c.write(protocol.SessionDescription{
		Envelope:  protocol.Envelope{Type: protocol.TypeAnswer, ID: m.ID},
		Transport: protocol.TransportPublish,
		SDP:       answer.SDP,
		Published: published,
	})
}
