package bots

import (
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// A publisher told of a clean uplink for 1 s and then of 10 % loss (audio;
// video 1 %) for 9 s was lossy most of the time: the median, weighed by
// time, says 10, where one over the messages would say 0. The room's
// copies about others are not counted.
func TestUplinkSummaryWeighsByTime(t *testing.T) {
	u := newUplinkStats()
	u.setAudio("TR_a")
	t0 := time.Now()
	report := func(at time.Duration, score, audio, video float64) {
		u.onQuality(&protocol.Quality{Stats: &protocol.ConnectionStats{}, Uplink: &protocol.UplinkQuality{
			Score: score, LossPct: max(audio, video),
			Tracks: map[string]protocol.TrackUplink{"TR_a": {LossPct: audio}, "TR_v": {LossPct: video}},
		}})
		u.samples[len(u.samples)-1].at = t0.Add(at)
	}
	report(0, 4.4, 0, 0)
	report(time.Second, 3.2, 10, 1)
	// Someone else's bad uplink, in the room's copy: not ours.
	u.onQuality(&protocol.Quality{Uplink: &protocol.UplinkQuality{Score: 1, LossPct: 50}})

	s := summarizeUplinks([]*uplinkStats{u}, t0.Add(10*time.Second))
	if s.Reports != 2 || s.LossPctP50 != 10 || s.LossPctMax != 10 || s.ScoreP50 != 3.2 || s.ScoreMin != 3.2 {
		t.Errorf("summary %s; want loss p50 10 %%, max 10 %%, score p50 3.2, min 3.2, 2 reports", s)
	}
	if s.AudioLossPctP50 == nil || s.VideoLossPctP50 == nil || *s.AudioLossPctP50 != 10 || *s.VideoLossPctP50 != 1 {
		t.Errorf("summary %s; want audio p50 10 %%, video 1 %%", s)
	}
	if none := summarizeUplinks([]*uplinkStats{newUplinkStats()}, t0); none.Reports != 0 || none.ScoreMin != 0 {
		t.Errorf("no reports: %s; want all zero", none)
	}
}
