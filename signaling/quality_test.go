package signaling_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/quality"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// TestQualityMessagesAndMetrics: a subscriber gets its own quality with
// its stats, the room gets it without, and /metrics shows it.
func TestQualityMessagesAndMetrics(t *testing.T) {
	s := newTestServer(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ada := s.join(t, "quality", "ada")
	bob := s.join(t, "quality", "bob")
	if _, err := ada.publish(ctx, t, protocol.KindAudio, protocol.KindVideo); err != nil {
		t.Fatal(err)
	}
	find := func(p *peer, withStats bool) *protocol.Quality {
		for _, ev := range p.eventsCopy() {
			if q, ok := ev.Message.(*protocol.Quality); ok && q.Identity == "bob" && (q.Stats != nil) == withStats {
				return q
			}
		}
		return nil
	}
	if !waitFor(10*time.Second, func() bool { return find(bob, true) != nil && find(ada, false) != nil }) {
		t.Fatalf("no quality messages: bob's own %v, ada's of bob %v", find(bob, true), find(ada, false))
	}
	own := find(bob, true)
	if own.Score < 1 || own.Score > 5 || own.Level == "" || own.Audio == nil || own.Video == nil {
		t.Errorf("bob's quality %+v", own)
	}
	if own.Stats.EstimateKbps <= 0 {
		t.Errorf("bob's stats %+v: no estimate", own.Stats)
	}
	res, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`huddle_participant_quality_score{identity="bob"`, `huddle_participant_estimate_bps{identity="bob"`,
		`huddle_track_bitrate_bps{kind="video",layer="q"`, `huddle_track_subscribers{kind="audio"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// publishRTP publishes an audio and a video track and writes one RTP
// packet to each every 20 ms, stamped with the time it is written. Every
// dropEvery-th packet (0: none) is never sent, as if the network had lost
// it: its sequence number is skipped, and since the packet never reached
// the client's retransmission buffer, no NACK can recover it.
func publishRTP(ctx context.Context, t *testing.T, p *peer, dropEvery int) map[string]string {
	t.Helper()
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, p.identity+"-a", p.identity)
	if err != nil {
		t.Fatal(err)
	}
	video, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, p.identity+"-v", p.identity)
	if err != nil {
		t.Fatal(err)
	}
	sids, err := p.Publish(ctx, client.PublishTrack{Track: audio}, client.PublishTrack{Track: video})
	if err != nil {
		t.Fatalf("%s: publish: %v", p.identity, err)
	}
	p.writers.Add(1)
	go func() {
		defer p.writers.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if dropEvery > 0 && i%dropEvery == dropEvery-1 {
				continue
			}
			el := time.Since(start)
			_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(el * 48000 / time.Second)}, Payload: opusFrame})
			_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i + 7000), Timestamp: uint32(el * 90000 / time.Second), Marker: true}, Payload: vp8Frame})
		}
	}()
	return map[string]string{"audio": sids[0], "video": sids[1]}
}

// TestUplinkQuality: a publisher whose packets are lost on the way in at
// a known rate gets that loss in its uplink figures and a lower score
// than a clean publisher in the same room; the clean one's jitter is
// near 0 on loopback; the REMB a subscriber sends shows in its stats and
// on /metrics, with the per-track uplink figures.
func TestUplinkQuality(t *testing.T) {
	s := newTestServer(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	remb := func(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		_, _ = recv.Transport().WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: 1_500_000, SSRCs: []uint32{uint32(tr.SSRC())}}})
	}
	lea := s.join(t, "uplink", "lea") // her uplink loses every 10th packet
	cal := s.joinWith(t, "uplink", "cal", remb)
	leaTracks := publishRTP(ctx, t, lea, 10)
	calTracks := publishRTP(ctx, t, cal, 0)

	// latest returns the newest quality message about who among the
	// events of p, with or without the participant's own stats.
	latest := func(p *peer, who string, own bool) *protocol.Quality {
		var q *protocol.Quality
		for _, ev := range p.eventsCopy() {
			if m, ok := ev.Message.(*protocol.Quality); ok && m.Identity == who && (m.Stats != nil) == own {
				q = m
			}
		}
		return q
	}
	settled := func(q *protocol.Quality, tracks map[string]string, lo, hi float64) bool {
		if q == nil || q.Uplink == nil {
			return false
		}
		for _, sid := range tracks {
			if tu, ok := q.Uplink.Tracks[sid]; !ok || tu.LossPct < lo || tu.LossPct > hi {
				return false
			}
		}
		return true
	}
	// The participants' own copies carry their uplink figures whenever
	// they change; the room's copies only when a score moves.
	ok := waitFor(20*time.Second, func() bool {
		c := latest(cal, "cal", true)
		return settled(latest(lea, "lea", true), leaTracks, 6, 14) && settled(c, calTracks, 0, 1) && c.Stats.REMBKbps > 0
	})
	leaQ, calQ := latest(lea, "lea", true), latest(cal, "cal", true)
	for _, q := range []*protocol.Quality{leaQ, calQ} {
		if q != nil && q.Uplink != nil {
			t.Logf("%s: score %.1f %s, audio %+v, video %+v, uplink %+v", q.Identity, q.Score, q.Level, q.Audio, q.Video, *q.Uplink)
		}
	}
	if !ok {
		t.Fatalf("no settled uplink figures: lea %+v, cal %+v", leaQ, calQ)
	}
	if leaQ.Uplink.Score >= calQ.Uplink.Score || leaQ.Score >= calQ.Score {
		t.Errorf("lossy lea scores uplink %.1f, overall %.1f; clean cal %.1f, %.1f: want lea lower", leaQ.Uplink.Score, leaQ.Score, calQ.Uplink.Score, calQ.Score)
	}
	for sid, tu := range leaQ.Uplink.Tracks {
		if tu.Score < leaQ.Uplink.Score {
			t.Errorf("lea's uplink scores %.1f, but her track %s %.1f", leaQ.Uplink.Score, sid, tu.Score)
		}
	}
	if v := leaQ.Uplink.Tracks[leaTracks["video"]]; v.Score > 2 {
		t.Errorf("lea's video loses %.1f%% and scores %.1f; want under 2", v.LossPct, v.Score)
	}
	if leaQ.Score > leaQ.Uplink.Score || leaQ.Level != leaQ.Uplink.Level && leaQ.Score == leaQ.Uplink.Score {
		t.Errorf("lea's score %.1f %s is not the worse of her downlink and uplink %.1f %s", leaQ.Score, leaQ.Level, leaQ.Uplink.Score, leaQ.Uplink.Level)
	}
	// The room hears of lea's uplink when her score moves (the copies
	// to her and to the room leave in the same tick).
	if !waitFor(5*time.Second, func() bool {
		room := latest(cal, "lea", false)
		return room != nil && room.Uplink != nil && room.Uplink.Level == string(quality.Poor) && room.Score == room.Uplink.Score
	}) {
		t.Errorf("the room's copy of lea's quality %+v lacks her poor uplink", latest(cal, "lea", false))
	}
	if up := calQ.Uplink; up.JitterMs > 10 || up.RTTMs <= 0 || up.RTTMs > 500 || up.Kbps <= 0 {
		t.Errorf("cal's uplink on loopback: jitter %.1f ms, rtt %.1f ms, %.0f kbit/s; want jitter under 10 ms, an rtt, a rate", up.JitterMs, up.RTTMs, up.Kbps)
	}
	if calQ.Stats.REMBKbps != 1500 {
		t.Errorf("cal sent REMB 1500 kbit/s; its stats say %d", calQ.Stats.REMBKbps)
	}

	var body []byte
	scrape := func() {
		res, err := http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(res.Body)
		res.Body.Close()
	}
	metric := func(name, label string) (float64, bool) {
		re := regexp.MustCompile(`(?m)^` + name + `\{[^}]*` + regexp.QuoteMeta(label) + `[^}]*\} (\S+)$`)
		m := re.FindSubmatch(body)
		if m == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		return v, err == nil
	}
	// Cal receives lea's media with lea's losses in it: her uplink is to
	// blame, not cal's downlink (the server takes the gaps it forwarded out
	// of cal's receiver reports' counts).
	var calVideo float64
	if !waitFor(10*time.Second, func() bool {
		scrape()
		calVideo, _ = metric("huddle_participant_quality_score", `identity="cal",kind="video"`)
		return calVideo >= 4
	}) {
		t.Errorf("cal's downlink video scores %.1f: lea's uplink loss counted against it", calVideo)
	}
	if v, ok := metric("huddle_track_uplink_loss_ratio", `track="`+leaTracks["video"]+`"`); !ok || v < 0.06 || v > 0.14 {
		t.Errorf("lea's video uplink loss on /metrics: %v (%v); want about 0.1", v, ok)
	}
	if v, ok := metric("huddle_track_uplink_lost_total", `track="`+calTracks["audio"]+`"`); !ok || v != 0 {
		t.Errorf("cal's audio lost on /metrics: %v (%v); want 0", v, ok)
	}
	if v, ok := metric("huddle_track_uplink_score", `track="`+calTracks["video"]+`"`); !ok || v < 4 {
		t.Errorf("cal's video uplink score on /metrics: %v (%v); want 4 or more", v, ok)
	}
	if v, ok := metric("huddle_participant_remb_bps", `identity="cal"`); !ok || v != 1.5e6 {
		t.Errorf("cal's REMB on /metrics: %v (%v); want 1.5e6", v, ok)
	}
}

// dropVideo is an interceptor that loses every nth RTP packet of each
// outgoing video stream on the wire, after the NACK responder (a later
// interceptor) kept it, as a lossy network would: the SFU's NACKs get it
// back.
type dropVideo struct{ every int64 }

func (f dropVideo) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &dropVideoInterceptor{every: f.every}, nil
}

type dropVideoInterceptor struct {
	interceptor.NoOp
	every int64
}

func (d *dropVideoInterceptor) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.HasPrefix(info.MimeType, "video/") {
		return w
	}
	var n atomic.Int64
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if n.Add(1)%d.every == 0 {
			return h.MarshalSize() + len(payload), nil
		}
		return w.Write(h, payload, a)
	})
}

// TestUplinkRetransmissionsAreNotLoss: packets lost on the way in but
// recovered by NACK count as recovered, not as lost, and do not lower the
// publisher's uplink score.
func TestUplinkRetransmissionsAreNotLoss(t *testing.T) {
	s := newTestServer(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api, err := client.NewAPI(client.APIOptions{LoopbackOnly: true, Interceptors: []interceptor.Factory{dropVideo{every: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	lossy := &testServer{url: s.url, api: api}
	ned := lossy.join(t, "recover", "ned")
	tracks := publishRTP(ctx, t, ned, 0)
	label := `layer="q",participant="` + ned.SID() + `",room="recover",track="` + tracks["video"] + `"`
	var packets, lost, recovered float64
	if !waitFor(20*time.Second, func() bool {
		res, err := http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		value := func(name string) float64 {
			m := regexp.MustCompile(`(?m)^` + name + `\{kind="video",` + regexp.QuoteMeta(label) + `\} (\S+)$`).FindSubmatch(body)
			if m == nil {
				return -1
			}
			v, _ := strconv.ParseFloat(string(m[1]), 64)
			return v
		}
		packets, lost, recovered = value("huddle_track_uplink_packets_total"), value("huddle_track_uplink_lost_total"), value("huddle_track_uplink_recovered_total")
		return recovered >= 30
	}) {
		t.Fatalf("video uplink: %v packets, %v lost, %v recovered; want 30 recovered", packets, lost, recovered)
	}
	t.Logf("video uplink: %v packets, %v lost, %v recovered", packets, lost, recovered)
	if ratio := recovered / packets; ratio < 0.07 || ratio > 0.13 || lost > 2 {
		t.Errorf("video uplink: %v packets, %v lost, %v recovered; want about 10%% recovered and none lost", packets, lost, recovered)
	}
	own := func() *protocol.Quality {
		var q *protocol.Quality
		for _, ev := range ned.eventsCopy() {
			if m, ok := ev.Message.(*protocol.Quality); ok && m.Stats != nil && m.Uplink != nil {
				q = m
			}
		}
		return q
	}
	q := own()
	if q == nil {
		t.Fatal("ned got no quality message with its uplink")
	}
	if v, ok := q.Uplink.Tracks[tracks["video"]]; !ok || v.LossPct > 1 || v.Score < 4 {
		t.Errorf("ned's video uplink %+v (%v); want no loss and a score of 4 or more", v, ok)
	}
}
