package bots

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

func TestClips(t *testing.T) {
	for _, name := range []string{"vp8_180p.ivf", "vp8_360p.ivf", "vp8_720p.ivf"} {
		c, err := loadVP8(name)
		if err != nil {
			t.Fatal(err)
		}
		// 10 s at 30 fps with a key frame every 75 frames (Makefile: samples).
		if len(c.frames) != 300 || !slicesEqual(c.keyframes, []int{0, 75, 150, 225}) {
			t.Errorf("%s: %d frames, key frames %v", name, len(c.frames), c.keyframes)
		}
		if c.samples != 3000 || c.frameDur != time.Second/30 {
			t.Errorf("%s: %d samples per frame every %v, want 3000 every 33.3ms", name, c.samples, c.frameDur)
		}
	}
	a, err := loadOpus(AudioClip)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.frames) < 490 || len(a.frames) > 505 || a.samples != 960 || a.frameDur != 20*time.Millisecond {
		t.Errorf("opus: %d packets of %d samples every %v", len(a.frames), a.samples, a.frameDur)
	}
	for i, f := range a.frames {
		if bytes.HasPrefix(f, []byte("Opus")) {
			t.Fatalf("opus packet %d is a header page", i)
		}
	}
	if _, err := loadVP8("missing.ivf"); err == nil {
		t.Error("loading a missing clip succeeded")
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNTPTime(t *testing.T) {
	for _, in := range []time.Time{
		time.Unix(0, 0),
		time.Unix(1_732_250_000, 123_456_789),
		time.Date(2036, 1, 1, 0, 0, 0, 999_999_999, time.UTC),
	} {
		v := ntpTime(in)
		if got := fromNTP(v); got.Sub(in).Abs() > time.Nanosecond {
			t.Errorf("fromNTP(ntpTime(%v)) = %v", in, got)
		}
	}
	// 1970-01-01 is 2208988800 s after the NTP epoch, with no fraction.
	if v := ntpTime(time.Unix(0, 0)); v != 2208988800<<32 {
		t.Errorf("ntpTime(Unix 0) = %#x", v)
	}
	if v := ntpTime(time.Unix(0, 500_000_000)); v&0xffffffff != 1<<31 {
		t.Errorf("half a second has fraction %#x, want 0x80000000", v&0xffffffff)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	if h.quantile(0.5) != 0 {
		t.Error("empty histogram has a median")
	}
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond / 10) // 0.1 ms … 100 ms
	}
	h.add(-time.Second) // disagreeing clocks: counted, in the first bucket
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}} {
		got := h.quantile(c.q)
		if rel := float64(got-c.want) / float64(c.want); rel < -0.03 || rel > 0.03 {
			t.Errorf("quantile(%v) = %v, want %v ± 3%%", c.q, got, c.want)
		}
	}
	var m histogram
	m.merge(&h)
	m.merge(nil)
	if m.n != h.n || m.quantile(0.5) != h.quantile(0.5) {
		t.Error("merge lost counts")
	}
	var big histogram
	big.add(time.Hour)
	if big.quantile(1) < 90*time.Second {
		t.Errorf("an hour lands at %v", big.quantile(1))
	}
}

func TestQuantiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if q := quantiles(ds); q.P50 != 50 || q.P99 != 99 {
		t.Errorf("quantiles = %+v, want p50 50 p99 99", q)
	}
	if q := quantiles([]time.Duration{7 * time.Millisecond}); q.P50 != 7 || q.P99 != 7 {
		t.Errorf("one sample: %+v", q)
	}
	if q := quantiles(nil); q != (Quantiles{}) {
		t.Errorf("no samples: %+v", q)
	}
}

func TestPlan(t *testing.T) {
	cfg := Config{Publishers: 3, Subscribers: 4, Rooms: 2, Room: "load", Seed: 7}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	specs := plan(&cfg)
	if len(specs) != 7 {
		t.Fatalf("%d bots, want 7", len(specs))
	}
	rooms := map[string]int{}
	ids := map[string]bool{}
	for i, s := range specs {
		rooms[s.room]++
		ids[s.identity] = true
		if want := rolePublisher; i < 3 && s.role != want {
			t.Errorf("bot %d is a %s, want publishers first", i, s.role)
		}
		if i > 0 {
			gap := s.start - specs[i-1].start
			if gap < 15*time.Millisecond || gap > 25*time.Millisecond {
				t.Errorf("bot %d starts %v after the previous one, want 20ms ± 25%%", i, gap)
			}
		}
	}
	if rooms["load-1"] != 4 || rooms["load-2"] != 3 || len(ids) != 7 {
		t.Errorf("rooms %v, %d identities", rooms, len(ids))
	}
	again := plan(&cfg)
	for i := range specs {
		if specs[i].start != again[i].start || specs[i].rng.Uint64() != again[i].rng.Uint64() {
			t.Fatal("the same seed gave another plan")
		}
	}
	one := Config{Subscribers: 2}
	_ = one.setDefaults()
	for _, s := range plan(&one) {
		if s.room != "bots" {
			t.Errorf("room %q with one room, want bots", s.room)
		}
	}
	if err := (&Config{}).setDefaults(); err == nil {
		t.Error("a run with no bots is accepted")
	}
	if !*one.LoopbackOnly {
		t.Error("the default URL is loopback, but LoopbackOnly is off")
	}
	remote := Config{Subscribers: 1, URL: "https://huddle.example"}
	_ = remote.setDefaults()
	if *remote.LoopbackOnly {
		t.Error("a remote URL restricts ICE to loopback")
	}
}

func TestAggregate(t *testing.T) {
	cfg := &Config{Publishers: 1, Subscribers: 3, Rooms: 1}
	sub := func(first time.Duration, packets, lost uint64, lat time.Duration) *subscriberStats {
		s := newSubscriberStats()
		s.firstMedia.Store(int64(first))
		if packets > 0 {
			h := &histogram{}
			for range packets {
				h.add(lat)
			}
			tr := trackResult{sid: "TR_1", kind: "video", latency: h}
			tr.stats.Packets, tr.stats.Bytes, tr.stats.Lost = packets, packets*1000, lost
			s.tracks = append(s.tracks, tr)
		}
		return s
	}
	results := []*botResult{
		{spec: botSpec{role: rolePublisher, room: "bots"}, joined: true, joinTime: 10 * time.Millisecond, sentPackets: 2000, sentBytes: 2_000_000},
		{spec: botSpec{role: roleSubscriber, room: "bots"}, joined: true, joinTime: 20 * time.Millisecond, sub: sub(100*time.Millisecond, 990, 10, time.Millisecond)},
		{spec: botSpec{role: roleSubscriber, room: "bots"}, joined: true, joinTime: 30 * time.Millisecond, sub: sub(0, 0, 0, 0)},
		{spec: botSpec{role: roleSubscriber, room: "bots"}, err: errors.New("token_invalid: nope"), sub: newSubscriberStats()},
	}
	r := aggregate(cfg, results, 2*time.Second)
	if r.Participants != 4 || r.Joined != 3 || r.Failed != 1 || r.NoMedia != 1 {
		t.Errorf("counts: %+v", r)
	}
	if r.RecvPackets != 990 || r.LostPackets != 10 || r.LossPct != 1 || r.RecvKbps != 3960 || r.SentKbps != 8000 {
		t.Errorf("traffic: %+v", r)
	}
	if r.JoinMS.P50 != 20 || r.JoinMS.P99 != 30 || r.FirstMediaMS.P50 != 100 {
		t.Errorf("times: join %+v first media %+v", r.JoinMS, r.FirstMediaMS)
	}
	if r.LatencyMS.P50 < 0.97 || r.LatencyMS.P50 > 1.03 {
		t.Errorf("latency %+v, want about 1 ms", r.LatencyMS)
	}
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "token_invalid") {
		t.Errorf("errors %q", r.Errors)
	}
	err := r.Err()
	if err == nil || !strings.Contains(err.Error(), "1 of 4 bots failed") || !strings.Contains(err.Error(), "1 of 3 subscribers received nothing") {
		t.Errorf("Err() = %v", err)
	}

	var out bytes.Buffer
	if err := r.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(out.Bytes(), &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"participants", "joined", "failed", "join_ms", "first_media_ms", "recv_packets", "lost_packets", "loss_pct", "recv_kbps", "latency_ms"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("JSON has no %q: %s", k, out.String())
		}
	}
	out.Reset()
	if err := r.WriteText(&out); err != nil || !strings.Contains(out.String(), "joined       3 of 4") {
		t.Errorf("text summary: %v\n%s", err, out.String())
	}
	if (&Report{Participants: 2, Joined: 2}).Err() != nil {
		t.Error("a clean run has an error")
	}
}

func TestTrackReaderDoesNotAllocate(t *testing.T) {
	const extID = 3
	r := newTrackReader(90000, extID)
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}, Payload: make([]byte, 1000)}
	ext := make([]byte, 8)
	buf := make([]byte, 1500)
	now := time.Now()
	var seq uint16
	allocs := testing.AllocsPerRun(1000, func() {
		seq++
		now = now.Add(time.Millisecond)
		p.SequenceNumber, p.Timestamp = seq, uint32(seq)*3000
		putNTP(ext, now.Add(-2*time.Millisecond))
		p.Header.Extensions = p.Header.Extensions[:0]
		_ = p.SetExtension(extID, ext)
		n, _ := p.MarshalTo(buf)
		if !r.packet(buf[:n], now) {
			t.Fatal("not RTP")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet", allocs)
	}
	if got := r.latency.quantile(0.5); got < 1900*time.Microsecond || got > 2100*time.Microsecond {
		t.Errorf("latency %v, want 2ms", got)
	}
	if r.packet([]byte{1, 2}, now) {
		t.Error("a 2-byte packet parsed as RTP")
	}
}

func putNTP(b []byte, t time.Time) {
	v := ntpTime(t)
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// TestSendAndReceiveOverLoopback connects a publisher's send loop to a
// subscriber's receive loop through two Pion PeerConnections (no server):
// paced frames, abs-capture-time on every packet, nothing lost.
func TestSendAndReceiveOverLoopback(t *testing.T) {
	api, err := client.NewAPI(client.APIOptions{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	video, err := loadVP8("vp8_180p.ivf")
	if err != nil {
		t.Fatal(err)
	}
	send, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	recv, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	track, err := webrtc.NewTrackLocalStaticRTP(video.codec, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := send.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	st := newSubscriberStats()
	pr := &progress{}
	dialStart := time.Now()
	var wg sync.WaitGroup
	recv.OnTrack(func(rt *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		wg.Add(1)
		defer wg.Done()
		receiveTrack(st, dialStart, protocol.Track{SID: "TR_v"}, rt, r, pr)
	})
	connect(t, send, recv)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	extID := client.ExtensionID(tr.Sender().GetParameters().HeaderExtensions, client.URIAbsCaptureTime)
	if extID == 0 {
		t.Fatal("abs-capture-time not negotiated")
	}
	wg.Add(1)
	go func() { // drain RTCP so the NACK responder works; ends with send
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Sender().Read(buf); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	sent := sendClip(ctx, video, track, sendOptions{absCaptureID: extID}, 0, 65000, 1, pr) // the sequence number wraps
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond) // let the last packets land
	_ = recv.Close()
	_ = send.Close()
	wg.Wait()

	frames := elapsed.Seconds() * 30
	// Paced, not bursted (at most 3 packets per 30 fps frame of wall time);
	// the low bound only catches a stalled sender: a loaded machine (CI
	// runs packages in parallel under the race detector) sends late.
	if perFrame := float64(sent.packets) / frames; perFrame < 0.3 || perFrame > 3 {
		t.Errorf("sent %d packets in %v: %.1f per frame at 30 fps", sent.packets, elapsed, perFrame)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.tracks) != 1 {
		t.Fatalf("%d tracks received", len(st.tracks))
	}
	got := st.tracks[0]
	if got.stats.Packets == 0 || got.stats.Packets+5 < sent.packets || got.stats.Lost != 0 {
		t.Errorf("sent %d, received %+v", sent.packets, got.stats)
	}
	if got.latency.n != got.stats.Packets {
		t.Errorf("%d of %d packets had abs-capture-time", got.latency.n, got.stats.Packets)
	}
	if p50 := got.latency.quantile(0.5); p50 > 50*time.Millisecond {
		t.Errorf("loopback latency p50 %v", p50)
	}
	if st.firstMedia.Load() == 0 || pr.media.Load() != 1 {
		t.Error("first media not recorded")
	}
}

// connect negotiates a and b directly, without trickle.
func connect(t *testing.T, a, b *webrtc.PeerConnection) {
	t.Helper()
	offer, err := a.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(a)
	if err := a.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := b.SetRemoteDescription(*a.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	answer, err := b.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(b)
	if err := b.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := a.SetRemoteDescription(*b.LocalDescription()); err != nil {
		t.Fatal(err)
	}
}
