package sfu

import (
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
)

// receiverReport keeps the latest receiver report a subscriber sent for
// one down-track.
type receiverReport struct {
	fractionLost atomic.Uint32 // of 256, since the previous report
	totalLost    atomic.Uint32
	jitter       atomic.Uint32 // RTP timestamp units
	rtt          atomic.Int64  // ns; 0 when unknown
	at           atomic.Int64  // Unix ns of the latest report
	// The latest REMB the subscriber sent that names this down-track
	// (browsers may send it besides transport-wide feedback).
	remb   atomic.Uint64 // bits/s
	rembAt atomic.Int64  // Unix ns; 0 when none
	// counts are the latest report's cumulative figures with the holes
	// the down-track had forwarded when it arrived, kept together.
	counts atomic.Pointer[rrCounts]
}

// rrCounts are one receiver report's cumulative figures.
type rrCounts struct {
	totalLost uint32 // cumulative lost (24 bits in the report)
	highest   uint32 // extended highest sequence number received
	holes     uint64 // sequence numbers the server had skipped (source gaps), net of those filled late
}

// ReceiverStats is what a subscriber's receiver reports say about one
// down-track.
type ReceiverStats struct {
	FractionLost float64       // 0..1, over the latest report's interval
	TotalLost    uint32        // cumulative
	Jitter       time.Duration // interarrival jitter
	RTT          time.Duration // from the report's LSR and DLSR; 0 when unknown
	At           time.Time     // when the latest report arrived; zero if none
	// REMB is the latest receiver estimated maximum bitrate the
	// subscriber sent about this down-track, bits/s, and REMBAt when it
	// arrived (zero if none).
	REMB   uint64
	REMBAt time.Time
	// Cumulative is the latest report's cumulative counts, for loss over
	// any interval between two reports (see DownlinkLoss).
	Cumulative ReportCounts
}

// ReportCounts are a receiver report's cumulative counts.
type ReportCounts struct {
	Lost     uint32 // packets lost (as the receiver counts them)
	Expected uint32 // extended highest sequence number received
	// Forwarded are the losses that were the publisher's: sequence
	// numbers the server skipped because it never had the packet.
	Forwarded uint64
	Valid     bool
}

// DownlinkLoss is the fraction of packets lost between the server and the
// subscriber from report prev to report cur: what the subscriber lost
// minus the gaps the server forwarded (the publisher's uplink loss), over
// what it should have received. ok is false when the reports do not allow
// it (none yet, no packets, or counters that went back).
func DownlinkLoss(prev, cur ReportCounts) (loss float64, ok bool) {
	if !prev.Valid || !cur.Valid {
		return 0, false
	}
	expected := int64(cur.Expected) - int64(prev.Expected)
	lost := int64(cur.Lost) - int64(prev.Lost)
	forwarded := int64(cur.Forwarded) - int64(prev.Forwarded)
	if expected <= 0 || expected > 1<<20 || forwarded < 0 {
		return 0, false
	}
	return min(max(float64(lost-forwarded)/float64(expected), 0), 1), true
}

// updateREMB records a REMB the subscriber sent, received at now.
func (rr *receiverReport) updateREMB(r *rtcp.ReceiverEstimatedMaximumBitrate, now time.Time) {
	if r.Bitrate < 0 || r.Bitrate != r.Bitrate {
		return // NaN or negative: nothing to record
	}
	rr.remb.Store(uint64(r.Bitrate))
	rr.rembAt.Store(now.UnixNano())
}

// update records r, received at now. RTT is now minus the send time of
// the sender report it echoes (LSR) minus the receiver's delay (DLSR).
func (rr *receiverReport) update(r rtcp.ReceptionReport, now time.Time) {
	rr.fractionLost.Store(uint32(r.FractionLost))
	rr.totalLost.Store(r.TotalLost)
	rr.jitter.Store(r.Jitter)
	rr.at.Store(now.UnixNano())
	if r.LastSenderReport != 0 {
		mid := uint32(ntpTime(now) >> 16)
		if d := int64(mid - r.LastSenderReport - r.Delay); d > 0 && d < 10*65536 {
			rr.rtt.Store(d * int64(time.Second) / 65536)
		}
	}
}

// ntpEpochOffset is the number of seconds from 1900 (NTP) to 1970 (Unix).
const ntpEpochOffset = 2208988800

// ntpTime returns t as a 64-bit NTP timestamp.
func ntpTime(t time.Time) uint64 {
	ns := t.UnixNano()
	secs := uint64(ns/1e9) + ntpEpochOffset
	frac := (uint64(ns%1e9) << 32) / 1e9
	return secs<<32 | frac
}

// ReceiverStats returns the latest receiver report of this down-track.
func (d *DownTrack) ReceiverStats() ReceiverStats {
	s := ReceiverStats{
		FractionLost: float64(d.rr.fractionLost.Load()) / 256,
		TotalLost:    d.rr.totalLost.Load(),
		RTT:          time.Duration(d.rr.rtt.Load()),
	}
	if c := d.clockRate(); c > 0 {
		s.Jitter = time.Duration(uint64(d.rr.jitter.Load()) * uint64(time.Second) / uint64(c))
	}
	if at := d.rr.at.Load(); at != 0 {
		s.At = time.Unix(0, at)
	}
	if at := d.rr.rembAt.Load(); at != 0 {
		s.REMB, s.REMBAt = d.rr.remb.Load(), time.Unix(0, at)
	}
	if c := d.rr.counts.Load(); c != nil {
		s.Cumulative = ReportCounts{Lost: c.totalLost, Expected: c.highest, Forwarded: c.holes, Valid: true}
	}
	return s
}
