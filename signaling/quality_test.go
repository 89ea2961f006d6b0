package signaling_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// TestQualityMessagesAndMetrics: a subscriber gets its own quality with
// its stats, the room gets it without, and /metrics shows it.
func TestQualityMessagesAndMetrics(t *testing.T) {
	s := newTestServer(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ada := s.join(t, "quality", "ada")
	bob := s.join(t, "quality", "bob")
	if _, err := ada.publish(ctx, t, protocol.KindAudio, protocol.KindVideo); err != nil {
		t.Fatal(err)
	}
	find := func(p *peer, withStats bool) *protocol.Quality {
		for _, ev := range p.eventsCopy() {
			if q, ok := ev.Message.(*protocol.Quality); ok && q.Identity == "bob" && (q.Stats != nil) == withStats {
				return q
			}
		}
		return nil
	}
	if !waitFor(10*time.Second, func() bool { return find(bob, true) != nil && find(ada, false) != nil }) {
		t.Fatalf("no quality messages: bob's own %v, ada's of bob %v", find(bob, true), find(ada, false))
	}
	own := find(bob, true)
	if own.Score < 1 || own.Score > 5 || own.Level == "" || own.Audio == nil || own.Video == nil {
		t.Errorf("bob's quality %+v", own)
	}
	if own.Stats.EstimateKbps <= 0 {
		t.Errorf("bob's stats %+v: no estimate", own.Stats)
	}
	res, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`huddle_participant_quality_score{identity="bob"`, `huddle_participant_estimate_bps{identity="bob"`,
		`huddle_track_bitrate_bps{kind="video",layer="q"`, `huddle_track_subscribers{kind="audio"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
