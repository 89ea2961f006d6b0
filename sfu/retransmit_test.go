package sfu

import (
	"math/rand/v2"
	"testing"

	"github.com/pion/rtp"
)

// lossyPath is the path to a subscriber: it loses the sequence numbers in
// drop the first time they are sent, and any packet with probability
// loss, and hands the rest to a recorder.
type lossyPath struct {
	rec  *recorder
	drop map[uint16]bool
	loss float64
	rng  *rand.Rand
	// padTS is the timestamp of each padding packet received, by
	// sequence number; padSent the sequence numbers of those sent.
	padTS   map[uint16]uint32
	padSent map[uint16]bool
}

func newLossyPath(loss float64) *lossyPath {
	return &lossyPath{rec: &recorder{}, drop: map[uint16]bool{}, loss: loss,
		rng: rand.New(rand.NewPCG(1, 2)), padTS: map[uint16]uint32{}, padSent: map[uint16]bool{}}
}

func (w *lossyPath) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	if len(payload) == 0 && h.Padding {
		w.padSent[h.SequenceNumber] = true
	}
	if w.drop[h.SequenceNumber] || (w.loss > 0 && w.rng.Float64() < w.loss) {
		delete(w.drop, h.SequenceNumber)
		return h.MarshalSize() + len(payload) + int(h.PaddingSize), nil // sent, lost on the way
	}
	if len(payload) == 0 && h.Padding {
		w.padTS[h.SequenceNumber] = h.Timestamp
	}
	return w.rec.WriteRTP(h, payload)
}

// nack sends a subscriber's NACK of seqs the way the RTCP reader does:
// to the layers nackLayers names, whose readers answer it with the next
// packet they read.
func sendNACK(up *UpTrack, d *DownTrack, now int64, seqs ...uint16) {
	cur, prev := d.nackLayers(now)
	for len(seqs) > 0 {
		r := nackRequest{down: d}
		r.n = copy(r.seqs[:], seqs)
		seqs = seqs[r.n:]
		for _, l := range [2]*layer{up.layer(cur), up.layer(prev)} {
			if l != nil {
				l.queueNACK(r)
			}
		}
	}
}

// indexOf returns where seq is among the media packets received, or -1.
func (r *recorder) indexOf(seq uint16) int {
	for i, s := range r.seqs {
		if s == seq {
			return i
		}
	}
	return -1
}

func TestNACKAfterSwitchResendsFromThePreviousLayer(t *testing.T) {
	s, _ := newSimSource(t)
	path := newLossyPath(0)
	rec := path.rec
	d := simDown(s.up, path)
	d.SetTargetLayer(LayerLow)
	s.sendFrame(0)
	first := rec.seqs[0]
	// Low frames at first..first+5, three padding packets after the
	// second, the third and fourth low frames (the high layer's key
	// frame comes after the low frame of the same time), then the high
	// layer's key frame. Lost: the low layer's last two packets, the
	// middle padding packet and the key frame's first packet.
	lowLast, pad, high := first+14, first+7, first+15
	for _, q := range []uint16{lowLast - 1, lowLast, pad, high} {
		path.drop[q] = true
	}
	d.Probe(3 * (12 + probePadding))
	s.sendFrame()
	d.Probe(0)
	s.sendFrame()
	d.SetTargetLayer(LayerHigh)
	s.sendFrame(2)
	if d.CurrentLayer() != LayerHigh || len(rec.padding) != 2 || rec.indexOf(high+1) < 0 {
		t.Fatalf("setup: layer %d, padding %v, seqs %v", d.CurrentLayer(), rec.padding, rec.seqs)
	}
	if cur, prev := d.nackLayers(s.now); cur != LayerHigh || prev != LayerLow {
		t.Fatalf("NACKs go to layers %d and %d; want %d and %d", cur, prev, LayerHigh, LayerLow)
	}

	sendNACK(s.up, d, s.now, lowLast-1, lowLast, pad, high)
	s.sendFrame()
	for _, q := range []uint16{lowLast - 1, lowLast, high} {
		i := rec.indexOf(q)
		if i < 0 {
			t.Fatalf("%d not resent (received %v)", q, rec.seqs)
		}
		// The packet after it in the same frame was received the first
		// time: the resent one must carry the same layer, picture id
		// and timestamp.
		ref := rec.indexOf(q - 1)
		if q == high {
			ref = rec.indexOf(q + 1)
		}
		if rec.layers[i] != rec.layers[ref] || rec.pics[i] != rec.pics[ref] || rec.tss[i] != rec.tss[ref] {
			t.Errorf("%d resent as layer %d picture %d timestamp %d; want %d %d %d",
				q, rec.layers[i], rec.pics[i], rec.tss[i], rec.layers[ref], rec.pics[ref], rec.tss[ref])
		}
	}
	if rec.layers[rec.indexOf(lowLast)] != LayerLow || rec.layers[rec.indexOf(high)] != LayerHigh {
		t.Errorf("resent from the wrong layers: %v", rec.layers)
	}
	ts, ok := path.padTS[pad]
	if !ok || ts != path.padTS[pad-1] {
		t.Errorf("padding %d resent: %v, timestamp %d; want %d like its neighbour", pad, ok, ts, path.padTS[pad-1])
	}

	// Once the window has passed, the previous layer's packets are not
	// resent any more: their sequence numbers will wrap one day.
	for s.now < d.prevUntil.Load() {
		s.sendFrame()
	}
	if _, prev := d.nackLayers(s.now); prev != -1 {
		t.Fatalf("NACKs still go to layer %d after the window", prev)
	}
	n := len(rec.seqs)
	r := nackRequest{down: d, n: 1}
	r.seqs[0] = lowLast
	s.up.layers[LayerLow].Load().retransmit(&r)
	if len(rec.seqs) != n {
		t.Errorf("resent %d after the window", lowLast)
	}
}

// TestNACKRecoversLossAroundSwitches sends a stream that switches layers
// every 10 frames, with padding probes, over a path that loses 10% of the
// packets (retransmissions too), to a receiver that NACKs what it misses
// after every frame, for at most 10 frames: all of it arrives, except the
// old layer's last packets at a switch down (the allocator's answer to
// congestion: they are not resent into the congested path).
func TestNACKRecoversLossAroundSwitches(t *testing.T) {
	s, _ := newSimSource(t)
	path := newLossyPath(0.1)
	d := simDown(s.up, path)
	d.SetTargetLayer(LayerLow)
	got := map[uint16]bool{}
	asked := map[uint16]int{}
	var first, highest uint16
	var switchedAt []uint16   // the first sequence number after each switch
	down := map[uint16]bool{} // those of switches down
	target := LayerLow
	seen := 0
	const frames = 300
	for f := range frames {
		keys := []int{}
		goingDown := false
		if f%10 == 0 {
			l := []int{LayerLow, LayerHigh, LayerMedium}[f/10%3]
			goingDown = l < target
			target = l
			d.SetTargetLayer(l)
			keys = append(keys, l)
		}
		if f%7 == 3 {
			d.Probe(2 * (12 + probePadding))
		}
		sw := d.Switches()
		s.sendFrame(keys...)
		d.Probe(0)
		if d.Switches() != sw {
			switchedAt = append(switchedAt, d.m.first)
			if goingDown {
				down[d.m.first] = true
			}
		}
		for _, q := range path.rec.all[seen:] {
			if len(got) == 0 {
				first, highest = q, q
			}
			got[q] = true
			if int16(q-highest) > 0 {
				highest = q
			}
		}
		seen = len(path.rec.all)
		var missing []uint16
		for q := first; q != highest; q++ {
			if !got[q] && asked[q] < 10 {
				asked[q]++
				missing = append(missing, q)
			}
		}
		sendNACK(s.up, d, s.now, missing...)
	}
	// The last frames' losses may still be being asked for.
	var lost, lostAtSwitch, lostBeforeDown []uint16
	lostPadding := 0
	for q := first; q != highest-60; q++ {
		if got[q] {
			continue
		}
		beforeDown := false
		for _, sw := range switchedAt {
			if int16(q-sw) >= -4 && int16(q-sw) < 4 {
				lostAtSwitch = append(lostAtSwitch, q)
			}
			// A loss shortly before a switch down may still have been
			// asked for when the old layer's mapping was dropped.
			if down[sw] && int16(q-sw) >= -30 && int16(q-sw) < 0 {
				beforeDown = true
			}
		}
		if beforeDown {
			lostBeforeDown = append(lostBeforeDown, q)
			continue
		}
		lost = append(lost, q)
		if path.padSent[q] {
			lostPadding++
		}
	}
	t.Logf("not resent by design (the old layer's, before a switch down): %v", lostBeforeDown)
	t.Logf("%d sequence numbers sent (%d padding), %d switches, %d asked for; never received: %d, of them %d padding, %d within 4 of a switch",
		highest-first, len(path.padSent), len(switchedAt), len(asked), len(lost), lostPadding, len(lostAtSwitch))
	if len(lost) > 0 {
		t.Errorf("never received: %v (within 4 of a switch: %v)", lost, lostAtSwitch)
	}
	if d.Switches() < frames/10-2 {
		t.Errorf("%d switches; want about %d", d.Switches(), frames/10)
	}
}
