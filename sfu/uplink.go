package sfu

import (
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/huddle-rtc/huddle/quality"
)

// uplinkInterval is how often a layer's reader publishes its receive
// statistics for other goroutines to read.
const uplinkInterval = int64(500 * time.Millisecond)

// uplink measures what one layer receives from its publisher: the SFU is
// the receiver here, so loss (after the NACK recovery window), duplicates
// and interarrival jitter come from the packets themselves.
//
// stats is owned by the layer's reader goroutine and updated without a
// lock; every uplinkInterval the reader copies a snapshot into the
// atomics below under a sequence counter (a seqlock), so that readers on
// other goroutines see one consistent snapshot and the packet path never
// takes a lock.
type uplink struct {
	// Reader-owned.
	stats   quality.ReceiveStats
	ssrc    uint32
	started bool
	next    int64 // when to publish next, Unix ns
	// base holds the counters of the streams before the current one (a
	// new SSRC restarts stats), so that published counters never go down.
	base quality.ReceiveSnapshot

	seq                                     atomic.Uint64 // odd while the reader writes
	packets, expected, lost, pending, bytes atomic.Uint64
	recovered, late, duplicates, jitter, at atomic.Uint64 // jitter in ns; at in Unix ns
}

// update records one packet of size bytes that arrived at now (Unix ns),
// of a stream whose RTP clock runs at clockRate Hz. Reader goroutine
// only; it allocates nothing.
func (u *uplink) update(p *packetView, size int, now int64, clockRate uint32) {
	if !u.started || p.ssrc != u.ssrc {
		if u.started {
			// The old stream is over: what it still misses is lost.
			u.base = u.current(now + int64(quality.DefaultRecoveryWindow))
		}
		u.stats.Reset(clockRate, 0)
		u.ssrc, u.started = p.ssrc, true
	}
	if p.payloadEnd == p.payloadStart && p.paddingSize > 0 {
		// A probe without RTX (the publish side negotiates none): it
		// comes on the media SSRC with the latest frame's timestamp.
		u.stats.UpdatePadding(p.seq, p.timestamp, size, time.Unix(0, now))
	} else {
		u.stats.Update(p.seq, p.timestamp, size, time.Unix(0, now))
	}
	if now >= u.next {
		u.publish(now)
		u.next = now + uplinkInterval
	}
}

// current returns the counters of every stream so far, settled at now.
func (u *uplink) current(now int64) quality.ReceiveSnapshot {
	s := u.stats.Snapshot(time.Unix(0, now))
	b := u.base
	s.Packets += b.Packets
	s.Bytes += b.Bytes
	s.Expected += b.Expected
	s.Lost += b.Lost
	s.Recovered += b.Recovered
	s.Late += b.Late
	s.Duplicates += b.Duplicates
	return s
}

// publish makes the counters at now visible to other goroutines.
func (u *uplink) publish(now int64) {
	s := u.current(now)
	u.seq.Add(1)
	u.packets.Store(s.Packets)
	u.bytes.Store(s.Bytes)
	u.expected.Store(s.Expected)
	u.lost.Store(s.Lost)
	u.pending.Store(s.Pending)
	u.recovered.Store(s.Recovered)
	u.late.Store(s.Late)
	u.duplicates.Store(s.Duplicates)
	u.jitter.Store(uint64(s.Jitter))
	u.at.Store(uint64(now))
	u.seq.Add(1)
}

// load returns the latest published snapshot and when it was taken (zero
// before the first packet).
func (u *uplink) load() (quality.ReceiveSnapshot, time.Time) {
	for {
		seq := u.seq.Load()
		if seq&1 != 0 {
			runtime.Gosched() // the reader is writing: a few stores
			continue
		}
		s := quality.ReceiveSnapshot{
			Packets:    u.packets.Load(),
			Bytes:      u.bytes.Load(),
			Expected:   u.expected.Load(),
			Lost:       u.lost.Load(),
			Pending:    u.pending.Load(),
			Recovered:  u.recovered.Load(),
			Late:       u.late.Load(),
			Duplicates: u.duplicates.Load(),
			Jitter:     time.Duration(u.jitter.Load()),
		}
		at := u.at.Load()
		if u.seq.Load() == seq {
			if at == 0 {
				return s, time.Time{}
			}
			return s, time.Unix(0, int64(at))
		}
	}
}

// UplinkStats is what the SFU measured of one published layer (or of a
// whole track, summed over its layers) as the receiver of the
// publisher's packets.
type UplinkStats struct {
	// Receive holds cumulative counters since the track was published
	// (Packets, Bytes, Expected, Lost after recovery, Pending, Recovered,
	// Late, Duplicates) and the latest interarrival jitter (RFC 3550, in
	// the track's clock rate). Its Duration and Bitrate are not set.
	Receive quality.ReceiveSnapshot
	// Bitrate is the received bitrate, bits/s, smoothed over about 1.5 s;
	// 0 when nothing arrived within LayerActive.
	Bitrate int
	// At is when the counters were taken (at most uplinkInterval before
	// the latest packet); zero if nothing arrived yet.
	At time.Time
}

// LayerUplink returns the uplink statistics of one layer (index 0 for a
// track without simulcast), and false when the layer does not exist.
func (u *UpTrack) LayerUplink(index int, now time.Time) (UplinkStats, bool) {
	l := u.layer(int32(index))
	if l == nil {
		return UplinkStats{}, false
	}
	s, at := l.uplink.load()
	st := UplinkStats{Receive: s, At: at}
	if now.UnixNano()-l.lastPacket.Load() <= int64(LayerActive) {
		st.Bitrate = int(max(l.rate.Load(), 1))
	}
	return st, true
}

// Uplink returns the uplink statistics of the whole track: counters and
// bitrates summed over its layers, the worst jitter of the layers that
// sent within LayerActive, and the latest time.
func (u *UpTrack) Uplink(now time.Time) UplinkStats {
	var out UplinkStats
	for i := range maxLayers {
		st, ok := u.LayerUplink(i, now)
		if !ok {
			continue
		}
		r := &out.Receive
		r.Packets += st.Receive.Packets
		r.Bytes += st.Receive.Bytes
		r.Expected += st.Receive.Expected
		r.Lost += st.Receive.Lost
		r.Pending += st.Receive.Pending
		r.Recovered += st.Receive.Recovered
		r.Late += st.Receive.Late
		r.Duplicates += st.Receive.Duplicates
		if st.Bitrate > 0 {
			r.Jitter = max(r.Jitter, st.Receive.Jitter)
		}
		out.Bitrate += st.Bitrate
		if st.At.After(out.At) {
			out.At = st.At
		}
	}
	return out
}

// UpTracks returns the tracks this peer publishes.
func (p *Peer) UpTracks() []*UpTrack {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*UpTrack, 0, len(p.ups))
	for _, up := range p.ups {
		out = append(out, up)
	}
	return out
}

// PublishRTT returns the round-trip time to the publisher, 0 when unknown.
//
// It is the current RTT of the publish transport's selected ICE candidate
// pair, measured by ICE consent checks (a STUN binding request on the
// pair every keepalive interval, 2 s). RTCP cannot do better here: the
// SFU is only the receiver of the publisher's media, and a receiver learns
// the RTT from RTCP only with XR DLRR blocks (RFC 3611), which browsers do
// not send by default; the receiver reports the SFU sends give the RTT to
// the publisher, not to us.
func (p *Peer) PublishRTT() time.Duration {
	p.mu.Lock()
	pub := p.pub
	p.mu.Unlock()
	if pub == nil {
		return 0
	}
	sctp := pub.SCTP()
	if sctp == nil || sctp.Transport() == nil || sctp.Transport().ICETransport() == nil {
		return 0
	}
	st, ok := sctp.Transport().ICETransport().GetSelectedCandidatePairStats()
	if !ok || st.CurrentRoundTripTime <= 0 || math.IsNaN(st.CurrentRoundTripTime) {
		return 0
	}
	return time.Duration(st.CurrentRoundTripTime * float64(time.Second))
}
