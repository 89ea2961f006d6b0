package quality

import "math"

// Level is a coarse connection quality shown to people.
type Level string

// Levels, best first.
const (
	Excellent Level = "excellent"
	Good      Level = "good"
	Poor      Level = "poor"
	Lost      Level = "lost"
)

// Sample is what one interval of statistics says about one direction of
// one connection.
type Sample struct {
	// LossFraction is the fraction of packets lost after recovery, 0..1.
	LossFraction float64
	// JitterMS is the interarrival jitter in milliseconds.
	JitterMS float64
	// RTTMS is the round-trip time in milliseconds (0 if unknown).
	RTTMS float64
	// ExpectedKbps and DeliveredKbps compare what the sender meant to send
	// with what arrived; ExpectedKbps 0 skips the comparison.
	ExpectedKbps, DeliveredKbps float64
	// Packets is the number of packets expected in the interval; 0 means
	// nothing arrived although something was expected (lost).
	Packets int
}

// AudioMOS returns a mean opinion score from 1 to 5 for audio, from a
// simplified E-model (ITU-T G.107): the R factor starts at 93.2 and is
// reduced by the mouth-to-ear delay (half the RTT plus a jitter buffer of
// twice the jitter) and by the effective equipment impairment of Opus
// under random loss.
func AudioMOS(s Sample) float64 {
	if s.Packets == 0 {
		return 1
	}
	delay := s.RTTMS/2 + 2*s.JitterMS + 20 // 20 ms: one packet of packetization
	id := 0.024 * delay
	if delay > 177.3 {
		id += 0.11 * (delay - 177.3)
	}
	lossPct := 100 * clamp(s.LossFraction, 0, 1)
	// Opus: Ie 0, loss robustness Bpl of about 25 (its FEC and PLC).
	ie := 95 * lossPct / (lossPct + 25)
	return mosFromR(93.2 - id - ie)
}

// VideoMOS returns a score from 1 to 5 for video: loss after recovery
// shows as freezes, a delivered rate well under the expected one as lower
// resolution or frame rate, and delay as lag in conversation.
func VideoMOS(s Sample) float64 {
	if s.Packets == 0 {
		return 1
	}
	score := 4.5
	score -= 40 * clamp(s.LossFraction, 0, 1) // 2.5 % residual loss costs a full point
	if s.ExpectedKbps > 0 {
		ratio := clamp(s.DeliveredKbps/s.ExpectedKbps, 0, 1)
		score -= 1.5 * (1 - ratio)
	}
	delay := s.RTTMS/2 + 2*s.JitterMS
	if delay > 150 {
		score -= (delay - 150) / 200
	}
	return clamp(score, 1, 5)
}

// LevelOf maps a score to a level.
func LevelOf(mos float64, packets int) Level {
	switch {
	case packets == 0:
		return Lost
	case mos >= 4.0:
		return Excellent
	case mos >= 3.0:
		return Good
	default:
		return Poor
	}
}

// mosFromR converts an E-model R factor to MOS (G.107 Annex B).
func mosFromR(r float64) float64 {
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	mos := 1 + 0.035*r + r*(r-60)*(100-r)*7e-6
	return clamp(mos, 1, 4.5)
}

func clamp(x, lo, hi float64) float64 {
	if math.IsNaN(x) {
		return lo
	}
	return math.Max(lo, math.Min(hi, x))
}
