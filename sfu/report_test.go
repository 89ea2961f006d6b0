package sfu

import (
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
