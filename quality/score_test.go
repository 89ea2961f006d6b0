package quality

import "testing"

func TestAudioMOSOrdersConditions(t *testing.T) {
	clean := AudioMOS(Sample{Packets: 500, RTTMS: 20, JitterMS: 2})
	lossy := AudioMOS(Sample{Packets: 500, RTTMS: 20, JitterMS: 2, LossFraction: 0.05})
	laggy := AudioMOS(Sample{Packets: 500, RTTMS: 600, JitterMS: 40})
	dead := AudioMOS(Sample{Packets: 0})
	if clean < 4.2 {
		t.Errorf("clean audio scores %.2f; want at least 4.2", clean)
	}
	if !(clean > lossy && lossy > dead) || !(clean > laggy) {
		t.Errorf("scores not ordered: clean %.2f lossy %.2f laggy %.2f dead %.2f", clean, lossy, laggy, dead)
	}
	if LevelOf(clean, 500) != Excellent || LevelOf(dead, 0) != Lost {
		t.Errorf("levels: clean %s, dead %s", LevelOf(clean, 500), LevelOf(dead, 0))
	}
	if l := LevelOf(AudioMOS(Sample{Packets: 500, LossFraction: 0.3}), 500); l != Poor {
		t.Errorf("30%% loss is %s; want poor", l)
	}
}

func TestVideoMOSPenalizesLossAndShortfall(t *testing.T) {
	full := VideoMOS(Sample{Packets: 900, ExpectedKbps: 1500, DeliveredKbps: 1500, RTTMS: 10})
	low := VideoMOS(Sample{Packets: 900, ExpectedKbps: 1500, DeliveredKbps: 300, RTTMS: 10})
	lossy := VideoMOS(Sample{Packets: 900, ExpectedKbps: 1500, DeliveredKbps: 1500, LossFraction: 0.03})
	if full < 4.4 || !(full > low) || !(full > lossy) {
		t.Errorf("full %.2f low %.2f lossy %.2f", full, low, lossy)
	}
	if LevelOf(lossy, 900) == Excellent {
		t.Errorf("3%% residual loss rated excellent (%.2f)", lossy)
	}
	for _, s := range []Sample{{Packets: 1, LossFraction: 5}, {Packets: 1, LossFraction: -1}, {Packets: 1, JitterMS: 1e9}} {
		if m := VideoMOS(s); m < 1 || m > 5 {
			t.Errorf("VideoMOS(%+v) = %v out of range", s, m)
		}
		if m := AudioMOS(s); m < 1 || m > 5 {
			t.Errorf("AudioMOS(%+v) = %v out of range", s, m)
		}
	}
}
