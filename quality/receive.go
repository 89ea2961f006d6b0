// Package quality owns RTP/RTCP statistics, bandwidth estimates, quality
// scores and adaptation decisions.
package quality

import (
	"math"
	"time"
)

// Defaults of ReceiveStats.
const (
	// DefaultRecoveryWindow is how long a missing packet may still arrive
	// (a NACK retransmission or a reordered packet) before it counts as
	// lost: a few round trips of a NACK on a congested path.
	DefaultRecoveryWindow = time.Second
	// historySize is how many sequence numbers behind the highest one are
	// tracked, a power of two. A gap older than this is settled at once,
	// even inside the recovery window: at 300 packets a second it is
	// about 3.4 s.
	historySize = 1024
	historyMask = historySize - 1
)

// ReceiveStats counts one received RTP stream (one SSRC): packets, bytes,
// loss after recovery, duplicates, interarrival jitter (RFC 3550 §6.4.1)
// and bitrate. Update costs O(1) amortised and allocates nothing.
//
// A sequence number missing from the stream is pending until the recovery
// window has passed since a later packet arrived; it counts as lost only if
// it is still missing then. A packet arriving within the window fills its
// gap (Recovered); one arriving after it is Late and stays counted as lost.
//
// The zero value is not usable; use NewReceiveStats. A ReceiveStats is
// not safe for concurrent use: one reader goroutine updates it, and
// Snapshot is called from that goroutine or after it has stopped.
type ReceiveStats struct {
	clockRate float64 // RTP timestamp units per second
	window    time.Duration

	started bool
	start   time.Time // arrival of the first packet; times below are relative to it
	last    time.Duration

	// Extended sequence numbers start at 1<<16 + the first sequence
	// number, so that packets reordered before the first stay positive.
	highest uint64 // highest extended sequence number received
	settled uint64 // every sequence number below this one is settled
	first   uint64 // lowest extended sequence number counted as expected

	// received has one bit per sequence number in the last historySize
	// ones; opened is when each sequence number was first expected (the
	// arrival of the packet that went past it), relative to start.
	received [historySize / 64]uint64
	opened   [historySize]time.Duration

	packets    uint64
	bytes      uint64
	lost       uint64
	late       uint64
	duplicates uint64
	recovered  uint64

	// Jitter, in timestamp units, from packets that advance the stream.
	jitter      float64
	lastTransit float64
	haveTransit bool
}

// NewReceiveStats returns statistics for a stream whose RTP clock runs at
// clockRate Hz (90000 for video, 48000 for Opus). A recovery window of 0
// means DefaultRecoveryWindow.
func NewReceiveStats(clockRate uint32, recoveryWindow time.Duration) *ReceiveStats {
	s := &ReceiveStats{}
	s.Reset(clockRate, recoveryWindow)
	return s
}

// Reset clears s for a new stream, keeping its memory.
func (s *ReceiveStats) Reset(clockRate uint32, recoveryWindow time.Duration) {
	if recoveryWindow <= 0 {
		recoveryWindow = DefaultRecoveryWindow
	}
	*s = ReceiveStats{clockRate: float64(clockRate), window: recoveryWindow}
}

// Update records one packet: its sequence number, RTP timestamp, size in
// bytes (header and payload) and arrival time. Arrival times should come
// from one monotonic clock (time.Now).
func (s *ReceiveStats) Update(seq uint16, timestamp uint32, size int, arrival time.Time) {
	s.update(seq, timestamp, size, arrival, true)
}

// UpdatePadding records a packet that carries only padding (a bandwidth
// probe): it counts for loss and rate but not for jitter, since a sender
// sends it when it probes, with the timestamp of the latest frame.
func (s *ReceiveStats) UpdatePadding(seq uint16, timestamp uint32, size int, arrival time.Time) {
	s.update(seq, timestamp, size, arrival, false)
}

func (s *ReceiveStats) update(seq uint16, timestamp uint32, size int, arrival time.Time, jitter bool) {
	if !s.started {
		s.started = true
		s.start = arrival
		ext := uint64(1)<<16 | uint64(seq)
		s.highest, s.settled, s.first = ext, ext, ext
		s.mark(ext, 0)
		s.count(size, 0)
		if jitter {
			s.updateJitter(timestamp, 0)
		}
		return
	}
	now := arrival.Sub(s.start)
	if now < s.last {
		now = s.last // a clock that went backwards: keep time monotonic
	}
	delta := int64(int16(seq - uint16(s.highest)))
	ext := uint64(int64(s.highest) + delta)

	switch {
	case delta > 0: // advances the stream, possibly over a gap
		s.advance(ext, now)
		s.count(size, now)
		if jitter {
			s.updateJitter(timestamp, now)
		}
	case delta == 0:
		s.duplicates++
	case ext >= s.settled: // fills a gap within the recovery window
		if s.isReceived(ext) {
			s.duplicates++
			return
		}
		s.setReceived(ext)
		s.recovered++
		s.count(size, now)
	case ext < s.first && s.settled == s.first && s.highest-ext < historySize:
		// Reordered before the first packet, while nothing is settled:
		// the stream simply started earlier.
		for e := ext + 1; e < s.first; e++ {
			s.open(e, now)
		}
		s.first, s.settled = ext, ext
		s.mark(ext, now)
		s.count(size, now)
	case s.highest-ext < historySize && s.isReceived(ext):
		s.duplicates++
	default: // its gap was settled as lost, or it is too old to tell
		s.late++
	}
	s.settle(now)
}

// advance moves the highest sequence number to ext, opening the gap before
// it at time now.
func (s *ReceiveStats) advance(ext uint64, now time.Duration) {
	gap := ext - s.highest - 1
	if gap >= historySize {
		// More is missing than the history holds: what falls out of it
		// is lost at once, without a recovery window.
		s.settleBefore(s.highest + 1)
		skip := gap - (historySize - 1)
		s.lost += skip
		s.settled = s.highest + 1 + skip
		s.highest = s.settled - 1
	}
	// Sequence numbers whose slots are about to be reused are settled
	// first (ext is at least 1<<16, so this does not underflow).
	s.settleBefore(ext - historySize + 1)
	for e := s.highest + 1; e < ext; e++ {
		s.open(e, now)
	}
	s.mark(ext, now)
	s.highest = ext
}

// open records ext as expected but missing since now.
func (s *ReceiveStats) open(ext uint64, now time.Duration) {
	s.received[(ext&historyMask)>>6] &^= 1 << (ext & 63)
	s.opened[ext&historyMask] = now
}

// mark records ext as received at now.
func (s *ReceiveStats) mark(ext uint64, now time.Duration) {
	s.received[(ext&historyMask)>>6] |= 1 << (ext & 63)
	s.opened[ext&historyMask] = now
}

func (s *ReceiveStats) setReceived(ext uint64) {
	s.received[(ext&historyMask)>>6] |= 1 << (ext & 63)
}

func (s *ReceiveStats) isReceived(ext uint64) bool {
	return s.received[(ext&historyMask)>>6]&(1<<(ext&63)) != 0
}

// settle settles, in order, every sequence number whose recovery window
// has passed at now.
func (s *ReceiveStats) settle(now time.Duration) {
	for s.settled <= s.highest {
		if !s.isReceived(s.settled) {
			if now-s.opened[s.settled&historyMask] < s.window {
				return // later ones were opened no earlier
			}
			s.lost++
		}
		s.settled++
	}
}

// settleBefore settles every sequence number below end regardless of the
// window: their slots are about to be reused.
func (s *ReceiveStats) settleBefore(end uint64) {
	for s.settled < end && s.settled <= s.highest {
		if !s.isReceived(s.settled) {
			s.lost++
		}
		s.settled++
	}
}

func (s *ReceiveStats) count(size int, now time.Duration) {
	s.packets++
	s.bytes += uint64(size)
	if now > s.last {
		s.last = now
	}
}

// updateJitter applies RFC 3550's estimator: J += (|D| - J) / 16, where D
// is the difference of relative transit times of consecutive packets, in
// timestamp units. Only packets that advance the stream take part, so a
// retransmission (an old timestamp arriving late) does not count as jitter.
func (s *ReceiveStats) updateJitter(timestamp uint32, now time.Duration) {
	if s.clockRate <= 0 {
		return
	}
	arrival := now.Seconds() * s.clockRate
	// Unwrapping the timestamp against the previous transit keeps D small
	// across the 32-bit wrap: only the difference is used.
	transit := arrival - float64(timestamp)
	if s.haveTransit {
		d := transit - s.lastTransit
		// Reduce d modulo 2^32 into (-2^31, 2^31] (math.Mod only when it
		// is out of range: the common case stays cheap per packet).
		const wrap = 1 << 32
		if d > wrap || d < -wrap {
			d = math.Mod(d, wrap)
		}
		if d > wrap/2 {
			d -= wrap
		} else if d < -wrap/2 {
			d += wrap
		}
		s.jitter += (math.Abs(d) - s.jitter) / 16
	}
	s.lastTransit = transit
	s.haveTransit = true
}

// ReceiveSnapshot is the state of a stream at one moment.
type ReceiveSnapshot struct {
	// Packets and Bytes count distinct packets received (duplicates and
	// late packets excluded); Bytes include RTP headers.
	Packets uint64
	Bytes   uint64
	// Expected is how many sequence numbers the stream has spanned, from
	// the lowest to the highest received.
	Expected uint64
	// Lost counts sequence numbers still missing when their recovery
	// window closed. Pending ones are missing but may still arrive.
	Lost    uint64
	Pending uint64
	// Recovered counts packets that filled a gap within the recovery
	// window (reordered or retransmitted); Late ones arrived after it
	// (they stay counted in Lost); Duplicates are copies of packets
	// already received.
	Recovered  uint64
	Late       uint64
	Duplicates uint64
	// Jitter is the RFC 3550 interarrival jitter.
	Jitter time.Duration
	// Duration is the time from the first to the last packet received.
	Duration time.Duration
	// Bitrate is Bytes over Duration, in bits per second (0 before two
	// packets have arrived at different times).
	Bitrate float64
}

// LossFraction returns Lost over the packets settled (Lost plus those
// received), between 0 and 1.
func (r ReceiveSnapshot) LossFraction() float64 {
	settled := r.Expected - r.Pending
	if settled == 0 {
		return 0
	}
	return float64(r.Lost) / float64(settled)
}

// LossSince returns the fraction of packets lost among those settled
// (received, or missing past the recovery window) between prev and r,
// two snapshots of one stream, between 0 and 1, and how many were
// settled. Counters that went backwards (prev is of another stream)
// count from zero.
func (r ReceiveSnapshot) LossSince(prev ReceiveSnapshot) (fraction float64, settled uint64) {
	done, prevDone := r.Expected-r.Pending, prev.Expected-prev.Pending
	lost, prevLost := r.Lost, prev.Lost
	if done < prevDone || lost < prevLost {
		prevDone, prevLost = 0, 0
	}
	settled = done - prevDone
	if settled == 0 {
		return 0, 0
	}
	return min(float64(lost-prevLost)/float64(settled), 1), settled
}

// Snapshot settles the gaps whose recovery window has passed at now and
// returns the counters.
func (s *ReceiveStats) Snapshot(now time.Time) ReceiveSnapshot {
	if !s.started {
		return ReceiveSnapshot{}
	}
	rel := now.Sub(s.start)
	if rel < s.last {
		rel = s.last
	}
	s.settle(rel)
	var pending uint64
	for e := s.settled; e <= s.highest; e++ {
		if !s.isReceived(e) {
			pending++
		}
	}
	r := ReceiveSnapshot{
		Packets:    s.packets,
		Bytes:      s.bytes,
		Expected:   s.highest - s.first + 1,
		Lost:       s.lost,
		Pending:    pending,
		Recovered:  s.recovered,
		Late:       s.late,
		Duplicates: s.duplicates,
		Duration:   s.last,
	}
	if s.clockRate > 0 {
		r.Jitter = time.Duration(s.jitter / s.clockRate * float64(time.Second))
	}
	if s.last > 0 {
		r.Bitrate = float64(s.bytes) * 8 / s.last.Seconds()
	}
	return r
}
