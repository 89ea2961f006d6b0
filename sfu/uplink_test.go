package sfu

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// receiveFrames sends frames of 3 packets on every layer of s, 33 ms
// apart; drop(li, i) leaves out the i-th packet of layer li (its sequence
// number is used, as when the network loses it) and dup(li, i) delivers
// it twice (a retransmission of a packet that did arrive).
func receiveFrames(s *simSource, frames int, drop, dup func(li, i int) bool) {
	var count [maxLayers]int
	for range frames {
		s.now += int64(33 * time.Millisecond)
		for li := range maxLayers {
			l := s.up.layers[li].Load()
			for k := range 3 {
				i := count[li]
				count[li]++
				n := s.packet(li, k == 0, k == 2, false)
				if drop(li, i) {
					continue
				}
				pkt := l.history.buffer()[:n]
				for range 1 + b2i(dup(li, i)) {
					b := l.history.buffer()[:n]
					copy(b, pkt)
					var p packetView
					if err := parseRTP(b, &p); err != nil {
						panic(err)
					}
					l.receive(&p, n, s.now)
				}
			}
			s.ts[li] += 2970 // 33 ms at 90 kHz
			s.pic[li]++
			s.tl0[li]++
		}
	}
}

// flushUplink publishes every layer's statistics now, as its reader does
// every uplinkInterval.
func flushUplink(s *simSource) {
	for li := range maxLayers {
		s.up.layers[li].Load().uplink.publish(s.now)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestUplinkLossJitterAndDuplicates(t *testing.T) {
	s, _ := newSimSource(t)
	never := func(int, int) bool { return false }
	// Layer h loses every 10th packet; layer f gets every 7th packet
	// twice (a NACK answered although the packet had arrived).
	receiveFrames(s, 300, func(li, i int) bool { return li == LayerMedium && i%10 == 5 },
		func(li, i int) bool { return li == LayerHigh && i%7 == 0 })
	// Another 2 s of clean frames settle every gap (recovery window 1 s).
	receiveFrames(s, 60, never, never)
	now := time.Unix(0, s.now)
	flushUplink(s)

	q, _ := s.up.LayerUplink(LayerLow, now)
	h, _ := s.up.LayerUplink(LayerMedium, now)
	f, _ := s.up.LayerUplink(LayerHigh, now)
	if q.Receive.Lost != 0 || q.Receive.Packets != 1080 || q.Receive.Duplicates != 0 {
		t.Errorf("clean layer: %+v; want 1080 packets, none lost", q.Receive)
	}
	if h.Receive.Lost != 90 || h.Receive.Expected < 1079 {
		t.Errorf("lossy layer: lost %d of %d; want 90 of about 1080", h.Receive.Lost, h.Receive.Expected)
	}
	if loss := h.Receive.LossFraction(); math.Abs(loss-90.0/1080) > 0.002 {
		t.Errorf("lossy layer: loss fraction %.4f; want %.4f", loss, 90.0/1080)
	}
	if f.Receive.Lost != 0 || f.Receive.Duplicates != 129 || f.Receive.Packets != 1080 {
		t.Errorf("layer with duplicates: %+v; want 1080 packets, 129 duplicates, none lost", f.Receive)
	}
	// Frames 33 ms apart carry timestamps 33 ms apart: no jitter beyond
	// rounding.
	if q.Receive.Jitter > 100*time.Microsecond {
		t.Errorf("jitter %v; want about 0", q.Receive.Jitter)
	}
	if q.Bitrate <= 0 || !q.At.After(now.Add(-time.Second)) {
		t.Errorf("clean layer: bitrate %d at %v; want a rate measured within 1 s of %v", q.Bitrate, q.At, now)
	}
	all := s.up.Uplink(now)
	if all.Receive.Lost != 90 || all.Receive.Packets != 1080+990+1080 || all.Bitrate != q.Bitrate+h.Bitrate+f.Bitrate {
		t.Errorf("track: %+v; want the layers summed", all)
	}
}

func TestUplinkJitterFromUnevenArrivals(t *testing.T) {
	s, _ := newSimSource(t)
	l := s.up.layers[0].Load()
	// Packets stamped 20 ms apart arrive alternately 10 and 30 ms apart:
	// |D| is 10 ms for every packet, so the jitter tends to 10 ms.
	for i := range 500 {
		s.now += int64(10*time.Millisecond) + int64(i%2)*int64(20*time.Millisecond)
		n := s.packet(0, true, true, false)
		var p packetView
		_ = parseRTP(l.history.buffer()[:n], &p)
		l.receive(&p, n, s.now)
		s.ts[0] += 1800
	}
	flushUplink(s)
	st, _ := s.up.LayerUplink(0, time.Unix(0, s.now))
	if j := st.Receive.Jitter; j < 9*time.Millisecond || j > 11*time.Millisecond {
		t.Fatalf("jitter %v; want about 10 ms", j)
	}
}

func TestUplinkNewSSRCKeepsCounters(t *testing.T) {
	s, _ := newSimSource(t)
	never := func(int, int) bool { return false }
	receiveFrames(s, 100, func(li, i int) bool { return li == 0 && i%10 == 0 }, never)
	flushUplink(s)
	before, _ := s.up.LayerUplink(0, time.Unix(0, s.now))
	// The publisher restarts layer q on another SSRC with other sequence
	// numbers: the counters go on from where they were.
	tmpl := s.template(0)
	binary.BigEndian.PutUint32(tmpl[8:], 999)
	s.seq[0] += 20000
	receiveFrames(s, 100, never, never)
	flushUplink(s)
	after, _ := s.up.LayerUplink(0, time.Unix(0, s.now))
	if after.Receive.Packets != before.Receive.Packets+300 || after.Receive.Lost != 29 {
		t.Fatalf("before %+v, after %+v; want 300 more packets and 29 lost (the 10th of the first 288)", before.Receive, after.Receive)
	}
}

// TestUplinkAllocatesNothing covers the receive path with its statistics:
// gaps, a duplicate, and the snapshot published every uplinkInterval.
func TestUplinkAllocatesNothing(t *testing.T) {
	s, _ := newSimSource(t)
	l := s.up.layers[0].Load()
	i := 0
	allocs := testing.AllocsPerRun(2000, func() {
		i++
		s.now += int64(7 * time.Millisecond)
		if i%13 == 0 {
			s.seq[0]++ // a lost packet
		}
		n := s.packet(0, true, true, false)
		pkt := l.history.buffer()[:n]
		var p packetView
		_ = parseRTP(pkt, &p)
		l.receive(&p, n, s.now)
		if i%17 == 0 { // a duplicate
			b := l.history.buffer()[:n]
			copy(b, pkt)
			_ = parseRTP(b, &p)
			l.receive(&p, n, s.now)
		}
		s.ts[0] += 630
	})
	if allocs != 0 {
		t.Fatalf("receive with uplink statistics allocates %.1f times per packet; want 0", allocs)
	}
	if st, _ := s.up.LayerUplink(0, time.Unix(0, s.now)); st.Receive.Lost == 0 || st.Receive.Duplicates == 0 {
		t.Fatalf("stats %+v; want losses and duplicates counted", st.Receive)
	}
}

// BenchmarkUplinkUpdate measures the statistics alone, per packet.
func BenchmarkUplinkUpdate(b *testing.B) {
	var u uplink
	p := packetView{ssrc: 1}
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.seq = uint16(i)
		p.timestamp = uint32(i) * 900
		now += int64(10 * time.Millisecond)
		u.update(&p, 1000, now, 90000)
	}
}
