package sfu

import (
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

// nackRequest asks a track's reader to resend packets to one down-track.
// Sequence numbers are the down-track's (rewritten) ones.
type nackRequest struct {
	down *DownTrack
	n    int
	seqs [16]uint16
}

// UpTrack is one published track: one reader goroutine reads every RTP
// packet into the shared history and hands it to each subscriber's
// down-track. The subscriber list is a copy-on-write slice behind an
// atomic pointer, so the per-packet fan-out takes no lock and allocates
// nothing.
type UpTrack struct {
	info    TrackInfo
	ssrc    uint32 // the publisher's media SSRC, for PLIs
	src     rtpSource
	rtcp    rtcpWriter
	history *packetHistory
	// extIDs maps the publisher's header extension ids to URIs, for
	// down-tracks to map them to their own ids.
	extURIs map[uint8]string

	downs   atomic.Pointer[[]*DownTrack]
	mu      sync.Mutex // serializes changes to downs and retired
	retired bool

	muted       atomic.Bool
	wasMuted    bool // reader-owned: muted on the previous packet
	lastKeyReq  atomic.Int64
	nacks       chan nackRequest
	packetsIn   atomic.Uint64
	bytesIn     atomic.Uint64
	packetsOut  atomic.Uint64
	bytesOut    atomic.Uint64
	keyRequests atomic.Uint64

	done chan struct{}
}

func newUpTrack(info TrackInfo, ssrc uint32, src rtpSource, w rtcpWriter, extURIs map[uint8]string) *UpTrack {
	u := &UpTrack{
		info:    info,
		ssrc:    ssrc,
		src:     src,
		rtcp:    w,
		history: newPacketHistory(historySize),
		extURIs: extURIs,
		nacks:   make(chan nackRequest, nackQueueLen),
		done:    make(chan struct{}),
	}
	empty := []*DownTrack{}
	u.downs.Store(&empty)
	return u
}

// Info describes the track.
func (u *UpTrack) Info() TrackInfo { return u.info }

// SetMuted stops (true) or resumes forwarding.
func (u *UpTrack) SetMuted(m bool) {
	if u.muted.Swap(m) && !m && u.info.Kind == webrtc.RTPCodecTypeVideo {
		u.RequestKeyframe()
	}
}

// Muted reports whether forwarding is stopped.
func (u *UpTrack) Muted() bool { return u.muted.Load() }

// Done is closed when the reader has stopped: the publisher is gone.
func (u *UpTrack) Done() <-chan struct{} { return u.done }

// Stats returns packet and byte counters: received from the publisher and
// sent to subscribers (retransmissions included).
func (u *UpTrack) Stats() (packetsIn, bytesIn, packetsOut, bytesOut uint64) {
	return u.packetsIn.Load(), u.bytesIn.Load(), u.packetsOut.Load(), u.bytesOut.Load()
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

// RequestKeyframe asks the publisher for a keyframe, at most once per
// keyframeInterval; extra requests are dropped.
func (u *UpTrack) RequestKeyframe() {
	if u.info.Kind != webrtc.RTPCodecTypeVideo || u.rtcp == nil {
		return
	}
	now := time.Now().UnixNano()
	last := u.lastKeyReq.Load()
	if now-last < int64(keyframeInterval) || !u.lastKeyReq.CompareAndSwap(last, now) {
		return
	}
	u.keyRequests.Add(1)
	ssrc := u.mediaSSRC()
	_ = u.rtcp.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
}

// KeyframeRequests returns how many PLIs were sent to the publisher.
func (u *UpTrack) KeyframeRequests() uint64 { return u.keyRequests.Load() }

func (u *UpTrack) mediaSSRC() uint32 { return u.ssrc }

// queueNACK hands a NACK to the reader; it never blocks: when the queue
// is full the request is dropped (the receiver will ask again).
func (u *UpTrack) queueNACK(r nackRequest) {
	select {
	case u.nacks <- r:
	default:
	}
}

// run is the reader loop: read, store, fan out, serve NACKs. It returns
// when the source ends.
func (u *UpTrack) run() {
	defer close(u.done)
	var p packetView
	for {
		buf := u.history.buffer()
		n, err := u.src.Read(buf)
		if err != nil {
			if isClosedErr(err) {
				return
			}
			continue // a malformed packet: skip it
		}
		if parseRTP(buf[:n], &p) != nil {
			continue
		}
		u.history.commit(p.seq, n)
		u.packetsIn.Add(1)
		u.bytesIn.Add(uint64(n))
		u.forward(&p)
		u.serveNACKs()
	}
}

// forward sends p to every down-track.
func (u *UpTrack) forward(p *packetView) {
	downs := *u.downs.Load()
	if u.muted.Load() {
		if !u.wasMuted {
			u.wasMuted = true
			for _, d := range downs {
				d.needResync = true
			}
		}
		return
	}
	u.wasMuted = false
	var pkts, bytes uint64
	for _, d := range downs {
		if n := d.writePacket(p); n > 0 {
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
func (u *UpTrack) serveNACKs() {
	for {
		select {
		case r := <-u.nacks:
			u.retransmit(&r)
		default:
			return
		}
	}
}

func (u *UpTrack) retransmit(r *nackRequest) {
	var p packetView
	var pkts, bytes uint64
	for _, outSeq := range r.seqs[:r.n] {
		inSeq, ok := r.down.sourceSeq(outSeq)
		if !ok {
			continue
		}
		b := u.history.get(inSeq)
		if b == nil || parseRTP(b, &p) != nil {
			continue
		}
		if n := r.down.writeRetransmission(&p); n > 0 {
			pkts++
			bytes += uint64(n)
		}
	}
	u.packetsOut.Add(pkts)
	u.bytesOut.Add(bytes)
}

// remoteSource adapts a TrackRemote to rtpSource.
type remoteSource struct{ t *webrtc.TrackRemote }

func (s remoteSource) Read(b []byte) (int, error) {
	n, _, err := s.t.Read(b)
	return n, err
}
