package sfu

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
)

func TestReceptionFromReceiverReport(t *testing.T) {
	var r reception
	now := time.Unix(1_800_000_000, 123_456_789)
	sent := now.Add(-50 * time.Millisecond) // our sender report left then
	held := uint32(30 * 65536 / 1000)       // the receiver held it 30 ms
	r.note([]rtcp.ReceptionReport{
		{SSRC: 7, FractionLost: 200},
		{SSRC: 42, FractionLost: 64, LastSenderReport: ntpMiddle(sent), Delay: held},
	}, 42, now)
	d := &DownTrack{rr: reception{}}
	d.rr.lossQ8.Store(r.lossQ8.Load())
	d.rr.rttUS.Store(r.rttUS.Load())
	d.rr.reports.Store(r.reports.Load())
	loss, rtt, ok := d.Reception()
	if !ok || loss != 0.25 || rtt < 19*time.Millisecond || rtt > 21*time.Millisecond {
		t.Fatalf("loss %v rtt %v ok %v; want 0.25, 20ms, true", loss, rtt, ok)
	}
	var none reception
	none.note([]rtcp.ReceptionReport{{SSRC: 7}}, 42, now)
	if none.reports.Load() != 0 {
		t.Fatal("a report of another SSRC counted")
	}
}
