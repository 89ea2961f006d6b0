package sfu

import (
	"maps"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// dropFirst loses, the first time they are sent, the packets whose
// sequence numbers are at the given distances from the first one sent.
type dropFirst struct {
	w       rtpWriter
	mu      sync.Mutex
	started bool
	first   uint16
	drop    map[uint16]bool
}

func (w *dropFirst) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.mu.Lock()
	if !w.started {
		w.started, w.first = true, h.SequenceNumber
	}
	off := h.SequenceNumber - w.first
	lose := w.drop[off]
	delete(w.drop, off)
	w.mu.Unlock()
	if lose {
		return h.MarshalSize() + len(payload) + int(h.PaddingSize), nil
	}
	return w.w.WriteRTP(h, payload)
}

// TestNACKAcrossSwitchOverLoopback has a Pion subscriber, whose NACK
// generator asks for what it misses, receive a simulcast track over
// loopback from the SFU's subscribe transport; the packets lost around a
// layer switch (the old layer's last ones, a probe padding packet, the
// new layer's first) all reach it.
func TestNACKAcrossSwitchOverLoopback(t *testing.T) {
	loopback := func(ip net.IP) bool { return ip.IsLoopback() }
	e, err := NewEngine(Config{IncludeLoopback: true, ListenIP: "127.0.0.1", IPFilter: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	server, err := e.subscribeAPI.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	gen, err := nack.NewGeneratorInterceptor(nack.GeneratorInterval(20 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	reg.Add(gen)
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(loopback)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	client, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)).
		NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	type got struct {
		layer   int
		padding bool
	}
	var mu sync.Mutex
	received := map[uint16]got{}
	var readers sync.WaitGroup // the track's and the RTCP reader, which end at Close
	client.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		readers.Add(1)
		defer readers.Done()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			g := got{layer: -1, padding: len(p.Payload) == 0}
			if !g.padding {
				g.layer = int(p.Payload[len(p.Payload)-1])
			}
			mu.Lock()
			received[p.SequenceNumber] = g
			mu.Unlock()
		}
	})

	s, _ := newSimSource(t)
	d := NewDownTrack(s.up)
	s.up.addDown(d)
	d.SetTargetLayer(LayerLow)
	sender, err := server.AddTrack(d)
	if err != nil {
		t.Fatal(err)
	}
	readers.Add(1)
	go func() {
		defer readers.Done()
		(&Peer{}).readSubscriberRTCP(d, sender)
	}()
	offer, err := server.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(server)
	if err := server.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := client.SetRemoteDescription(*server.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	answer, err := client.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := server.SetRemoteDescription(*client.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	connected := time.Now().Add(10 * time.Second)
	for server.ConnectionState() != webrtc.PeerConnectionStateConnected || d.binding.Load() == nil {
		if time.Now().After(connected) {
			t.Fatalf("not connected: %s", server.ConnectionState())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// As in TestNACKAfterSwitchResendsFromThePreviousLayer: low frames,
	// three padding packets after the second, the high key frame after
	// the fourth; lost are the middle padding packet (7), the low
	// layer's last two packets (13, 14) and the key frame's first (15).
	b := *d.binding.Load()
	b.writer = &dropFirst{w: b.writer, drop: map[uint16]bool{7: true, 13: true, 14: true, 15: true}}
	d.binding.Store(&b)

	tick := time.NewTicker(33 * time.Millisecond)
	defer tick.Stop()
	s.now = time.Now().UnixNano()
	for f := range 20 {
		<-tick.C
		switch f {
		case 0:
			s.sendFrame(LayerLow)
		case 1:
			d.Probe(3 * (12 + probePadding))
			s.sendFrame()
			d.Probe(0)
		case 3:
			d.SetTargetLayer(LayerHigh)
			s.sendFrame(LayerHigh)
		default:
			s.sendFrame()
		}
	}
	time.Sleep(100 * time.Millisecond) // the last NACKs answered
	first := b.writer.(*dropFirst).first
	mu.Lock()
	arrived := maps.Clone(received)
	mu.Unlock()
	_ = client.Close()
	_ = server.Close()
	readers.Wait()
	want := map[uint16]got{7: {-1, true}, 13: {LayerLow, false}, 14: {LayerLow, false}, 15: {LayerHigh, false}}
	for off := uint16(0); off < 40; off++ {
		g, ok := arrived[first+off]
		if !ok {
			t.Errorf("sequence number %d (%d after the first) never arrived", first+off, off)
			continue
		}
		if w, lost := want[off]; lost && g != w {
			t.Errorf("%d after the first arrived as %+v; want %+v", off, g, w)
		}
	}
	if d.nacks.Load() != 4 {
		t.Errorf("%d sequence numbers NACKed; want the 4 lost", d.nacks.Load())
	}
}
