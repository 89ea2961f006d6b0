package quality

import (
	"testing"
	"time"
)

func simulcastTrack() Track {
	return Track{Bitrates: [NumLayers]int{200_000, 500_000, 1_500_000}, Max: 2}
}

// stepper returns an allocator for one simulcast track (plus 50 kbit/s of
// audio) updated every 250 ms by step, and its clock.
func stepper() (step func(Signals) Decision, now *time.Time) {
	a := NewAllocator(AllocatorConfig{})
	t := time.Now()
	tr := []Track{simulcastTrack()}
	return func(sig Signals) Decision {
		t = t.Add(250 * time.Millisecond)
		return a.Update(t, sig, tr, 50_000)
	}, &t
}

func TestAllocatorStartsAtWhatFitsAndFollowsMax(t *testing.T) {
	a := NewAllocator(AllocatorConfig{})
	now := time.Now()
	tr := []Track{simulcastTrack()}
	if d := a.Update(now, Signals{Estimate: 2_500_000}, tr, 50_000); d.Layers[0] != 2 {
		t.Fatalf("start at %v with 2.5 Mbit/s; want f", d.Layers)
	}
	tr[0].Max = 0
	if d := a.Update(now.Add(250*time.Millisecond), Signals{Estimate: 2_500_000}, tr, 50_000); d.Layers[0] != 0 || d.Limited {
		t.Fatalf("max q: got %v", d.Layers)
	}
	tr[0].Max = -1
	if d := a.Update(now.Add(500*time.Millisecond), Signals{Estimate: 2_500_000}, tr, 50_000); d.Layers[0] != -1 {
		t.Fatalf("paused: got %v", d.Layers)
	}
}

func TestAllocatorDownOnCongestionUpAfterProbe(t *testing.T) {
	step, _ := stepper()
	step(Signals{Estimate: 2_500_000})
	// A bottleneck: the estimate falls far under what f needs.
	if d := step(Signals{Estimate: 350_000, Fell: true}); d.Layers[0] != 0 || d.Event != "congested" || !d.Congested {
		t.Fatalf("congested: %+v; want q at once, the top layer stopped at once", d)
	}
	// Quiet: after the hold a probe starts, with padding, ramping up.
	var probe Decision
	for range 20 {
		if probe = step(Signals{Estimate: 400_000}); probe.Event == "probe" {
			break
		}
	}
	if probe.Event != "probe" || probe.ProbeBps <= 0 || probe.Layers[0] != 0 || probe.Congested {
		t.Fatalf("no probe after the hold: %+v", probe)
	}
	// Loss during the probe fails it and backs off.
	if d := step(Signals{Estimate: 400_000, Loss: 0.08}); d.Event != "probe failed" || d.ProbeBps != 0 || d.Layers[0] != 0 {
		t.Fatalf("lossy probe: %+v", d)
	}
	// Next time the path is clear: the probe succeeds and h is taken.
	var ok Decision
	for range 60 {
		if ok = step(Signals{Estimate: 450_000}); ok.Event == "probe ok" {
			break
		}
	}
	if ok.Event != "probe ok" || ok.Layers[0] != 1 {
		t.Fatalf("clear probe: %+v", ok)
	}
	// The climb goes on at once: the next probe starts without a hold.
	if d := step(Signals{Estimate: 600_000}); d.Event != "probe" || d.ProbeBps <= 0 || d.Layers[0] != 1 {
		t.Fatalf("after probe ok: %+v; want the probe for f to start", d)
	}
	// GCC's estimate wanders a little on a clear path: that does not end
	// the probe.
	if d := step(Signals{Estimate: 560_000, Fell: true}); d.Event != "" || d.ProbeBps <= 0 {
		t.Fatalf("a 7 %% dip during the probe: %+v; want it to go on", d)
	}
	// An estimate that falls well under where it began fails it, but the
	// layer the previous probe validated stays.
	if d := step(Signals{Estimate: 450_000, Fell: true}); d.Event != "probe failed" || d.Layers[0] != 1 || d.ProbeBps != 0 {
		t.Fatalf("failed probe for f: %+v; want h kept", d)
	}
	// A small estimate dip from a busy machine is not congestion.
	if d := step(Signals{Estimate: 420_000, Fell: true}); d.Layers[0] != 1 || d.Event != "" {
		t.Fatalf("a small dip moved the layer: %+v", d)
	}
}

func TestAllocatorBacksOffAndClimbsBackSoon(t *testing.T) {
	// Behind a bottleneck every probe fails; the waits between probes
	// grow but stay bounded, so that the climb starts soon after the
	// bottleneck clears.
	step, now := stepper()
	step(Signals{Estimate: 2_500_000})
	step(Signals{Estimate: 300_000, Fell: true})
	var probes []time.Time
	for range 120 { // 30 s behind the bottleneck
		d := step(Signals{Estimate: 300_000})
		if d.Event == "probe" {
			probes = append(probes, *now)
			d = step(Signals{Estimate: 200_000, Fell: true})
			if d.Event != "probe failed" || d.Layers[0] != 0 {
				t.Fatalf("probe behind the bottleneck: %+v", d)
			}
		}
	}
	if len(probes) < 5 {
		t.Fatalf("%d probes in 30 s behind a bottleneck; want them to go on", len(probes))
	}
	for i := 1; i < len(probes); i++ {
		if gap := probes[i].Sub(probes[i-1]); gap > 5*time.Second {
			t.Fatalf("%v between probes; want at most the 4 s backoff plus the probe", gap)
		}
	}
	// The bottleneck clears: q → h → f within the next probes.
	cleared := *now
	for range 80 {
		if d := step(Signals{Estimate: 2_000_000}); d.Layers[0] == 2 {
			if took := now.Sub(cleared); took > 10*time.Second {
				t.Fatalf("back on f %v after the bottleneck cleared", took)
			}
			return
		}
	}
	t.Fatalf("not back on f 20 s after the bottleneck cleared")
}

func TestAllocatorFloorWithoutSimulcast(t *testing.T) {
	a := NewAllocator(AllocatorConfig{Floor: 300_000})
	now := time.Now()
	tr := []Track{{Bitrates: [NumLayers]int{800_000}, Max: 2}}
	if d := a.Update(now, Signals{Estimate: 200_000}, tr, 50_000); d.Layers[0] != -1 || !d.Limited {
		t.Fatalf("below the floor: %+v; want audio only", d)
	}
	b := NewAllocator(AllocatorConfig{Floor: 300_000})
	if d := b.Update(now, Signals{Estimate: 500_000}, tr, 50_000); d.Layers[0] != 0 {
		t.Fatalf("above the floor: %+v; want the track", d)
	}
}

func TestAllocatorProbeStopsOnAGrowingQueue(t *testing.T) {
	// The estimate sits at its floor, so it cannot fall when a probe
	// overfills the bottleneck: the delay detector's overuse stops it.
	step, _ := stepper()
	step(Signals{Estimate: 2_500_000})
	step(Signals{Estimate: 100_000, Fell: true})
	var d Decision
	for range 40 {
		if d = step(Signals{Estimate: 100_000}); d.Event == "probe" {
			break
		}
	}
	if d.Event != "probe" {
		t.Fatalf("no probe: %+v", d)
	}
	if d = step(Signals{Estimate: 100_000, Overuse: true}); d.Event != "probe failed" || d.ProbeBps != 0 || d.Layers[0] != 0 {
		t.Fatalf("overuse during the probe: %+v; want it stopped", d)
	}
}
