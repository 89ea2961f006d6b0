package rooms

import (
	"maps"
	"math"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// TestNetLoss: a subscriber's reported loss, less what the publisher's
// uplink lost already, is what its own downlink lost.
func TestNetLoss(t *testing.T) {
	for _, c := range []struct{ total, up, want float64 }{
		{0.1, 0, 0.1},        // a clean uplink: all of it is the downlink's
		{0.1, 0.1, 0},        // all of it upstream
		{0.19, 0.1, 0.1},     // 10 % on each path: 1 - 0.9*0.9
		{0.05, 0.1, 0},       // the report's interval saw less: not negative
		{0.5, 1, 0.5},        // nothing came in: nothing to take out
		{0.3, -0.1, 0.3},     // nonsense uplink figure: ignored
		{0.0, 0.02, 0},       // no loss reported
		{1, 0.5, 1},          // everything lost downstream
		{0.28, 0.2, 0.1},     // 1 - 0.72/0.8
		{0.505, 0.01, 0.5},   // 1 - 0.495/0.99
		{0.1009, 0.001, 0.1}, // 1 - 0.8991/0.999
	} {
		if got := netLoss(c.total, c.up); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("netLoss(%v, %v) = %v; want %v", c.total, c.up, got, c.want)
		}
	}
}

// TestUplinkMoved: the participant's own copy goes out again when its
// uplink figures move, not for the small drift of every interval.
func TestUplinkMoved(t *testing.T) {
	base := protocol.UplinkQuality{Score: 4.4, Level: "excellent", LossPct: 0.5, JitterMs: 2, RTTMs: 30, Kbps: 1000,
		Tracks: map[string]protocol.TrackUplink{"TR_v": {Score: 4.4, Level: "excellent", LossPct: 0.5}}}
	with := func(f func(*protocol.UplinkQuality)) *protocol.UplinkQuality {
		u := base
		u.Tracks = maps.Clone(base.Tracks)
		f(&u)
		return &u
	}
	for _, c := range []struct {
		name  string
		b     *protocol.UplinkQuality
		moved bool
	}{
		{"same", with(func(*protocol.UplinkQuality) {}), false},
		{"drift", with(func(u *protocol.UplinkQuality) { u.JitterMs, u.RTTMs, u.Kbps, u.LossPct = 2.7, 31, 1080, 0.9 }), false},
		{"loss", with(func(u *protocol.UplinkQuality) { u.LossPct = 1.5 }), true},
		{"rate", with(func(u *protocol.UplinkQuality) { u.Kbps = 700 }), true},
		{"rtt", with(func(u *protocol.UplinkQuality) { u.RTTMs = 60 }), true},
		{"track loss", with(func(u *protocol.UplinkQuality) {
			u.Tracks["TR_v"] = protocol.TrackUplink{Score: 4.4, Level: "excellent", LossPct: 2}
		}), true},
		{"new track", with(func(u *protocol.UplinkQuality) { u.Tracks["TR_a"] = protocol.TrackUplink{Score: 4.4} }), true},
		{"gone", nil, true},
	} {
		if got := uplinkMoved(&base, c.b); got != c.moved {
			t.Errorf("%s: moved %v; want %v", c.name, got, c.moved)
		}
	}
	if uplinkMoved(nil, nil) {
		t.Error("no uplink before nor after: moved")
	}
}

func TestSilentAfterMediaWithNoFeedback(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		name         string
		sendingSince time.Time
		heard, now   time.Time
		want         bool
	}{
		{"nothing sent", time.Time{}, time.Time{}, t0.Add(time.Minute), false},
		{"sending, heard recently", t0, t0.Add(9 * time.Second), t0.Add(10 * time.Second), false},
		{"sending, silent for 3 s", t0, t0.Add(7 * time.Second), t0.Add(10 * time.Second), true},
		{"never heard, sending for 2 s", t0, time.Time{}, t0.Add(2 * time.Second), false},
		{"never heard, sending for 3 s", t0, time.Time{}, t0.Add(3 * time.Second), true},
		{"heard before the sending began, 2 s in", t0, t0.Add(-time.Minute), t0.Add(2 * time.Second), false},
	} {
		pq := &partQuality{sendingSince: c.sendingSince}
		if got := pq.silent(c.heard, c.now); got != c.want {
			t.Errorf("%s: silent = %v; want %v", c.name, got, c.want)
		}
	}
}
