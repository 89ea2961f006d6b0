package sfu

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/pion/rtcp"
)

func TestReceiverStatsFromReceiverReport(t *testing.T) {
	up := &UpTrack{}
	up.info.Codec.ClockRate = 90000
	d := &DownTrack{up: up}
	now := time.Unix(1_800_000_000, 123_456_789)
	sent := now.Add(-50 * time.Millisecond) // our sender report left then
	held := uint32(30 * 65536 / 1000)       // the receiver held it 30 ms
	d.rr.update(rtcp.ReceptionReport{
		SSRC: 42, FractionLost: 64, TotalLost: 9, Jitter: 900,
		LastSenderReport: uint32(ntpTime(sent) >> 16), Delay: held,
	}, now)
	s := d.ReceiverStats()
	if s.FractionLost != 0.25 || s.TotalLost != 9 || s.Jitter != 10*time.Millisecond || !s.At.Equal(now) {
		t.Fatalf("stats %+v; want loss 0.25, total 9, jitter 10ms, at %v", s, now)
	}
	if s.RTT < 19*time.Millisecond || s.RTT > 21*time.Millisecond {
		t.Fatalf("rtt %v; want 20ms", s.RTT)
	}
	if (&DownTrack{up: up}).ReceiverStats().At != (time.Time{}) {
		t.Fatal("a down-track without reports says it has one")
	}
}

// TestDownlinkLossNetOfForwardedGaps: a down-track counts the gaps it
// forwards (packets the publisher's uplink lost) and the late packets
// that fill them; a subscriber's report counts both kinds of loss, so the
// downlink's own loss is the report's minus those.
func TestDownlinkLossNetOfForwardedGaps(t *testing.T) {
	src := &fakeSource{pkt: testPacket(t), left: 1 << 30}
	up, _ := newTestUp(src)
	d := bindDown(up, 111, &countingWriter{})
	var p packetView
	buf := make([]byte, maxPacketSize)
	send := func(skip func(i int) bool, n int) {
		for i := range n {
			k, _ := src.Read(buf)
			if skip(i) {
				continue // lost on the way to the server
			}
			if err := parseRTP(buf[:k], &p); err != nil {
				t.Fatal(err)
			}
			up.l0().forward(&p)
		}
	}
	// 100 packets, every 10th lost upstream: 10 holes.
	send(func(i int) bool { return i%10 == 5 }, 100)
	if h, f := d.holes.Load(), d.holesFilled.Load(); h != 10 || f != 0 {
		t.Fatalf("holes %d, filled %d; want 10, 0", h, f)
	}
	// A late packet (an upstream retransmission) fills one.
	k, _ := src.Read(buf)
	binary.BigEndian.PutUint16(buf[2:], binary.BigEndian.Uint16(buf[2:])-95)
	if err := parseRTP(buf[:k], &p); err != nil {
		t.Fatal(err)
	}
	up.l0().forward(&p)
	if f := d.holesFilled.Load(); f != 1 {
		t.Fatalf("filled %d; want 1", f)
	}

	// The subscriber lost 12 of 200 over an interval in which the server
	// forwarded 9 holes: 3 were the downlink's.
	prev := ReportCounts{Lost: 50, Expected: 1000, Forwarded: 20, Valid: true}
	cur := ReportCounts{Lost: 62, Expected: 1200, Forwarded: 29, Valid: true}
	if l, ok := DownlinkLoss(prev, cur); !ok || l != 0.015 {
		t.Fatalf("loss %v, %v; want 0.015", l, ok)
	}
	// Only the publisher's loss: the downlink lost nothing.
	cur = ReportCounts{Lost: 59, Expected: 1200, Forwarded: 29, Valid: true}
	if l, ok := DownlinkLoss(prev, cur); !ok || l != 0 {
		t.Fatalf("loss %v, %v; want 0", l, ok)
	}
	// No new packets, no first report, a new stream: no figure.
	for _, c := range [][2]ReportCounts{{prev, prev}, {{}, cur}, {cur, prev}} {
		if _, ok := DownlinkLoss(c[0], c[1]); ok {
			t.Errorf("DownlinkLoss(%+v, %+v) gave a figure", c[0], c[1])
		}
	}
}
