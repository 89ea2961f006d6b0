package quality

import "time"

// NumLayers is the number of simulcast layers (q, h, f).
const NumLayers = 3

// Track is what the allocator knows of one video track a subscriber
// receives.
type Track struct {
	// Bitrates is each layer's current bitrate in bits/s; 0 means the
	// publisher does not send that layer. A track without simulcast has
	// only Bitrates[0].
	Bitrates [NumLayers]int
	// Max is the highest layer the subscriber wants; -1 means none
	// (paused).
	Max int
}

// AllocatorConfig tunes an Allocator. Zero fields take the defaults.
type AllocatorConfig struct {
	// Hold is how long the path must be free of congestion before a probe
	// for a higher layer (default 2 s); after a failed probe the wait
	// doubles up to MaxBackoff (default 4 s). The backoff bounds how late
	// the first probe after a bottleneck clears can come; failed probes
	// stop at the first sign of a queue, so probing that often costs a
	// limited path little.
	Hold       time.Duration
	MaxBackoff time.Duration
	// ProbeTime is how long a probe lasts (default 2 s).
	ProbeTime time.Duration
	// Headroom is the share above a layer's bitrate a probe checks for
	// (default 0.1).
	Headroom float64
	// Floor, in bits/s, is the least a track without simulcast is sent
	// at: when the estimate cannot carry it the subscriber gets none of
	// it (audio only). 0 means no floor.
	Floor int
}

func (c *AllocatorConfig) defaults() {
	if c.Hold <= 0 {
		c.Hold = 2 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 4 * time.Second
	}
	if c.ProbeTime <= 0 {
		c.ProbeTime = 2 * time.Second
	}
	if c.Headroom <= 0 {
		c.Headroom = 0.1
	}
}

// Allocator picks the layer of each video track one subscriber receives
// from its bandwidth estimate: down at once when the path is congested,
// up one layer at a time after a quiet hold and a successful probe (extra
// traffic at the higher rate that caused no congestion), backing off
// after a failed one. One per subscriber; not safe for concurrent use.
type Allocator struct {
	cfg       AllocatorConfig
	started   bool
	layers    []int
	validated int // bits/s the path has shown it carries; 0 after congestion
	holdUntil time.Time
	backoff   time.Duration

	probing    bool
	probeStart time.Time
	probeFrom  int // the estimate when the probe began
	probeUntil time.Time
	probeTo    []int
	probeNeed  int
}

// NewAllocator returns an allocator.
func NewAllocator(cfg AllocatorConfig) *Allocator {
	cfg.defaults()
	return &Allocator{cfg: cfg, backoff: cfg.Hold}
}

// Decision is what the allocator decided at one update.
type Decision struct {
	// Layers is the layer each track should receive (-1: none), in the
	// order of the tracks given.
	Layers []int
	// ProbeBps is extra traffic to send now, in bits/s, to probe for the
	// allocation being tried; 0 when not probing.
	ProbeBps int
	// Limited reports that some track gets less than it asked for.
	Limited bool
	// Congested reports that the path did not carry what was sent: a
	// track's layer lowered now should stop at once, not at the lower
	// layer's keyframe.
	Congested bool
	// Event names what changed at this update, for logs: "start",
	// "congested", "probe", "probe failed", "probe ok", "" for nothing.
	Event string
}

// Signals is what the subscriber's transport said since the previous
// update.
type Signals struct {
	// Estimate is the path's estimated capacity in bits/s (GCC); 0 means
	// unknown: no limit.
	Estimate int
	// Fell reports that the estimate went down (GCC saw delay grow or
	// packets go missing).
	Fell bool
	// Overuse reports that the estimator's delay detector sees the path's
	// queue grow now (GCC's "overuse"): the earliest sign that a probe
	// overfills a bottleneck, also when the estimate has nowhere lower to
	// fall.
	Overuse bool
	// Loss is the highest fraction lost in the receiver reports since
	// the previous update, 0..1. (GCC's own loss average is not used: on
	// a loaded machine it reports loss that the media does not see.)
	Loss float64
}

// Congestion thresholds: an estimate that fell below this share of what
// the allocation sends, or this much loss (half of it during a probe: the
// probe's extra traffic is what overflows a bottleneck's queue). The
// estimate alone is not trusted more than that: its delay detector also
// fires when a loaded machine delays packets.
const (
	congestedShare = 0.5
	congestedLoss  = 0.1
)

// probeFallShare: a probe fails when the estimate falls under this share
// of where it was when the probe began. GCC's estimate wanders by 5–10 %
// on a clear path; a queue that the probe fills shows first as overuse.
const probeFallShare = 0.85

// Update decides for now. other is the bitrate of what else is sent
// (audio). Calls must list the same tracks in the same order; when the
// list changes, the allocation starts over.
func (a *Allocator) Update(now time.Time, sig Signals, tracks []Track, other int) Decision {
	if len(a.layers) != len(tracks) {
		a.layers = make([]int, len(tracks))
		a.started = false
		a.probing = false
	}
	estimate := sig.Estimate
	if estimate <= 0 {
		// No estimate: everyone gets what they ask for.
		for i, t := range tracks {
			a.layers[i] = best(t, t.Max)
		}
		return a.decision(tracks, 0)
	}
	sending := need(tracks, a.layers) + other
	congested := sig.Loss > congestedLoss || (sig.Fell && float64(estimate) < congestedShare*float64(sending))
	// A probe stops at the first sign (a growing queue, loss, or an
	// estimate that fell well under where it was when the probe began):
	// its traffic is what fills a bottleneck's queue. That says the next allocation does not fit,
	// not that the current one does not: the layers stay.
	probeFailed := a.probing && (sig.Overuse || sig.Loss > congestedLoss/2 || (sig.Fell && float64(estimate) < probeFallShare*float64(a.probeFrom)))
	event := ""
	switch {
	case !a.started:
		event = "start"
		a.started = true
		a.fit(tracks, estimate-other)
		a.holdUntil = now.Add(a.cfg.Hold)
	case congested:
		event = "congested"
		a.validated = 0
		if a.probing {
			event = "probe failed"
			a.probing = false
			a.backoff = min(2*a.backoff, a.cfg.MaxBackoff)
		}
		a.holdUntil = now.Add(a.backoff)
		if need(tracks, a.layers)+other > estimate {
			a.fit(tracks, estimate-other)
		}
	case probeFailed:
		event = "probe failed"
		a.probing = false
		a.backoff = min(2*a.backoff, a.cfg.MaxBackoff)
		a.holdUntil = now.Add(a.backoff)
	case a.probing && now.Before(a.probeUntil):
		// Keep probing.
	case a.probing:
		// The probe ran its course without congestion: take the layer.
		event = "probe ok"
		a.probing = false
		a.validated = a.probeNeed
		copy(a.layers, a.probeTo)
		a.backoff = a.cfg.Hold
		// The path has just carried this allocation plus the probe's
		// headroom: the next step up, if any, is probed at once, so that
		// a climb from q to f after a bottleneck clears is one probe per
		// layer with no hold in between.
		a.holdUntil = now
	default:
		// Follow what the tracks ask for, and what they send.
		for i, t := range tracks {
			a.layers[i] = min(a.layers[i], best(t, t.Max))
			if a.layers[i] < 0 && t.Max >= 0 && (simulcast(t) || max(estimate, a.validated) >= a.cfg.Floor) {
				a.layers[i] = lowest(t)
			}
			if l := a.layers[i]; l >= 0 && t.Bitrates[l] == 0 {
				a.layers[i] = best(t, l) // that layer stopped: the next below
			}
		}
		if !now.Before(a.holdUntil) {
			if next, ok := a.step(tracks); ok {
				event = "probe"
				a.probing = true
				a.probeTo = next
				a.probeNeed = int(float64(need(tracks, next)+other) * (1 + a.cfg.Headroom))
				a.probeUntil = now.Add(a.cfg.ProbeTime)
				a.probeStart = now
				a.probeFrom = estimate
			}
		}
	}
	probe := 0
	if a.probing {
		// Ramp up over most of the probe, so that a bottleneck
		// shows before the probe overflows it.
		probe = max(a.probeNeed-need(tracks, a.layers)-other, 0)
		if ramp := a.cfg.ProbeTime * 3 / 4; ramp > 0 {
			f := min(float64(now.Sub(a.probeStart)+a.cfg.ProbeTime/6)/float64(ramp), 1)
			probe = int(float64(probe) * f)
		}
	}
	d := a.decision(tracks, probe)
	d.Event = event
	d.Congested = congested
	return d
}

func (a *Allocator) decision(tracks []Track, probe int) Decision {
	d := Decision{Layers: append([]int(nil), a.layers...), ProbeBps: probe}
	for i, t := range tracks {
		if d.Layers[i] < best(t, t.Max) {
			d.Limited = true
		}
	}
	return d
}

// fit lowers the allocation until it needs at most budget: every track
// starts at its lowest layer (or none, below the floor), then tracks go up
// one layer at a time in turn while the budget allows.
func (a *Allocator) fit(tracks []Track, budget int) {
	for i, t := range tracks {
		a.layers[i] = -1
		l := lowest(t)
		if l < 0 || t.Max < 0 || (!simulcast(t) && budget < a.cfg.Floor) {
			continue
		}
		a.layers[i] = l
	}
	for {
		up := false
		for i, t := range tracks {
			l := a.layers[i]
			if l < 0 {
				continue
			}
			n := nextLayer(t, l)
			if n < 0 {
				continue
			}
			trial := append([]int(nil), a.layers...)
			trial[i] = n
			if need(tracks, trial) <= budget {
				a.layers[i] = n
				up = true
			}
		}
		if !up {
			return
		}
	}
}

// step returns the allocation one layer higher for one track (the one on
// the lowest layer first), if any track can go up.
func (a *Allocator) step(tracks []Track) ([]int, bool) {
	pick := -1
	for i, t := range tracks {
		l := a.layers[i]
		if (l < 0 && t.Max >= 0 && lowest(t) >= 0) || (l >= 0 && nextLayer(t, l) >= 0) {
			if pick < 0 || l < a.layers[pick] {
				pick = i
			}
		}
	}
	if pick < 0 {
		return nil, false
	}
	next := append([]int(nil), a.layers...)
	if next[pick] < 0 {
		next[pick] = lowest(tracks[pick])
	} else {
		next[pick] = nextLayer(tracks[pick], next[pick])
	}
	return next, true
}

// need is the bitrate of an allocation.
func need(tracks []Track, layers []int) int {
	n := 0
	for i, t := range tracks {
		if l := layers[i]; l >= 0 {
			n += t.Bitrates[l]
		}
	}
	return n
}

// best is the highest layer at most upTo that is sent, or -1.
func best(t Track, upTo int) int {
	for l := min(upTo, NumLayers-1); l >= 0; l-- {
		if t.Bitrates[l] > 0 {
			return l
		}
	}
	return -1
}

// lowest is the lowest layer sent, or -1.
func lowest(t Track) int {
	for l := range NumLayers {
		if t.Bitrates[l] > 0 {
			return l
		}
	}
	return -1
}

// nextLayer is the next layer above l that is sent and wanted, or -1.
func nextLayer(t Track, l int) int {
	for n := l + 1; n <= min(t.Max, NumLayers-1); n++ {
		if t.Bitrates[n] > 0 {
			return n
		}
	}
	return -1
}

func simulcast(t Track) bool { return t.Bitrates[1] > 0 || t.Bitrates[2] > 0 }
