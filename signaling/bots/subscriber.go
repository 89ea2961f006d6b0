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
// readers.
type subscriberStats struct {
	firstMedia atomic.Int64 // nanoseconds from dial to the first RTP packet; 0 before

	mu     sync.Mutex
	tracks []trackResult
}

// trackResult is one received track, summed up when it ends.
type trackResult struct {
	sid     string
	kind    string
	stats   quality.ReceiveSnapshot
	latency *histogram // forwarding latency from abs-capture-time
}

func newSubscriberStats() *subscriberStats { return &subscriberStats{} }

// runSubscriber joins with auto-subscribe and receives until ctx ends.
func runSubscriber(ctx context.Context, e *env, spec botSpec, token string, res *botResult) error {
	st := res.sub
	dialStart := time.Now()
	onTrack := func(info protocol.Track, tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		receiveTrack(st, dialStart, info, tr, recv, e.progress)
	}
	jctx, cancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	c, err := client.Dial(jctx, spec.urls[0], token, client.Options{
		API:     e.api,
		OnTrack: onTrack,
		Logger:  e.cfg.Logger,
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	res.joined = true
	res.joinTime = time.Since(dialStart)
	e.progress.joined.Add(1)
	select {
	case <-ctx.Done():
	case <-c.Done(): // the server ended the session
	}
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
	st.tracks = append(st.tracks, trackResult{sid: info.SID, kind: kind, stats: r.stats.Snapshot(time.Now()), latency: &r.latency})
	st.mu.Unlock()
}

// trackReader measures one received stream, packet by packet, without
// allocating.
type trackReader struct {
	stats   *quality.ReceiveStats
	extID   uint8 // abs-capture-time; 0 when not negotiated
	latency histogram
	header  rtp.Header // reused: Unmarshal keeps its slices' capacity
}

func newTrackReader(clockRate uint32, absCaptureTimeID uint8) *trackReader {
	return &trackReader{stats: quality.NewReceiveStats(clockRate, 0), extID: absCaptureTimeID}
}

// packet records one RTP packet that arrived at now; false when it is not
// RTP.
func (r *trackReader) packet(pkt []byte, now time.Time) bool {
	h := &r.header
	if _, err := h.Unmarshal(pkt); err != nil {
		return false
	}
	r.stats.Update(h.SequenceNumber, h.Timestamp, len(pkt), now)
	if r.extID != 0 {
		if b := h.GetExtension(r.extID); len(b) >= 8 {
			r.latency.add(now.Sub(fromNTP(binary.BigEndian.Uint64(b))))
		}
	}
	return true
}
