package sfu

import (
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
)

// reception is what a subscriber's receiver reports say about one
// down-track: the fraction lost since the previous report and the round
// trip time. The RTT is taken from the report's LSR and DLSR (RFC 3550
// §6.4.1): our sender reports carry our wall clock in NTP form, so no send
// times need to be kept.
type reception struct {
	lossQ8  atomic.Uint32 // fraction lost, in 1/256
	rttUS   atomic.Int64  // microseconds; 0 until a report with LSR came
	reports atomic.Uint64
}

// note records the report block of ssrc, if any, received at now.
func (r *reception) note(blocks []rtcp.ReceptionReport, ssrc uint32, now time.Time) {
	for _, b := range blocks {
		if b.SSRC != ssrc {
			continue
		}
		r.lossQ8.Store(uint32(b.FractionLost))
		r.reports.Add(1)
		if b.LastSenderReport != 0 {
			// Middle 32 bits of the NTP time, in 1/65536 s.
			rtt := int64(ntpMiddle(now)-b.LastSenderReport-b.Delay) * 1_000_000 / 65536
			if rtt >= 0 && rtt < 60_000_000 {
				r.rttUS.Store(max(rtt, 1))
			}
		}
		return
	}
}

// ntpMiddle returns the middle 32 bits of t as an NTP timestamp.
func ntpMiddle(t time.Time) uint32 {
	const ntpEpochOffset = 2208988800 // seconds from 1900 to 1970
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / 1_000_000_000
	return uint32(secs<<16 | frac>>16)
}

// ssrc returns the SSRC the down-track sends with, 0 before negotiation.
func (d *DownTrack) ssrc() uint32 {
	if b := d.binding.Load(); b != nil {
		return b.ssrc
	}
	return 0
}

// Reception returns the subscriber's last reported loss fraction (0 to 1)
// and round trip time, and whether any receiver report came yet; rtt is 0
// until a report answers one of our sender reports.
func (d *DownTrack) Reception() (loss float64, rtt time.Duration, ok bool) {
	return float64(d.rr.lossQ8.Load()) / 256, time.Duration(d.rr.rttUS.Load()) * time.Microsecond, d.rr.reports.Load() > 0
}
