package sfu

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"

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
// webrtc.TrackLocal. It rewrites SSRC, payload type, sequence number,
// timestamp and header extension ids so that pausing and resuming (and,
// later, switching layers) is seamless for the receiver.
//
// Every field below "reader-owned" is touched only by the UpTrack's
// reader goroutine, so the packet path takes no lock.
type DownTrack struct {
	up       *UpTrack
	id       string // the track SID
	streamID string // the publisher's participant SID
	binding  atomic.Pointer[binding]
	paused   atomic.Bool

	packets atomic.Uint64
	bytes   atomic.Uint64
	nacks   atomic.Uint64 // NACKed packets received from the subscriber
	plis    atomic.Uint64 // PLI/FIR received from the subscriber
	rr      reception     // from the subscriber's receiver reports

	// reader-owned
	started      bool
	needResync   bool
	seqOffset    uint16
	tsOffset     uint32
	lastOutSeq   uint16
	resyncOutSeq uint16
	hdr          rtp.Header
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
	d.tsOffset = rand.Uint32()
	// Room for the forwarded extensions and those interceptors add.
	d.hdr.Extensions = make([]rtp.Extension, 0, maxExtensions+4)
	return d
}

// UpTrack returns the published track this copies.
func (d *DownTrack) UpTrack() *UpTrack { return d.up }

// SetPaused stops (true) or resumes forwarding to this subscriber only.
func (d *DownTrack) SetPaused(p bool) {
	if d.paused.Swap(p) && !p {
		d.up.RequestKeyframe()
	}
}

// Stats returns packets and bytes sent, NACKed packets and keyframe
// requests received.
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
	d.up.RequestKeyframe()
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

// writePacket forwards p; it returns the bytes written (0 if skipped).
// Reader goroutine only.
func (d *DownTrack) writePacket(p *packetView) int {
	b := d.binding.Load()
	if b == nil {
		return 0
	}
	if d.paused.Load() {
		d.needResync = true
		return 0
	}
	if !d.started || d.needResync {
		// Continue the outgoing sequence without a gap; the timestamp
		// keeps its offset so that it follows the real clock.
		d.seqOffset = d.lastOutSeq + 1 - p.seq
		d.resyncOutSeq = d.lastOutSeq + 1
		if d.started {
			d.up.RequestKeyframe()
		}
		d.started = true
		d.needResync = false
	}
	out := p.seq + d.seqOffset
	if int16(out-d.resyncOutSeq) < 0 {
		return 0 // older than the last resync: its place was taken
	}
	if int16(out-d.lastOutSeq) > 0 {
		d.lastOutSeq = out
	}
	return d.write(b, p, out)
}

// writeRetransmission resends a packet from the history. Reader goroutine
// only; p.seq has been mapped by sourceSeq.
func (d *DownTrack) writeRetransmission(p *packetView) int {
	b := d.binding.Load()
	if b == nil || !d.started {
		return 0
	}
	return d.write(b, p, p.seq+d.seqOffset)
}

// sourceSeq maps a sequence number this down-track sent back to the
// publisher's, if it was sent since the last resync.
func (d *DownTrack) sourceSeq(out uint16) (uint16, bool) {
	if !d.started || int16(out-d.resyncOutSeq) < 0 || int16(d.lastOutSeq-out) < 0 {
		return 0, false
	}
	return out - d.seqOffset, true
}

func (d *DownTrack) write(b *binding, p *packetView, seq uint16) int {
	h := &d.hdr
	h.Version = 2
	h.Padding = p.paddingSize > 0
	h.PaddingSize = p.paddingSize
	h.Marker = p.marker
	h.PayloadType = b.pt
	h.SequenceNumber = seq
	h.Timestamp = p.timestamp + d.tsOffset
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
	n, err := b.writer.WriteRTP(h, p.payload())
	if err != nil {
		return 0
	}
	d.packets.Add(1)
	d.bytes.Add(uint64(n))
	return n
}
