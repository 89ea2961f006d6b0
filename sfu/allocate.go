package sfu

import (
	"slices"

	"github.com/pion/rtcp"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/quality"
)

// allocTick is how often a subscriber's layers are chosen again.
const allocTick = 250 * time.Millisecond

// downlink is what the allocator of one subscriber measured last, for
// statistics.
type downlink struct {
	estimate atomic.Int64 // bits/s; 0 unknown
	limited  atomic.Bool
	heard    atomic.Int64 // Unix ns of the latest RTCP from the subscriber; 0 none
}

// Estimate returns the latest bandwidth estimate towards this participant
// (GCC from TWCC feedback) in bits/s, 0 when unknown.
func (p *Peer) Estimate() int { return int(p.down.estimate.Load()) }

// SubscriberHeard returns when the participant last sent feedback (any
// RTCP: transport-wide feedback comes about every 100 ms while media
// reaches it, reports every second or few) on what it is sent; zero if
// never.
func (p *Peer) SubscriberHeard() time.Time {
	if at := p.down.heard.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Time{}
}

// Limited reports whether the estimate keeps some video below what was
// asked for.
func (p *Peer) Limited() bool { return p.down.limited.Load() }

// runAllocator chooses, every allocTick until quit closes, the layer each
// subscribed video track is sent at, from the bandwidth estimate.
func (p *Peer) runAllocator(bwe cc.BandwidthEstimator, quit <-chan struct{}) {
	t := time.NewTicker(allocTick)
	defer t.Stop()
	a := quality.NewAllocator(p.engine.alloc)
	var st allocState
	for {
		select {
		case <-quit:
			return
		case now := <-t.C:
			p.allocate(now, bwe, a, &st)
		}
	}
}

type allocState struct {
	lastEst    int
	lastReport time.Time
	downs      []*DownTrack
	tracks     []quality.Track
}

func (p *Peer) allocate(now time.Time, bwe cc.BandwidthEstimator, a *quality.Allocator, st *allocState) {
	st.downs = st.downs[:0]
	p.mu.Lock()
	for _, s := range p.downs {
		st.downs = append(st.downs, s.down)
	}
	p.mu.Unlock()
	slices.SortFunc(st.downs, func(x, y *DownTrack) int {
		switch {
		case x.id < y.id:
			return -1
		case x.id > y.id:
			return 1
		}
		return 0
	})
	est := 0
	if bwe != nil {
		est = bwe.GetTargetBitrate()
	}
	sig := quality.Signals{Estimate: est, Fell: st.lastEst > 0 && est < st.lastEst*95/100}
	if bwe != nil {
		sig.Overuse = bwe.GetStats()["usage"] == "overuse"
	}

	st.lastEst = est
	other := 0
	video := st.downs[:0:0]
	st.tracks = st.tracks[:0]
	for _, d := range st.downs {
		if rr := d.ReceiverStats(); rr.At.After(st.lastReport) {
			sig.Loss = max(sig.Loss, rr.FractionLost)
		}
		rates := d.up.LayerBitrates(now)
		if d.up.info.Kind != webrtc.RTPCodecTypeVideo {
			other += rates[0]
			continue
		}
		video = append(video, d)
		t := quality.Track{Max: d.MaxLayer()}
		if d.Paused() {
			t.Max = -1
		}
		copy(t.Bitrates[:], rates[:])
		st.tracks = append(st.tracks, t)
	}
	st.lastReport = now
	dec := a.Update(now, sig, st.tracks, other)
	if dec.Event != "" {
		p.log.Debug("layers", "event", dec.Event, "estimate", est, "fell", sig.Fell, "overuse", sig.Overuse, "loss", sig.Loss,
			"layers", dec.Layers, "probe_bps", dec.ProbeBps, "rates", st.tracks, "other", other)
	}
	p.down.estimate.Store(int64(est))
	p.down.limited.Store(dec.Limited)
	share := int64(0)
	if est > 0 && len(video) > 0 {
		share = int64(max(est-other, 0) / len(video))
	}
	probeSet := false
	for i, d := range video {
		d.share.Store(share)
		if dec.Congested {
			d.SetTargetLayerNow(dec.Layers[i])
		} else {
			d.SetTargetLayer(dec.Layers[i])
		}
		if dec.ProbeBps > 0 && !probeSet && dec.Layers[i] >= 0 {
			d.Probe(int64(dec.ProbeBps) * int64(allocTick) / int64(time.Second) / 8)
			probeSet = true
		} else {
			d.Probe(0)
		}
	}
}

// rembInterval is how often a publisher without simulcast is told (REMB)
// what its subscribers can take.
const rembInterval = time.Second

// runREMB caps, every rembInterval until quit closes, the video this
// peer publishes without simulcast with REMB (see Engine.remb).
func (p *Peer) runREMB(quit <-chan struct{}) {
	t := time.NewTicker(rembInterval)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
			p.sendREMB()
		}
	}
}

// LayerEvents is implemented by PeerEvents that want to know which
// simulcast layers of a published track anyone may receive (to let the
// publisher pause the others).
type LayerEvents interface {
	LayersWanted(track string, active [maxLayers]bool)
}

// updateWantedLayers tells the events, when it changed, which layers of
// each simulcast track this peer publishes some subscriber may receive:
// those up to the highest maximum of the subscribers that are not paused.
// Layers below a wanted one stay wanted (the allocator may need them).
func (p *Peer) updateWantedLayers(ups []*UpTrack) {
	le, ok := p.events.(LayerEvents)
	if !ok {
		return
	}
	for _, up := range ups {
		if !up.simulcast {
			continue
		}
		top := -1
		downs := *up.downs.Load()
		for _, d := range downs {
			if !d.Paused() {
				top = max(top, d.MaxLayer())
			}
		}
		var active [maxLayers]bool
		for l := 0; l <= top; l++ {
			active[l] = true
		}
		if old := up.wanted.Swap(packLayers(active)); old != packLayers(active) {
			p.log.Debug("layers wanted", "track", up.info.SID, "active", active, "subscribers", len(downs))
			le.LayersWanted(up.info.SID, active)
		}
	}
}

// packLayers encodes a layer set as bits, with bit 3 set so that the zero
// value means "not told yet".
func packLayers(a [maxLayers]bool) uint32 {
	v := uint32(1 << maxLayers)
	for i, on := range a {
		if on {
			v |= 1 << i
		}
	}
	return v
}

func (p *Peer) sendREMB() {
	p.mu.Lock()
	pub := p.pub
	ups := make([]*UpTrack, 0, len(p.ups))
	for _, up := range p.ups {
		ups = append(ups, up)
	}
	p.mu.Unlock()
	if pub == nil {
		return
	}
	p.updateWantedLayers(ups)
	bitrate, ssrcs := p.engine.remb(ups, time.Now())
	if bitrate == 0 {
		return
	}
	if err := pub.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: float32(bitrate), SSRCs: ssrcs}}); err != nil {
		p.log.Debug("remb", "err", err)
	}
}

// remb returns the REMB for a publisher of ups, and records each track's
// limit. Browsers take a REMB as the limit of all they send on the
// transport, whichever SSRCs it names: so it is one REMB, the sum of the
// limits of the video tracks without simulcast, each the smallest share
// of its subscribers or VideoMax, whichever is less (a track nobody with
// an estimate receives: VideoMax alone), and never under the floor, plus
// what its audio sends now (so that the video gets its limit). It returns
// 0 when there is no limit to send, and when some video of the publisher
// has no limit (simulcast video, or a track nobody limits): such a REMB
// would starve it.
func (e *Engine) remb(ups []*UpTrack, now time.Time) (bitrate int64, ssrcs []uint32) {
	for _, up := range ups {
		if up.simulcast {
			return 0, nil
		}
	}
	audio := int64(0)
	for _, up := range ups {
		if up.info.Kind != webrtc.RTPCodecTypeVideo {
			audio += int64(up.LayerBitrates(now)[0])
			continue
		}
		limit := int64(0)
		for _, d := range *up.downs.Load() {
			if s := d.share.Load(); s > 0 && !d.Paused() && (limit == 0 || s < limit) {
				limit = s
			}
		}
		if vmax := int64(e.videoMax); vmax > 0 && (limit == 0 || limit > vmax) {
			limit = vmax
		}
		if limit == 0 {
			return 0, nil // nobody with an estimate receives it, and no cap
		}
		limit = max(limit, int64(e.floor))
		up.remb.Store(limit)
		bitrate += limit
		ssrcs = append(ssrcs, up.mediaSSRC())
	}
	if bitrate == 0 {
		return 0, nil
	}
	return bitrate + audio, ssrcs
}
