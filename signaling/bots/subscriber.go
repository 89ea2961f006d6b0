package bots

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/quality"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// subscriberStats is what one subscriber bot measures, filled by its track
// readers and by the server's quality messages.
type subscriberStats struct {
	firstMedia atomic.Int64 // nanoseconds from dial to the first RTP packet; 0 before

	mu      sync.Mutex
	tracks  []trackResult
	live    []*trackReader // video tracks being received, for the timeline
	nacks   uint64         // from the server's latest stats (cumulative)
	plis    uint64
	estKbps []int   // every estimate the server reported
	score   float64 // the latest own quality score
}

// trackResult is one received track, summed up when it ends.
type trackResult struct {
	sid     string
	kind    string
	stats   quality.ReceiveSnapshot
	latency *histogram // forwarding latency from abs-capture-time
	layers  [3]time.Duration
	// lastLayer is the layer of the last keyframe (video), or -1.
	lastLayer int
}

// onQuality records the server's statistics about this subscriber.
func (st *subscriberStats) onQuality(self string) func(*protocol.Quality) {
	return func(q *protocol.Quality) {
		if q.Stats == nil || q.Participant != self && self != "" {
			return
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		st.nacks, st.plis = q.Stats.NACKs, q.Stats.PLIs
		st.score = q.Score
		if q.Stats.EstimateKbps > 0 {
			st.estKbps = append(st.estKbps, q.Stats.EstimateKbps)
		}
	}
}

func newSubscriberStats() *subscriberStats { return &subscriberStats{} }

// runSubscriber joins with auto-subscribe and receives until ctx ends.
func runSubscriber(ctx context.Context, e *env, spec botSpec, token string, res *botResult) error {
	st := res.sub
	dialStart := time.Now()
	var cl atomic.Pointer[client.Client]
	maxLayer := maxLayerOf(e.cfg.MaxLayer, spec.index)
	width, height, _ := parseSize(maxLayerOf(e.cfg.MaxSize, spec.index)) // checked by Run
	wants := func(c *client.Client, sids ...string) {
		if maxLayer != "" {
			_ = c.SetQuality(maxLayer, nil, sids...)
		}
		if e.cfg.MaxSize != "" {
			_ = c.SetVideoSize(width, height, sids...)
		}
	}
	onTrack := func(info protocol.Track, tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		if c := cl.Load(); c != nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
			wants(c, info.SID)
		}
		receiveTrack(st, dialStart, info, tr, recv, e.progress)
	}
	jctx, cancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	c, err := client.Dial(jctx, spec.urls[0], token, client.Options{
		API:       e.api,
		OnTrack:   onTrack,
		OnQuality: st.onQuality(""),
		Logger:    e.cfg.Logger,
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	cl.Store(c)
	// Tracks that arrived before the client was known.
	var sids []string
	for _, t := range c.Tracks() {
		if t.Kind == protocol.KindVideo {
			sids = append(sids, t.SID)
		}
	}
	if len(sids) > 0 {
		wants(c, sids...)
	}
	res.joined = true
	res.joinTime = time.Since(dialStart)
	e.progress.joined.Add(1)
	stopTimeline := e.timeline.follow(spec.identity, st)
	select {
	case <-ctx.Done():
	case <-c.Done(): // the server ended the session
	}
	stopTimeline()
	leave(ctx, c) // returns once every track reader has returned
	return nil
}

// progressBatch is how many packets a reader counts before it publishes
// them to the shared progress counters.
const progressBatch = 32

// receiveTrack reads one track until it ends: a reused buffer and header,
// no depacketizing, no decoding.
func receiveTrack(st *subscriberStats, dialStart time.Time, info protocol.Track, tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver, pr *progress) {
	r := newTrackReader(tr.Codec().ClockRate, client.ExtensionID(recv.GetParameters().HeaderExtensions, client.URIAbsCaptureTime))
	r.sid = info.SID
	if tr.Kind() == webrtc.RTPCodecTypeVideo && tr.Codec().MimeType == webrtc.MimeTypeVP8 {
		r.vp8 = true
		st.mu.Lock()
		st.live = append(st.live, r)
		st.mu.Unlock()
	}
	buf := make([]byte, 1500)
	var batchPackets, batchBytes int64
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			break
		}
		now := time.Now()
		if !r.packet(buf[:n], now) {
			continue
		}
		if st.firstMedia.Load() == 0 && st.firstMedia.CompareAndSwap(0, int64(now.Sub(dialStart))) {
			pr.media.Add(1)
		}
		batchPackets++
		batchBytes += int64(n)
		if batchPackets == progressBatch {
			pr.recvPackets.Add(batchPackets)
			pr.recvBytes.Add(batchBytes)
			batchPackets, batchBytes = 0, 0
		}
	}
	pr.recvPackets.Add(batchPackets)
	pr.recvBytes.Add(batchBytes)
	kind := info.Kind
	if kind == "" {
		kind = tr.Kind().String()
	}
	st.mu.Lock()
	st.tracks = append(st.tracks, trackResult{sid: info.SID, kind: kind, stats: r.stats.Snapshot(time.Now()), latency: &r.latency, layers: r.layerDur, lastLayer: int(r.layer.Load())})
	for i, l := range st.live {
		if l == r {
			st.live = append(st.live[:i], st.live[i+1:]...)
			break
		}
	}
	st.mu.Unlock()
}

// trackReader measures one received stream, packet by packet, without
// allocating.
type trackReader struct {
	sid     string
	stats   *quality.ReceiveStats
	extID   uint8 // abs-capture-time; 0 when not negotiated
	latency histogram
	header  rtp.Header // reused: Unmarshal keeps its slices' capacity

	// VP8 video: the layer received, told by the size of each keyframe.
	vp8      bool
	layer    atomic.Int32 // -1 before the first keyframe
	layerDur [3]time.Duration
	lastAt   time.Time

	// For the timeline, published every publishEvery.
	lastPub    time.Time
	pubPackets atomic.Uint64
	pubLost    atomic.Uint64
}

// publishEvery is how often a reader publishes its counters.
const publishEvery = 250 * time.Millisecond

func newTrackReader(clockRate uint32, absCaptureTimeID uint8) *trackReader {
	r := &trackReader{stats: quality.NewReceiveStats(clockRate, 0), extID: absCaptureTimeID}
	r.layer.Store(-1)
	return r
}

// packet records one RTP packet that arrived at now; false when it is not
// RTP.
func (r *trackReader) packet(pkt []byte, now time.Time) bool {
	h := &r.header
	n, err := h.Unmarshal(pkt)
	if err != nil {
		return false
	}
	r.stats.Update(h.SequenceNumber, h.Timestamp, len(pkt), now)
	if r.vp8 {
		if l := vp8Layer(pkt[n:]); l >= 0 {
			r.layer.Store(int32(l))
		}
		if l := r.layer.Load(); l >= 0 && !r.lastAt.IsZero() {
			if d := now.Sub(r.lastAt); d > 0 && d < time.Second {
				r.layerDur[l] += d
			}
		}
		r.lastAt = now
		if now.Sub(r.lastPub) >= publishEvery {
			s := r.stats.Snapshot(now)
			r.pubPackets.Store(s.Packets)
			r.pubLost.Store(s.Lost)
			r.lastPub = now
		}
	}
	if r.extID != 0 {
		if b := h.GetExtension(r.extID); len(b) >= 8 {
			r.latency.add(now.Sub(fromNTP(binary.BigEndian.Uint64(b))))
		}
	}
	return true
}

// vp8Layer returns the simulcast layer a VP8 payload belongs to when it
// starts a keyframe (from the frame's width: 1280 f, 640 h, less q), or -1.
func vp8Layer(b []byte) int {
	if len(b) < 1 || b[0]&0x10 == 0 || b[0]&0x07 != 0 {
		return -1 // not the start of a frame
	}
	i := 1
	if b[0]&0x80 != 0 {
		if len(b) < 2 {
			return -1
		}
		x := b[1]
		i = 2
		if x&0x80 != 0 {
			if len(b) <= i {
				return -1
			}
			if b[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if x&0x40 != 0 {
			i++
		}
		if x&0x30 != 0 {
			i++
		}
	}
	// Key frame: P bit 0, then a 3-byte tag, the start code, 14-bit width.
	if len(b) < i+10 || b[i]&0x01 != 0 || b[i+3] != 0x9d || b[i+4] != 0x01 || b[i+5] != 0x2a {
		return -1
	}
	w := int(b[i+6]) | int(b[i+7]&0x3f)<<8
	switch {
	case w >= 1280:
		return 2
	case w >= 640:
		return 1
	}
	return 0
}
