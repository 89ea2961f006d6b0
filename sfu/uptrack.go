package sfu

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// keyframeInterval is the shortest time between two keyframe requests
// that the SFU sends to one publisher for one track.
const keyframeInterval = 500 * time.Millisecond

// nackQueueLen bounds the NACK requests waiting for a track's reader.
const nackQueueLen = 64

// historySize is the number of packets kept per track for retransmission
// (a power of two, so it divides the sequence number space). About 1.7 s
// of 2.5 Mbit/s video.
const historySize = 512

// rtpSource is where an UpTrack reads packets from (a *webrtc.TrackRemote
// in production, a fake in benchmarks).
type rtpSource interface {
	Read(b []byte) (int, error)
}

// rtcpWriter sends RTCP to the publisher.
type rtcpWriter interface {
	WriteRTCP(pkts []rtcp.Packet) error
}

// TrackInfo is what the rest of the server knows about a published track.
type TrackInfo struct {
	SID         string // server track id
	CID         string // the publisher's id for it (msid track id)
	Participant string // publisher's participant SID
	Identity    string
	Kind        webrtc.RTPCodecType
	Source      string
	Codec       webrtc.RTPCodecParameters
}

// Simulcast layers, lowest first, by the rid browsers and bots send.
const (
	LayerLow    = 0 // rid "q": a quarter of the size
	LayerMedium = 1 // rid "h": half
	LayerHigh   = 2 // rid "f": full
	maxLayers   = 3
)

// LayerNames are the rids of the layers, by index.
var LayerNames = [maxLayers]string{"q", "h", "f"}

// LayerByName returns the index of rid q, h or f, or -1.
func LayerByName(rid string) int {
	for i, n := range LayerNames {
		if n == rid {
			return i
		}
	}
	return -1
}

// nackRequest asks a layer's reader to resend packets to one down-track.
// Sequence numbers are the down-track's (rewritten) ones; the reader
// resends those that came from its layer.
type nackRequest struct {
	down *DownTrack
	n    int
	seqs [16]uint16
}

// UpTrack is one published track: one reader goroutine per layer (one for
// a track without simulcast, up to three with) reads every RTP packet into
// that layer's history and hands it to each subscriber's down-track, which
// forwards the packets of the one layer it receives. The subscriber list is
// a copy-on-write slice behind an atomic pointer, so the per-packet fan-out
// takes no lock and allocates nothing.
type UpTrack struct {
	info      TrackInfo
	simulcast bool
	rtcp      rtcpWriter
	// extURIs maps the publisher's header extension ids to URIs, for
	// down-tracks to map them to their own ids.
	extURIs map[uint8]string
	isVP8   bool
	isH264  bool
	isVP9   bool

	layers [maxLayers]atomic.Pointer[layer]

	downs   atomic.Pointer[[]*DownTrack]
	mu      sync.Mutex // serializes changes to downs, layers and retired
	retired bool
	running int // layer readers still running; guarded by mu

	// keyframes, when set, takes keyframe requests to send, so that the
	// packet path never waits on an RTCP write; nil sends them at once.
	keyframes chan<- keyframeRequest

	muted       atomic.Bool
	remb        atomic.Int64  // the latest REMB sent to the publisher, bits/s
	wanted      atomic.Uint32 // the layers last told wanted (packLayers); 0 never
	packetsOut  atomic.Uint64
	bytesOut    atomic.Uint64
	keyRequests atomic.Uint64

	done chan struct{}
}

// layer is one encoding of a track: its own SSRC, source, history and
// reader.
type layer struct {
	up       *UpTrack
	index    int
	ssrc     atomic.Uint32 // Pion may read the layer from a new SSRC (see Peer.onTrack)
	src      rtpSource
	history  *packetHistory
	nacks    chan nackRequest
	wasMuted bool // reader-owned: muted on the previous packet

	lastKeyReq atomic.Int64
	lastPacket atomic.Int64  // arrival of the latest packet, Unix ns
	frameSize  atomic.Uint32 // width<<16 | height of the latest key frame; 0 unknown
	packetsIn  atomic.Uint64
	bytesIn    atomic.Uint64

	// bitrate measurement, reader-owned except rate
	winStart int64
	winBytes uint64
	rate     atomic.Int64 // bits per second over the last window

	uplink uplink // loss and jitter of what the publisher sends
}

// rateWindow is how long a layer's bitrate is measured over.
const rateWindow = int64(500 * time.Millisecond)

func newUpTrack(info TrackInfo, ssrc uint32, src rtpSource, w rtcpWriter, extURIs map[uint8]string) *UpTrack {
	u := newUpTrackGroup(info, false, w, extURIs)
	u.addLayer(0, ssrc, src)
	return u
}

// newUpTrackGroup makes a track without layers yet; addLayer adds them.
func newUpTrackGroup(info TrackInfo, simulcast bool, w rtcpWriter, extURIs map[uint8]string) *UpTrack {
	u := &UpTrack{
		info:      info,
		simulcast: simulcast,
		rtcp:      w,
		extURIs:   extURIs,
		isVP8:     strings.EqualFold(info.Codec.MimeType, "video/VP8"),
		isH264:    strings.EqualFold(info.Codec.MimeType, "video/H264"),
		isVP9:     strings.EqualFold(info.Codec.MimeType, "video/VP9"),
		done:      make(chan struct{}),
	}
	empty := []*DownTrack{}
	u.downs.Store(&empty)
	return u
}

// addLayer registers layer index (0 for a track without simulcast); the
// caller starts its reader with runLayer. It reports false when the layer
// exists already or every reader has ended.
func (u *UpTrack) addLayer(index int, ssrc uint32, src rtpSource) *layer {
	u.mu.Lock()
	defer u.mu.Unlock()
	if index < 0 || index >= maxLayers || u.layers[index].Load() != nil {
		return nil
	}
	select {
	case <-u.done:
		return nil
	default:
	}
	l := &layer{
		up:      u,
		index:   index,
		src:     src,
		history: newPacketHistory(historySize),
		nacks:   make(chan nackRequest, nackQueueLen),
	}
	l.ssrc.Store(ssrc)
	u.layers[index].Store(l)
	u.running++
	return l
}

// Info describes the track.
func (u *UpTrack) Info() TrackInfo { return u.info }

// Simulcast reports whether the track has (or will have) several layers.
func (u *UpTrack) Simulcast() bool { return u.simulcast }

// SetMuted stops (true) or resumes forwarding.
func (u *UpTrack) SetMuted(m bool) {
	if u.muted.Swap(m) && !m && u.info.Kind == webrtc.RTPCodecTypeVideo {
		u.RequestKeyframe()
	}
}

// Muted reports whether forwarding is stopped.
func (u *UpTrack) Muted() bool { return u.muted.Load() }

// Done is closed when every layer's reader has stopped: the publisher is
// gone.
func (u *UpTrack) Done() <-chan struct{} { return u.done }

// Stats returns packet and byte counters: received from the publisher (all
// layers) and sent to subscribers (retransmissions included).
func (u *UpTrack) Stats() (packetsIn, bytesIn, packetsOut, bytesOut uint64) {
	for i := range u.layers {
		if l := u.layers[i].Load(); l != nil {
			packetsIn += l.packetsIn.Load()
			bytesIn += l.bytesIn.Load()
		}
	}
	return packetsIn, bytesIn, u.packetsOut.Load(), u.bytesOut.Load()
}

// LayerActive is how recently a layer must have had a packet to count as
// being sent.
const LayerActive = time.Second

// LayerBitrates returns each layer's received bitrate in bits per second,
// 0 for a layer that does not exist or sent nothing within LayerActive.
func (u *UpTrack) LayerBitrates(now time.Time) [maxLayers]int {
	var out [maxLayers]int
	for i := range u.layers {
		l := u.layers[i].Load()
		if l == nil || now.UnixNano()-l.lastPacket.Load() > int64(LayerActive) {
			continue
		}
		out[i] = int(max(l.rate.Load(), 1))
	}
	return out
}

// FrameSize is a video's width and height in pixels.
type FrameSize struct{ Width, Height int }

// LayerSizes returns each layer's size from its latest key frame; zero
// when unknown (no key frame seen yet, or a codec whose size is not read:
// VP8's, H.264's and VP9's are).
func (u *UpTrack) LayerSizes() [maxLayers]FrameSize {
	var out [maxLayers]FrameSize
	for i := range u.layers {
		if l := u.layers[i].Load(); l != nil {
			v := l.frameSize.Load()
			out[i] = FrameSize{Width: int(v >> 16), Height: int(v & 0xffff)}
		}
	}
	return out
}

// LayerSSRCs returns the publisher's SSRC of each layer (0 when absent).
func (u *UpTrack) LayerSSRCs() [maxLayers]uint32 {
	var out [maxLayers]uint32
	for i := range u.layers {
		if l := u.layers[i].Load(); l != nil {
			out[i] = l.ssrc.Load()
		}
	}
	return out
}

// Retire marks the track as unpublished: from now on it takes no new
// subscribers, so a subscription racing with the unpublish cannot
// resurrect it. Existing ones are removed by their peers.
func (u *UpTrack) Retire() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.retired = true
}

// addDown adds a subscriber; it reports false for a retired track.
func (u *UpTrack) addDown(d *DownTrack) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.retired {
		return false
	}
	old := *u.downs.Load()
	next := make([]*DownTrack, 0, len(old)+1)
	next = append(next, old...)
	next = append(next, d)
	u.downs.Store(&next)
	return true
}

// removeDown removes a subscriber; it reports whether it was there.
func (u *UpTrack) removeDown(d *DownTrack) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := *u.downs.Load()
	next := make([]*DownTrack, 0, len(old))
	for _, x := range old {
		if x != d {
			next = append(next, x)
		}
	}
	u.downs.Store(&next)
	return len(next) != len(old)
}

// Subscribers returns the number of down-tracks.
func (u *UpTrack) Subscribers() int { return len(*u.downs.Load()) }

// SubscribersOnLayer counts the down-tracks that receive or are switching
// to each layer.
func (u *UpTrack) SubscribersOnLayer() [maxLayers]int {
	var out [maxLayers]int
	for _, d := range *u.downs.Load() {
		if t := d.target.Load(); t >= 0 && t < maxLayers {
			out[t]++
		}
	}
	return out
}

// RequestKeyframe asks the publisher for a keyframe on every layer, at
// most once per keyframeInterval per layer.
func (u *UpTrack) RequestKeyframe() {
	for i := range u.layers {
		u.RequestLayerKeyframe(i)
	}
}

// RequestLayerKeyframe asks for a keyframe on one layer, at most once per
// keyframeInterval; extra requests are dropped.
func (u *UpTrack) RequestLayerKeyframe(index int) {
	if index < 0 || index >= maxLayers {
		return
	}
	if l := u.layers[index].Load(); l != nil {
		l.requestKeyframe(time.Now().UnixNano())
	}
}

func (l *layer) requestKeyframe(now int64) {
	u := l.up
	if u.info.Kind != webrtc.RTPCodecTypeVideo || u.rtcp == nil {
		return
	}
	last := l.lastKeyReq.Load()
	if now-last < int64(keyframeInterval) || !l.lastKeyReq.CompareAndSwap(last, now) {
		return
	}
	u.keyRequests.Add(1)
	if u.keyframes == nil {
		l.sendPLI()
		return
	}
	select {
	case u.keyframes <- keyframeRequest{l}:
	default:
		l.lastKeyReq.Store(last) // full: let the next packet ask again
	}
}

// keyframeRequest is a PLI to send for a layer.
type keyframeRequest struct{ l *layer }

// sendPLI asks the publisher for a keyframe of the layer.
func (l *layer) sendPLI() {
	_ = l.up.rtcp.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: l.ssrc.Load()}})
}

// REMB returns the bitrate the publisher was last capped at with REMB
// (bits/s), 0 if never.
func (u *UpTrack) REMB() int64 { return u.remb.Load() }

// KeyframeRequests returns how many PLIs were sent to the publisher.
func (u *UpTrack) KeyframeRequests() uint64 { return u.keyRequests.Load() }

// mediaSSRC returns the SSRC of the first layer present.
func (u *UpTrack) mediaSSRC() uint32 {
	for i := range u.layers {
		if l := u.layers[i].Load(); l != nil {
			return l.ssrc.Load()
		}
	}
	return 0
}

// layer returns layer i or nil.
func (u *UpTrack) layer(i int32) *layer {
	if i < 0 || i >= maxLayers {
		return nil
	}
	return u.layers[i].Load()
}

// queueNACK hands a NACK to the reader; it never blocks: when the queue
// is full the request is dropped (the receiver will ask again).
func (l *layer) queueNACK(r nackRequest) {
	select {
	case l.nacks <- r:
	default:
	}
}

// run is the layer's reader loop: read, store, fan out, serve NACKs. It
// returns when the source ends; the last layer to end closes the track's
// Done channel.
func (l *layer) run() {
	defer func() {
		u := l.up
		u.mu.Lock()
		u.running--
		last := u.running == 0
		u.mu.Unlock()
		if last {
			close(u.done)
		}
	}()
	var p packetView
	for {
		buf := l.history.buffer()
		n, err := l.src.Read(buf)
		if err != nil {
			if isClosedErr(err) {
				return
			}
			continue // a malformed packet: skip it
		}
		if parseRTP(buf[:n], &p) != nil {
			continue
		}
		l.receive(&p, n, time.Now().UnixNano())
	}
}

// receive stores, measures and forwards one packet that arrived at now
// (Unix ns), then serves queued NACKs. Reader goroutine only.
func (l *layer) receive(p *packetView, n int, now int64) {
	p.arrival = now
	l.history.commit(p.seq, n)
	l.packetsIn.Add(1)
	l.bytesIn.Add(uint64(n))
	l.lastPacket.Store(now)
	l.uplink.update(p, n, now, l.up.info.Codec.ClockRate)
	l.winBytes += uint64(n)
	if el := now - l.winStart; el >= rateWindow {
		if l.winStart != 0 {
			// Smoothed over about 1.5 s, so that a keyframe does not
			// look like a new rate.
			sample := int64(l.winBytes * 8 * uint64(time.Second) / uint64(el))
			if old := l.rate.Load(); old > 0 && el < 4*rateWindow {
				sample = (7*old + 3*sample) / 10
			}
			l.rate.Store(sample)
		}
		l.winStart, l.winBytes = now, 0
	}
	l.noteFrameSize(p)
	l.forward(p)
	l.serveNACKs()
}

// noteFrameSize records the size a key frame declares (VP8: its frame
// header; H.264: the sequence parameter set sent with it; VP9: the
// scalability structure of its payload descriptor), which tells
// subscribers that ask for a video size which layer fits it. Browsers
// change a layer's resolution (CPU or bandwidth adaptation) only at a key
// frame. Other packets cost a look at their first bytes.
func (l *layer) noteFrameSize(p *packetView) {
	pl := p.payload()
	var w, h int
	ok := false
	switch {
	case l.up.isVP8:
		var desc vp8Descriptor
		if len(pl) > 0 && pl[0]&0x10 != 0 && parseVP8(pl, &desc) && desc.keyframe {
			w, h, ok = vp8FrameSize(pl, &desc)
		}
	case l.up.isH264:
		w, h, ok = h264FrameSize(pl)
	case l.up.isVP9:
		w, h, ok = vp9FrameSize(pl)
	}
	if ok {
		l.frameSize.Store(uint32(w)<<16 | uint32(h))
	}
}

// forward sends p to every down-track that receives this layer.
func (l *layer) forward(p *packetView) {
	u := l.up
	downs := *u.downs.Load()
	if u.muted.Load() {
		if !l.wasMuted {
			l.wasMuted = true
			for _, d := range downs {
				d.needResync.Store(true)
			}
		}
		return
	}
	l.wasMuted = false
	var pkts, bytes uint64
	for _, d := range downs {
		if n := d.writePacket(l, p); n > 0 {
			pkts++
			bytes += uint64(n)
		}
	}
	if pkts > 0 {
		u.packetsOut.Add(pkts)
		u.bytesOut.Add(bytes)
	}
}

// serveNACKs answers queued NACKs from the history without blocking.
func (l *layer) serveNACKs() {
	for {
		select {
		case r := <-l.nacks:
			l.retransmit(&r)
		default:
			return
		}
	}
}

// retransmit answers r with the packets that came from this layer (the
// down-track's current one, or the one before a recent switch).
func (l *layer) retransmit(r *nackRequest) {
	var pkts, bytes uint64
	d := r.down
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, out := range r.seqs[:r.n] {
		if n := d.resend(l, out); n > 0 {
			pkts++
			bytes += uint64(n)
		}
	}
	l.up.packetsOut.Add(pkts)
	l.up.bytesOut.Add(bytes)
}

// remoteSource adapts a TrackRemote to rtpSource.
type remoteSource struct{ t *webrtc.TrackRemote }

func (s remoteSource) Read(b []byte) (int, error) {
	n, _, err := s.t.Read(b)
	return n, err
}
