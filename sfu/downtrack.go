package sfu

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// rtpWriter is where a DownTrack writes (Pion's TrackLocalWriter).
type rtpWriter interface {
	WriteRTP(header *rtp.Header, payload []byte) (int, error)
}

// forwardedExtensions are the header extensions carried from publisher to
// subscriber. Others (transport-wide sequence numbers, abs-send-time, mid,
// rid) describe one hop and are not forwarded.
var forwardedExtensions = []string{
	"urn:ietf:params:rtp-hdrext:ssrc-audio-level",
	"http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
	"urn:3gpp:video-orientation",
}

// binding is what negotiation fixed for a down-track: it changes only when
// the subscribe transport renegotiates, and is swapped atomically.
type binding struct {
	ssrc   uint32
	pt     uint8
	writer rtpWriter
	// extMap maps a publisher extension id to the subscriber's id for the
	// same URI; 0 drops the extension.
	extMap [256]uint8
}

// DownTrack is one subscriber's copy of an UpTrack. It implements
// webrtc.TrackLocal. It forwards exactly one layer of the track and
// rewrites SSRC, payload type, sequence number, timestamp, header
// extension ids and (for VP8 simulcast) picture id and TL0PICIDX, so that
// pausing, resuming and switching layers is seamless for the receiver. A
// switch happens at a keyframe of the target layer. NACKs are answered by
// the reader of the layer a packet came from, which holds its history:
// for a moment after a switch that includes the previous layer.
//
// The rewrite state is guarded by mu: without simulcast only the track's
// one reader takes it (uncontended); with simulcast the readers of two
// layers may meet there during a switch.
type DownTrack struct {
	up       *UpTrack
	id       string // the track SID
	streamID string // the publisher's participant SID
	binding  atomic.Pointer[binding]
	paused   atomic.Bool

	// maxLayer is what the subscriber asked for; target is the layer to
	// receive (-1: none), decided from maxLayer and the bandwidth
	// estimate; current is the layer being forwarded (-1: none yet).
	maxLayer atomic.Int32
	maxSize  atomic.Uint32 // width<<16 | height the subscriber shows it at; 0 any
	// holes and holesFilled count sequence numbers skipped when
	// forwarding (source gaps) and those filled late (see writePacket).
	holes, holesFilled atomic.Uint64
	target             atomic.Int32
	current            atomic.Int32
	needResync         atomic.Bool
	// leaving: the current layer stops at the end of its frame rather
	// than run until the target's keyframe (SetTargetLayerNow).
	leaving atomic.Bool
	// probe is how many bytes of padding packets to send to probe the
	// path for an up-switch.
	probe atomic.Int64

	packets  atomic.Uint64
	bytes    atomic.Uint64
	nacks    atomic.Uint64 // sequence numbers the subscriber asked to be resent, each once
	plis     atomic.Uint64 // PLI/FIR received from the subscriber
	switches atomic.Uint64
	probed   atomic.Uint64 // bytes of probe padding sent
	// share is the subscriber's bandwidth for this track, bits/s (its
	// estimate split among its video), 0 when unknown: what REMB caps a
	// publisher without simulcast at.
	share atomic.Int64
	rr    receiverReport

	// nackFrom packs the layers whose readers answer NACKs (see
	// nackLayers): the current mapping's and the previous one's, each
	// plus one (0: none). prevUntil is when the previous one expires,
	// Unix ns. Both change only at a switch or resync.
	nackFrom  atomic.Uint32
	prevUntil atomic.Int64

	mu         sync.Mutex
	cur        int32
	started    bool
	left       bool // the current layer was left before the target's keyframe came
	seqOffset  uint16
	lastOutSeq uint16
	lastOutTS  uint32
	lastOutAt  int64
	// m maps what was sent since the last resync or switch back to the
	// source; prev is the mapping it replaced, kept for the NACKs of the
	// packets sent just before.
	m          seqMap
	prev       seqMap
	rewriteVP8 bool
	scratch    []byte // the rewritten VP8 payload
	hdr        rtp.Header
}

// rewrite is how a run of one layer's packets is rewritten: the
// timestamp offset and, for VP8 simulcast, the picture id and TL0PICIDX
// continuation.
type rewrite struct {
	tsOffset   uint32
	picStarted bool
	picIn      int // the layer's latest picture id
	picOut     int // its rewritten value, unwrapped
	tl0Started bool
	tl0In      uint8
	tl0Out     uint8
}

// NewDownTrack makes a subscriber's copy of up. It starts forwarding when
// Pion binds it after negotiation.
func NewDownTrack(up *UpTrack) *DownTrack {
	d := &DownTrack{
		up:       up,
		id:       up.info.SID,
		streamID: up.info.Participant,
	}
	d.lastOutSeq = uint16(rand.Uint32())
	d.m.rw.tsOffset = rand.Uint32()
	d.m.rw.picOut = int(rand.Uint32() & 0x7fff)
	d.m.rw.tl0Out = uint8(rand.Uint32())
	d.maxLayer.Store(LayerHigh)
	if up.simulcast {
		d.target.Store(LayerHigh)
		d.cur = -1
		d.current.Store(-1)
		d.rewriteVP8 = up.isVP8
		if d.rewriteVP8 {
			d.scratch = make([]byte, 0, maxPacketSize+2)
		}
	}
	// Room for the forwarded extensions and those interceptors add.
	d.hdr.Extensions = make([]rtp.Extension, 0, maxExtensions+4)
	return d
}

// UpTrack returns the published track this copies.
func (d *DownTrack) UpTrack() *UpTrack { return d.up }

// SetPaused stops (true) or resumes forwarding to this subscriber only.
func (d *DownTrack) SetPaused(p bool) {
	if d.paused.Swap(p) && !p {
		d.up.RequestLayerKeyframe(int(max(d.target.Load(), 0)))
	}
}

// Paused reports whether the subscriber asked for nothing.
func (d *DownTrack) Paused() bool { return d.paused.Load() }

// SetMaxLayer sets the highest layer the subscriber wants (LayerLow to
// LayerHigh); the target follows at the next allocation.
func (d *DownTrack) SetMaxLayer(l int) {
	d.maxLayer.Store(int32(min(max(l, LayerLow), LayerHigh)))
}

// SetMaxSize sets the size, in pixels, at which the subscriber shows the
// video (0, 0: any): it then wants no layer larger than the smallest one
// that covers that size.
func (d *DownTrack) SetMaxSize(width, height int) {
	d.maxSize.Store(uint32(min(max(width, 0), 0xffff))<<16 | uint32(min(max(height, 0), 0xffff)))
}

// MaxLayer returns the highest layer the subscriber wants: the one it
// asked for, or a lower one that covers the size it shows the video at.
func (d *DownTrack) MaxLayer() int {
	l := int(d.maxLayer.Load())
	if v := d.maxSize.Load(); v != 0 && d.up.simulcast {
		l = min(l, layerForSize(d.up.LayerSizes(), int(v>>16), int(v&0xffff)))
	}
	return l
}

// sizeSlack lets a layer a little smaller than the shown size cover it:
// a 640x360 layer in a 660x370 tile is scaled up unnoticeably, and the
// next layer costs several times the bandwidth.
const sizeSlack = 0.9

// layerForSize returns the lowest layer whose size covers width x height
// (a zero dimension covers anything), or the top layer when none does. A
// layer whose size is not known yet (no key frame since it resumed) is
// taken to be half the next one's, or twice the previous one's, as
// browsers and the bots scale simulcast layers.
func layerForSize(sizes [maxLayers]FrameSize, width, height int) int {
	known := func(s FrameSize) bool { return s.Width > 0 && s.Height > 0 }
	for l := range sizes {
		if known(sizes[l]) {
			continue
		}
		for k := 1; k < maxLayers; k++ {
			if up := l + k; up < maxLayers && known(sizes[up]) {
				sizes[l] = FrameSize{sizes[up].Width >> k, sizes[up].Height >> k}
				break
			}
			if down := l - k; down >= 0 && known(sizes[down]) {
				sizes[l] = FrameSize{sizes[down].Width << k, sizes[down].Height << k}
				break
			}
		}
	}
	for l, s := range sizes {
		if !known(s) {
			continue
		}
		if float64(s.Width) >= sizeSlack*float64(width) && float64(s.Height) >= sizeSlack*float64(height) {
			return l
		}
	}
	return LayerHigh
}

// SetTargetLayer sets the layer to forward (-1: none). For a track
// without simulcast any value from 0 up means its one layer. Switching to
// another layer waits for its next keyframe, which is requested now.
func (d *DownTrack) SetTargetLayer(l int) {
	if !d.up.simulcast && l > 0 {
		l = 0
	}
	l = min(max(l, -1), LayerHigh)
	if int32(l) >= d.current.Load() {
		d.leaving.Store(false)
	}
	if old := d.target.Swap(int32(l)); old != int32(l) && l >= 0 && int32(l) != d.current.Load() {
		d.up.RequestLayerKeyframe(l)
	}
}

// SetTargetLayerNow is SetTargetLayer for a path that does not carry what
// it is sent: a current layer above l stops at the end of its frame
// instead of running until l's keyframe, as each more packet of it would
// be lost in the full queue (and delay l's keyframe behind it). The
// subscriber's picture holds for that while, a round trip to the
// publisher and back.
func (d *DownTrack) SetTargetLayerNow(l int) {
	d.SetTargetLayer(l)
	if t := d.target.Load(); t >= 0 && t < d.current.Load() && d.up.simulcast {
		d.leaving.Store(true)
	}
}

// TargetLayer returns the layer being switched to or forwarded (-1: none).
func (d *DownTrack) TargetLayer() int { return int(d.target.Load()) }

// CurrentLayer returns the layer being forwarded (-1: none).
func (d *DownTrack) CurrentLayer() int {
	if !d.up.simulcast {
		if d.target.Load() < 0 || d.paused.Load() {
			return -1
		}
		return 0
	}
	return int(d.current.Load())
}

// Switches returns how many layer switches happened.
func (d *DownTrack) Switches() uint64 { return d.switches.Load() }

// Probe asks for up to n bytes of padding packets on this down-track,
// sent after frames, to see whether the path takes more.
func (d *DownTrack) Probe(n int64) { d.probe.Store(n) }

// ProbedBytes returns the bytes of probe padding sent.
func (d *DownTrack) ProbedBytes() uint64 { return d.probed.Load() }

// Stats returns packets and bytes sent, the sequence numbers the
// subscriber asked to be resent (each once, however often it asked, and
// whether or not the SFU could resend it) and keyframe requests received.
func (d *DownTrack) Stats() (packets, bytes, nacks, plis uint64) {
	return d.packets.Load(), d.bytes.Load(), d.nacks.Load(), d.plis.Load()
}

// ID implements webrtc.TrackLocal.
func (d *DownTrack) ID() string { return d.id }

// RID implements webrtc.TrackLocal.
func (d *DownTrack) RID() string { return "" }

// StreamID implements webrtc.TrackLocal.
func (d *DownTrack) StreamID() string { return d.streamID }

// Kind implements webrtc.TrackLocal.
func (d *DownTrack) Kind() webrtc.RTPCodecType { return d.up.info.Kind }

// Bind implements webrtc.TrackLocal: it picks the negotiated payload type
// of the publisher's codec and maps header extension ids.
func (d *DownTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec, ok := matchCodec(d.up.info.Codec, ctx.CodecParameters())
	if !ok {
		return webrtc.RTPCodecParameters{}, fmt.Errorf("bind %s: subscriber does not accept %s", d.id, d.up.info.Codec.MimeType)
	}
	b := &binding{ssrc: uint32(ctx.SSRC()), pt: uint8(codec.PayloadType), writer: ctx.WriteStream()}
	down := make(map[string]uint8, len(ctx.HeaderExtensions()))
	for _, e := range ctx.HeaderExtensions() {
		down[e.URI] = uint8(e.ID)
	}
	for upID, uri := range d.up.extURIs {
		for _, f := range forwardedExtensions {
			if f == uri {
				b.extMap[upID] = down[uri]
			}
		}
	}
	d.binding.Store(b)
	d.up.RequestLayerKeyframe(int(max(d.target.Load(), 0)))
	return codec, nil
}

// Unbind implements webrtc.TrackLocal.
func (d *DownTrack) Unbind(webrtc.TrackLocalContext) error {
	d.binding.Store(nil)
	return nil
}

// matchCodec finds the publisher's codec among the negotiated ones: same
// MIME type and, for H.264, the same profile and packetization mode.
func matchCodec(want webrtc.RTPCodecParameters, have []webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
	var fallback *webrtc.RTPCodecParameters
	for i, c := range have {
		if !strings.EqualFold(c.MimeType, want.MimeType) {
			continue
		}
		if c.SDPFmtpLine == want.SDPFmtpLine || !strings.EqualFold(want.MimeType, webrtc.MimeTypeH264) {
			return c, true
		}
		if fmtpParam(c.SDPFmtpLine, "packetization-mode") == fmtpParam(want.SDPFmtpLine, "packetization-mode") &&
			strings.EqualFold(fmtpParam(c.SDPFmtpLine, "profile-level-id"), fmtpParam(want.SDPFmtpLine, "profile-level-id")) {
			return c, true
		}
		if fallback == nil {
			fallback = &have[i]
		}
	}
	if fallback != nil {
		return *fallback, true
	}
	return webrtc.RTPCodecParameters{}, false
}

func fmtpParam(line, key string) string {
	for _, kv := range strings.Split(line, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if k == key {
			return v
		}
	}
	return ""
}

// writePacket forwards p, a packet of layer l; it returns the bytes
// written (0 if skipped). Called by the layer's reader.
func (d *DownTrack) writePacket(l *layer, p *packetView) int {
	b := d.binding.Load()
	if b == nil {
		return 0
	}
	idx := int32(l.index)
	tgt := d.target.Load()
	if idx != tgt && idx != d.current.Load() {
		return 0 // not this subscriber's layer: no lock taken
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.paused.Load() || tgt < 0 {
		d.needResync.Store(true)
		if d.up.simulcast {
			d.setCur(-1)
		}
		return 0
	}
	switch {
	case idx != d.cur:
		if idx != tgt {
			return 0
		}
		if !d.isKeyframe(p) {
			l.requestKeyframe(p.arrival)
			return 0
		}
		d.switchTo(idx, p)
	case idx > tgt && d.leaving.Load() && p.timestamp+d.m.rw.tsOffset != d.lastOutTS:
		// Left at the first packet of its next frame; no resends of it
		// either (see restartMap). The target's keyframe was asked for.
		d.leaving.Store(false)
		d.left = true
		d.setCur(-1)
		d.nackFrom.Store(0)
		return 0
	case d.needResync.Load() && d.up.simulcast:
		// Muted: resume at the next keyframe, as a switch.
		d.setCur(-1)
		return 0
	case !d.started || d.needResync.Load():
		// Continue the outgoing sequence without a gap; the timestamp
		// keeps its offset so that it follows the real clock.
		d.seqOffset = d.lastOutSeq + 1 - p.seq
		d.restartMap(int32(l.index), p.arrival)
		if d.started {
			l.requestKeyframe(p.arrival)
		}
		d.started = true
		d.needResync.Store(false)
	}
	out := p.seq + d.seqOffset
	if int16(out-d.m.first) < 0 {
		return 0 // older than the last resync: its place was taken
	}
	n := d.write(b, p, out, &d.m.rw)
	if n > 0 {
		// Holes this down-track leaves in its own sequence: packets the
		// publisher's uplink lost, forwarded as gaps; a late packet (an
		// upstream retransmission) fills one. Receiver reports count them
		// as lost, so that the downlink's own loss is theirs minus these.
		if ahead := int16(out - d.lastOutSeq); ahead > 1 {
			d.holes.Add(uint64(ahead - 1))
		} else if ahead < 0 {
			d.holesFilled.Add(1)
		}
	}
	if int16(out-d.lastOutSeq) > 0 {
		d.lastOutSeq = out
		d.lastOutTS = p.timestamp + d.m.rw.tsOffset
		d.lastOutAt = p.arrival
	}
	if n > 0 && p.marker && d.probe.Load() > 0 && out == d.lastOutSeq {
		d.writeProbe(b)
	}
	return n
}

func (d *DownTrack) setCur(l int32) {
	d.cur = l
	d.current.Store(l)
}

// switchTo makes layer idx current from p, a keyframe's first packet:
// the sequence continues without a gap, the timestamp advances by the
// wall time since the last packet sent, and VP8 picture ids continue.
func (d *DownTrack) switchTo(idx int32, p *packetView) {
	d.seqOffset = d.lastOutSeq + 1 - p.seq
	d.restartMap(idx, p.arrival)
	rw := &d.m.rw
	if d.started {
		delta := uint32(1)
		if el := p.arrival - d.lastOutAt; el > 0 {
			delta = max(1, uint32(uint64(el)*uint64(d.clockRate())/uint64(time.Second)))
		}
		rw.tsOffset = d.lastOutTS + delta - p.timestamp
	}
	if d.rewriteVP8 {
		var desc vp8Descriptor
		pl := p.payload()
		if parseVP8(pl, &desc) {
			if desc.picIDLen > 0 {
				in, _ := vp8PictureID(pl, &desc)
				if rw.picStarted {
					rw.picOut++
				}
				rw.picIn, rw.picStarted = in, true
			}
			if desc.tl0Off > 0 {
				if rw.tl0Started {
					rw.tl0Out++
				}
				rw.tl0In, rw.tl0Started = pl[desc.tl0Off], true
			}
		}
	}
	d.started = true
	d.needResync.Store(false)
	if d.cur >= 0 || d.left {
		d.switches.Add(1)
	}
	d.left = false
	d.leaving.Store(false)
	d.setCur(idx)
}

func (d *DownTrack) clockRate() uint32 {
	if c := d.up.info.Codec.ClockRate; c > 0 {
		return c
	}
	return 90000
}

// isKeyframe reports whether p starts a keyframe; for codecs it cannot
// parse, false (such tracks never switch layers).
func (d *DownTrack) isKeyframe(p *packetView) bool {
	pl := p.payload()
	switch {
	case d.up.isVP8:
		var desc vp8Descriptor
		return parseVP8(pl, &desc) && desc.keyframe
	case d.up.isH264:
		return isH264Keyframe(pl)
	case d.up.isVP9:
		// Not inter-picture predicted, and the start of a frame.
		return len(pl) > 0 && pl[0]&0x40 == 0 && pl[0]&0x08 != 0
	}
	return false
}

// maxSegments bounds the padding insertions remembered for NACKs; older
// packets are not resent.
const maxSegments = 32

// switchNACKWindow is how long after a switch or resync the packets sent
// before it can still be resent. A receiver NACKs a lost packet again
// about every round trip (Chrome up to 10 times, Pion every 100 ms) and
// the last packets before a switch are the ones most likely lost: the new
// layer's key frame is a burst right behind them. Longer than a few
// round trips buys nothing; the bound keeps a stale mapping from
// answering a sequence number that wrapped.
const switchNACKWindow = time.Second

// seqSegment is a run of sent sequence numbers from start on: the first
// pad of them were padding (sent with timestamp ts), the rest map to the
// source by offset.
type seqSegment struct {
	start, pad, offset uint16
	ts                 uint32
}

// seqMap maps the sequence numbers sent from one layer, since forwarding
// started or switched to it, back to that layer's, and keeps how those
// packets were rewritten, so that a NACK of any of them can be answered
// with the same packet.
type seqMap struct {
	layer int32  // whose history the source sequence numbers are in
	first uint16 // the oldest sequence number mapped
	last  uint16 // the newest, once the map was replaced
	// segs records where padding shifted the offset, newest last.
	segs [maxSegments]seqSegment
	n    int
	rw   rewrite
}

// find returns the segment out falls in, if it is between the map's
// first and last (the newest sequence number sent on it).
func (m *seqMap) find(out, last uint16) (seqSegment, bool) {
	if m.n == 0 || int16(out-m.first) < 0 || int16(last-out) < 0 {
		return seqSegment{}, false
	}
	for i := m.n - 1; i >= 0; i-- {
		if sg := m.segs[i]; int16(out-sg.start) >= 0 {
			return sg, true
		}
	}
	return seqSegment{}, false
}

// restartMap starts the mapping anew from the next sequence number, for
// layer, at a resync or switch at now (Unix ns). The mapping it replaces
// stays answerable for switchNACKWindow. The rewrite carries over; a
// switch then changes it.
func (d *DownTrack) restartMap(layer int32, now int64) {
	d.prev.n = 0
	// Not after a switch down: that is the allocator's answer to
	// congestion, and resending what the congested path lost of the old
	// layer would only add to it (the subscriber starts over at the new
	// layer's key frame anyway).
	if d.started && d.m.n > 0 && !(d.m.layer > layer && layer >= 0) {
		d.prev = d.m
		d.prev.last = d.lastOutSeq
	}
	d.m.layer = layer
	d.m.first = d.lastOutSeq + 1
	d.m.segs[0] = seqSegment{start: d.m.first, offset: d.seqOffset}
	d.m.n = 1
	prev := int32(-1)
	if d.prev.n > 0 {
		prev = d.prev.layer
	}
	d.prevUntil.Store(now + int64(switchNACKWindow))
	d.nackFrom.Store(uint32(layer+1) | uint32(prev+1)<<8)
}

// nackLayers returns the layers whose readers answer this down-track's
// NACKs at now (Unix ns): the one forwarded since the last switch or
// resync, and for switchNACKWindow after it the one before (-1: none).
// It takes no lock: the subscriber's RTCP reader routes NACKs with it.
func (d *DownTrack) nackLayers(now int64) (cur, prev int32) {
	v := d.nackFrom.Load()
	cur, prev = int32(v&0xff)-1, int32(v>>8)-1
	if prev == cur || now >= d.prevUntil.Load() {
		prev = -1
	}
	return cur, prev
}

// resend sends out, a sequence number this down-track sent, again if it
// came from layer l: media from l's history, rewritten as it was the
// first time, probe padding as the same padding (a receiver's jitter
// buffer takes a padding-only packet as filling its sequence number:
// libwebrtc's packet buffer and NACK module, Pion's sample builder when
// the timestamp is the previous frame's). It returns the bytes written.
// Called by l's reader with mu held.
func (d *DownTrack) resend(l *layer, out uint16) int {
	b := d.binding.Load()
	if b == nil || !d.started {
		return 0
	}
	m, last := &d.m, d.lastOutSeq
	sg, ok := m.find(out, last)
	if !ok && l.lastPacket.Load() < d.prevUntil.Load() {
		m, last = &d.prev, d.prev.last
		sg, ok = m.find(out, last)
	}
	if !ok || m.layer != int32(l.index) {
		return 0
	}
	if out-sg.start < sg.pad {
		// The smallest padding packet does: it only fills the number, and
		// a lost probe most likely means a full path.
		n, err := d.writePadding(b, out, sg.ts, 1)
		if err != nil {
			return 0
		}
		return n
	}
	var p packetView
	if pkt := l.history.get(out - sg.offset); pkt == nil || parseRTP(pkt, &p) != nil {
		return 0
	}
	return d.write(b, &p, out, &m.rw)
}

// probePacket is the size of a probe's padding (the most RTP allows).
const probePadding = 255

// writeProbe sends padding-only packets after the last packet of a frame,
// as many as the probe budget asks (at most 8), taking sequence numbers
// of their own: the media after them shifts by as many. Called with mu
// held.
func (d *DownTrack) writeProbe(b *binding) {
	k := 0
	for ; k < 8 && d.probe.Load() > 0; k++ {
		n, err := d.writePadding(b, d.lastOutSeq+1+uint16(k), d.lastOutTS, probePadding)
		if err != nil {
			break
		}
		d.probe.Add(-int64(n))
		d.probed.Add(uint64(n))
	}
	if k == 0 {
		return
	}
	m := &d.m
	if m.n == maxSegments {
		copy(m.segs[:], m.segs[1:])
		m.n--
		m.first = m.segs[0].start
	}
	d.seqOffset += uint16(k)
	m.segs[m.n] = seqSegment{start: d.lastOutSeq + 1, pad: uint16(k), offset: d.seqOffset, ts: d.lastOutTS}
	m.n++
	d.lastOutSeq += uint16(k)
}

// writePadding sends a padding-only packet of size bytes of padding as
// seq with timestamp ts. Called with mu held.
func (d *DownTrack) writePadding(b *binding, seq uint16, ts uint32, size uint8) (int, error) {
	h := &d.hdr
	h.Version = 2
	h.Padding = true
	h.PaddingSize = size
	h.Marker = false
	h.PayloadType = b.pt
	h.SequenceNumber = seq
	h.Timestamp = ts
	h.SSRC = b.ssrc
	h.CSRC = nil
	h.Extension = false
	h.ExtensionProfile = 0
	h.Extensions = h.Extensions[:0]
	return b.writer.WriteRTP(h, nil)
}

// write sends p as seq, rewritten by rw. Called with mu held.
func (d *DownTrack) write(b *binding, p *packetView, seq uint16, rw *rewrite) int {
	h := &d.hdr
	h.Version = 2
	h.Padding = p.paddingSize > 0
	h.PaddingSize = p.paddingSize
	h.Marker = p.marker
	h.PayloadType = b.pt
	h.SequenceNumber = seq
	h.Timestamp = p.timestamp + rw.tsOffset
	h.SSRC = b.ssrc
	h.CSRC = nil
	h.Extension = false
	h.ExtensionProfile = 0
	h.Extensions = h.Extensions[:0]
	for i := 0; i < p.nExts; i++ {
		e := p.exts[i]
		if id := b.extMap[e.id]; id != 0 {
			_ = h.SetExtension(id, p.buf[e.off:e.off+e.len])
		}
	}
	payload := p.payload()
	if d.rewriteVP8 {
		payload = d.rewriteVP8Payload(payload, rw)
	}
	n, err := b.writer.WriteRTP(h, payload)
	if err != nil {
		return 0
	}
	d.packets.Add(1)
	d.bytes.Add(uint64(n))
	return n
}

// rewriteVP8Payload returns pl with its picture id (always written as 15
// bits) and TL0PICIDX continuing this down-track's sequence, in the
// scratch buffer; pl itself when there is nothing to rewrite. rw is how
// the run pl belongs to is rewritten.
func (d *DownTrack) rewriteVP8Payload(pl []byte, rw *rewrite) []byte {
	var desc vp8Descriptor
	if !parseVP8(pl, &desc) || (desc.picIDLen == 0 && desc.tl0Off == 0) || len(pl)+1 > cap(d.scratch) {
		return pl
	}
	out := append(d.scratch[:0], pl[0], pl[1])
	rest := 2
	if desc.picIDLen > 0 {
		in, mod := vp8PictureID(pl, &desc)
		if !rw.picStarted {
			rw.picIn, rw.picStarted = in, true
		}
		delta := ((in-rw.picIn)%mod + mod) % mod
		if delta >= mod/2 {
			delta -= mod // an older picture (reordered, retransmitted)
		}
		o := rw.picOut + delta
		if delta > 0 {
			rw.picIn, rw.picOut = in, o
		}
		o &= 0x7fff
		out = append(out, 0x80|byte(o>>8), byte(o))
		rest = desc.picIDOff + desc.picIDLen
	}
	if desc.tl0Off > 0 {
		in := pl[desc.tl0Off]
		if !rw.tl0Started {
			rw.tl0In, rw.tl0Started = in, true
		}
		delta := int8(in - rw.tl0In)
		o := rw.tl0Out + uint8(delta)
		if delta > 0 {
			rw.tl0In, rw.tl0Out = in, o
		}
		out = append(out, o)
		rest = desc.tl0Off + 1
	}
	return append(out, pl[rest:]...)
}
