package sfu

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// simSource makes the three layers of a synthetic VP8 simulcast stream:
// each layer has its own SSRC, sequence, timestamp base, picture ids and
// TL0PICIDX, as a browser sends them.
type simSource struct {
	up    *UpTrack
	seq   [maxLayers]uint16
	ts    [maxLayers]uint32
	pic   [maxLayers]uint16
	tl0   [maxLayers]uint8
	now   int64
	frame int
	tmpl  [maxLayers][]byte
}

type plisBySSRC struct{ ssrcs []uint32 }

func (w *plisBySSRC) WriteRTCP(pkts []rtcp.Packet) error {
	for _, p := range pkts {
		if pli, ok := p.(*rtcp.PictureLossIndication); ok {
			w.ssrcs = append(w.ssrcs, pli.MediaSSRC)
		}
	}
	return nil
}

func newSimSource(t testing.TB) (*simSource, *plisBySSRC) {
	w := &plisBySSRC{}
	info := TrackInfo{SID: "TR_sim", Kind: webrtc.RTPCodecTypeVideo,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}}}
	up := newUpTrackGroup(info, true, w, map[uint8]string{3: URIAbsCaptureTime})
	s := &simSource{up: up, now: time.Now().UnixNano()}
	for i := range maxLayers {
		if up.addLayer(i, uint32(100+i), nil) == nil {
			t.Fatal("addLayer")
		}
		s.seq[i] = uint16(1000 * (i + 1) * 7)
		s.ts[i] = uint32(123456789 * (i + 1))
		s.pic[i] = uint16(50 + 300*i) // layer 0 crosses the 7-bit range too
		s.tl0[i] = uint8(250 + i)     // and TL0PICIDX wraps
	}
	return s, w
}

// packet writes one packet of layer li into its history slot and
// returns its length. It allocates nothing: it patches a template.
func (s *simSource) packet(li int, first, last, key bool) int {
	l := s.up.layers[li].Load()
	buf := l.history.buffer()
	n := copy(buf, s.template(li))
	if last {
		buf[1] |= 0x80
	}
	binary.BigEndian.PutUint16(buf[2:], s.seq[li])
	binary.BigEndian.PutUint32(buf[4:], s.ts[li])
	pl := buf[simHeaderLen:n]
	if first {
		pl[0] |= 0x10 // S, partition 0
	}
	pic := s.pic[li] & 0x7fff
	pl[2], pl[3], pl[4] = 0x80|byte(pic>>8), byte(pic), s.tl0[li]
	if key {
		pl[5] = 0x00
	}
	s.seq[li]++
	return n
}

// simHeaderLen is the RTP header of template packets: 12 bytes and one
// 8-byte extension (4 bytes of extension header, 12 of elements).
const simHeaderLen = 28

func (s *simSource) template(li int) []byte {
	if s.tmpl[li] != nil {
		return s.tmpl[li]
	}
	h := rtp.Header{Version: 2, PayloadType: 96, SSRC: uint32(100 + li)}
	_ = h.SetExtension(3, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	pl := []byte{0x80, 0xc0, 0x80, 0, 0, 0x01} // X; I, L; picture id; TL0PICIDX; inter frame
	for len(pl) < 900 {
		pl = append(pl, 0xaa)
	}
	pl = append(pl, byte(li)) // the layer, for the test to see
	b, err := (&rtp.Packet{Header: h, Payload: pl}).Marshal()
	if err != nil || len(b) != simHeaderLen+len(pl) {
		panic(fmt.Sprintf("template: %v, %d bytes", err, len(b)))
	}
	s.tmpl[li] = b
	return b
}

// sendFrame sends one frame on every layer (3 packets each), keyframes on
// the layers in keys.
func (s *simSource) sendFrame(keys ...int) {
	s.now += int64(33 * time.Millisecond)
	for li := range maxLayers {
		key := false
		for _, k := range keys {
			key = key || k == li
		}
		l := s.up.layers[li].Load()
		for k := range 3 {
			n := s.packet(li, k == 0, k == 2, key)
			var p packetView
			if err := parseRTP(l.history.buffer()[:n], &p); err != nil {
				panic(err)
			}
			l.receive(&p, n, s.now)
		}
		s.ts[li] += 3000
		s.pic[li]++
		s.tl0[li]++
	}
	s.frame++
}

// recorder keeps what a subscriber received.
type recorder struct {
	seqs   []uint16
	tss    []uint32
	pics   []int
	tl0s   []uint8
	layers []int
	starts []bool
	// padding lists the sequence numbers of probe padding; all every
	// sequence number in order.
	padding []uint16
	all     []uint16
}

func (r *recorder) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	if len(payload) == 0 && h.Padding {
		r.padding = append(r.padding, h.SequenceNumber)
		r.all = append(r.all, h.SequenceNumber)
		return h.MarshalSize() + int(h.PaddingSize), nil
	}
	r.all = append(r.all, h.SequenceNumber)
	var d vp8Descriptor
	if !parseVP8(payload, &d) || d.picIDLen != 2 || d.tl0Off == 0 {
		return 0, fmt.Errorf("bad descriptor %x", payload[:6])
	}
	pic, _ := vp8PictureID(payload, &d)
	r.seqs = append(r.seqs, h.SequenceNumber)
	r.tss = append(r.tss, h.Timestamp)
	r.pics = append(r.pics, pic)
	r.tl0s = append(r.tl0s, payload[d.tl0Off])
	r.layers = append(r.layers, int(payload[len(payload)-1]))
	r.starts = append(r.starts, d.start)
	return h.MarshalSize() + len(payload), nil
}

func simDown(up *UpTrack, w rtpWriter) *DownTrack {
	d := NewDownTrack(up)
	b := &binding{ssrc: 555, pt: 100, writer: w}
	b.extMap[3] = 1
	d.binding.Store(b)
	up.addDown(d)
	return d
}

// checkContinuous asserts what a receiver relies on across switches: no
// sequence gap or repeat, timestamps that move forward, picture ids that
// go up by one per frame and TL0PICIDX with them.
func checkContinuous(t *testing.T, r *recorder) {
	t.Helper()
	for i := 1; i < len(r.seqs); i++ {
		if r.seqs[i] != r.seqs[i-1]+1 {
			t.Fatalf("packet %d: sequence %d after %d", i, r.seqs[i], r.seqs[i-1])
		}
		dts := int32(r.tss[i] - r.tss[i-1])
		if r.starts[i] {
			if dts <= 0 || dts > 90000 {
				t.Fatalf("packet %d: a new frame's timestamp moved by %d", i, dts)
			}
			if dp := (r.pics[i] - r.pics[i-1]) & 0x7fff; dp != 1 {
				t.Fatalf("packet %d: picture id %d after %d", i, r.pics[i], r.pics[i-1])
			}
			if r.tl0s[i] != r.tl0s[i-1]+1 {
				t.Fatalf("packet %d: TL0PICIDX %d after %d", i, r.tl0s[i], r.tl0s[i-1])
			}
		} else if dts != 0 || r.pics[i] != r.pics[i-1] {
			t.Fatalf("packet %d: within a frame, timestamp moved by %d, picture id %d → %d", i, dts, r.pics[i-1], r.pics[i])
		}
	}
}

func TestSimulcastSwitchesAtKeyframeSeamlessly(t *testing.T) {
	s, plis := newSimSource(t)
	rec := &recorder{}
	d := simDown(s.up, rec)
	other := &recorder{}
	simDown(s.up, other) // a second subscriber stays on the top layer

	// Nothing is forwarded before a keyframe of the target layer.
	s.sendFrame()
	s.sendFrame()
	if len(rec.seqs) != 0 {
		t.Fatalf("forwarded %d packets before a keyframe", len(rec.seqs))
	}
	if len(plis.ssrcs) == 0 || plis.ssrcs[0] != 102 {
		t.Fatalf("PLIs %v; want one for the top layer (ssrc 102)", plis.ssrcs)
	}
	s.sendFrame(0, 1, 2)
	for range 5 {
		s.sendFrame()
	}
	if d.CurrentLayer() != LayerHigh || len(rec.seqs) != 18 {
		t.Fatalf("on layer %d with %d packets; want layer 2 and 18", d.CurrentLayer(), len(rec.seqs))
	}

	// Down to q: the top layer keeps flowing until q has a keyframe.
	plis.ssrcs = nil
	s.now += int64(time.Second) // past the keyframe request throttle
	d.SetTargetLayer(LayerLow)
	if len(plis.ssrcs) != 1 || plis.ssrcs[0] != 100 {
		t.Fatalf("PLIs %v; want one for the low layer (ssrc 100)", plis.ssrcs)
	}
	s.sendFrame()
	s.sendFrame(2) // a keyframe of another layer does not switch
	if d.CurrentLayer() != LayerHigh {
		t.Fatalf("switched to %d without a keyframe of layer 0", d.CurrentLayer())
	}
	s.sendFrame(0)
	s.sendFrame()
	if d.CurrentLayer() != LayerLow {
		t.Fatalf("on layer %d after a keyframe of layer 0; want 0", d.CurrentLayer())
	}
	// Up to h, then to f again; the 7-bit picture ids of none of the layers matter.
	d.SetTargetLayer(LayerMedium)
	s.sendFrame()
	s.sendFrame(1)
	s.sendFrame()
	d.SetTargetLayer(LayerHigh)
	s.sendFrame(2)
	for range 200 { // long enough for picture ids and TL0PICIDX to wrap
		s.sendFrame()
	}
	checkContinuous(t, rec)
	checkContinuous(t, other)
	var seen []int
	for i, l := range rec.layers {
		if i == 0 || l != rec.layers[i-1] {
			seen = append(seen, l)
			if !rec.starts[i] {
				t.Fatalf("switched to layer %d mid-frame", l)
			}
		}
	}
	if fmt.Sprint(seen) != "[2 0 1 2]" {
		t.Fatalf("layers received in order %v; want [2 0 1 2]", seen)
	}
	if d.Switches() != 3 {
		t.Fatalf("%d switches; want 3", d.Switches())
	}
	for _, l := range other.layers {
		if l != LayerHigh {
			t.Fatal("the other subscriber left the top layer")
		}
	}
}

// TestSimulcastCongestedSwitchDownStopsAtFrameEnd: on a congested path
// the layer being left stops after its frame instead of flooding the
// path until the lower layer's keyframe; the picture holds, and what is
// sent stays continuous.
func TestSimulcastCongestedSwitchDownStopsAtFrameEnd(t *testing.T) {
	s, plis := newSimSource(t)
	rec := &recorder{}
	d := simDown(s.up, rec)
	s.sendFrame(0, 1, 2)
	s.sendFrame()
	if d.CurrentLayer() != LayerHigh || len(rec.seqs) != 6 {
		t.Fatalf("on layer %d with %d packets; want 2 and 6", d.CurrentLayer(), len(rec.seqs))
	}
	plis.ssrcs = nil
	d.SetTargetLayerNow(LayerLow)
	if len(plis.ssrcs) != 1 || plis.ssrcs[0] != 100 {
		t.Fatalf("PLIs %v; want one for the low layer (ssrc 100)", plis.ssrcs)
	}
	d.SetTargetLayer(LayerLow) // the next allocation, not congested, keeps it
	s.sendFrame()
	s.sendFrame()
	if len(rec.seqs) != 6 || d.CurrentLayer() != -1 {
		t.Fatalf("%d packets on layer %d while waiting for layer 0's keyframe; want the 6 before and none", len(rec.seqs), d.CurrentLayer())
	}
	s.sendFrame(0)
	s.sendFrame()
	if len(rec.seqs) != 12 || d.CurrentLayer() != LayerLow {
		t.Fatalf("%d packets on layer %d after layer 0's keyframe; want 12 on 0", len(rec.seqs), d.CurrentLayer())
	}
	checkContinuous(t, rec)
	if d.Switches() != 1 {
		t.Fatalf("%d switches; want 1", d.Switches())
	}

	// Not congested, a switch down keeps the current layer until the
	// keyframe; a switch up always does.
	d.SetTargetLayerNow(LayerMedium)
	s.sendFrame()
	if d.CurrentLayer() != LayerLow || len(rec.seqs) != 15 {
		t.Fatalf("on layer %d with %d packets after asking for a higher one; want 0 and 15", d.CurrentLayer(), len(rec.seqs))
	}
	s.sendFrame(1)
	d.SetTargetLayer(LayerLow)
	s.sendFrame()
	if d.CurrentLayer() != LayerMedium || len(rec.seqs) != 24 {
		t.Fatalf("on layer %d with %d packets; want layer 1 kept until 0's keyframe, 24", d.CurrentLayer(), len(rec.seqs))
	}
	checkContinuous(t, rec)
}

func TestSimulcastPauseResumesAtKeyframeWithoutGap(t *testing.T) {
	s, _ := newSimSource(t)
	rec := &recorder{}
	d := simDown(s.up, rec)
	d.SetTargetLayer(LayerMedium)
	s.sendFrame(1)
	s.sendFrame()
	d.SetPaused(true)
	s.sendFrame(1)
	s.sendFrame()
	d.SetPaused(false)
	s.sendFrame() // no keyframe yet: nothing
	n := len(rec.seqs)
	s.sendFrame(1)
	s.sendFrame()
	if n != 6 || len(rec.seqs) != 12 {
		t.Fatalf("forwarded %d then %d packets; want 6 then 12", n, len(rec.seqs))
	}
	checkContinuous(t, rec)
}

func TestSimulcastNACKMapsToCurrentLayer(t *testing.T) {
	s, _ := newSimSource(t)
	rec := &recorder{}
	d := simDown(s.up, rec)
	d.SetTargetLayer(LayerLow)
	s.sendFrame(0)
	s.sendFrame()
	first := rec.seqs[0]
	r := nackRequest{down: d, n: 2}
	r.seqs[0], r.seqs[1] = first+1, first+4
	s.up.layers[LayerHigh].Load().retransmit(&r) // the wrong layer: nothing
	if len(rec.seqs) != 6 {
		t.Fatalf("a layer the subscriber does not receive retransmitted")
	}
	s.up.layers[LayerLow].Load().retransmit(&r)
	if got := rec.seqs[6:]; len(got) != 2 || got[0] != first+1 || got[1] != first+4 {
		t.Fatalf("retransmitted %v; want [%d %d]", got, first+1, first+4)
	}
	if rec.layers[6] != LayerLow || rec.pics[6] != rec.pics[0] || rec.pics[7] != rec.pics[3] {
		t.Fatalf("retransmission rewritten wrongly: layer %d pics %v", rec.layers[6], rec.pics)
	}
}

func TestVP8KeyframeDetection(t *testing.T) {
	var d vp8Descriptor
	for _, c := range []struct {
		b         []byte
		key, ok   bool
		picLen    int
		tl0Offset int
	}{
		{[]byte{0x10, 0x00}, true, true, 0, 0},             // no X, start, key
		{[]byte{0x10, 0x01}, false, true, 0, 0},            // inter
		{[]byte{0x00, 0x00}, false, true, 0, 0},            // not the start
		{[]byte{0x90, 0x80, 0x12, 0x00}, true, true, 1, 0}, // 7-bit picture id
		{[]byte{0x90, 0xc0, 0x81, 0x02, 0x07, 0x00}, true, true, 2, 4},
		{[]byte{0x90, 0xc0, 0x81}, false, false, 0, 0}, // truncated
		{[]byte{}, false, false, 0, 0},
	} {
		ok := parseVP8(c.b, &d)
		if ok != c.ok || d.keyframe != c.key || (ok && (d.picIDLen != c.picLen || d.tl0Off != c.tl0Offset)) {
			t.Errorf("%x: ok %v key %v pic %d tl0 %d", c.b, ok, d.keyframe, d.picIDLen, d.tl0Off)
		}
	}
	if !isH264Keyframe([]byte{0x65}) || isH264Keyframe([]byte{0x41}) || !isH264Keyframe([]byte{0x78, 0, 2, 0x67, 0}) {
		t.Error("H.264 keyframe detection")
	}
}

func FuzzParseVP8(f *testing.F) {
	f.Add([]byte{0x90, 0xc0, 0x81, 0x02, 0x07, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d vp8Descriptor
		if parseVP8(b, &d) && d.picIDLen > 0 {
			_, _ = vp8PictureID(b, &d)
		}
		_ = isH264Keyframe(b)
		dt := &DownTrack{scratch: make([]byte, 0, maxPacketSize+2)}
		if len(b) < maxPacketSize {
			_ = dt.rewriteVP8Payload(b, &dt.m.rw)
		}
	})
}

// simFanout makes a simulcast track with subs subscribers spread over the
// three layers, all started.
func simFanout(t testing.TB, subs int) *simSource {
	s, _ := newSimSource(t)
	for i := range subs {
		d := simDown(s.up, &countingWriter{})
		d.SetTargetLayer(i % maxLayers)
	}
	s.sendFrame(0, 1, 2)
	return s
}

// TestSimulcastFanoutAllocatesNothing covers receive → select → rewrite
// (sequence, timestamp, picture id, TL0PICIDX) → write for every layer.
func TestSimulcastFanoutAllocatesNothing(t *testing.T) {
	s := simFanout(t, 9)
	li := 0
	allocs := testing.AllocsPerRun(1000, func() {
		n := s.packet(li, true, true, false)
		l := s.up.layers[li].Load()
		var p packetView
		_ = parseRTP(l.history.buffer()[:n], &p)
		l.receive(&p, n, s.now)
		li = (li + 1) % maxLayers
	})
	if allocs != 0 {
		t.Fatalf("simulcast fan-out allocates %.1f times per packet; want 0", allocs)
	}
}

// BenchmarkSimulcastFanout measures one packet of one layer (the layers in
// turn) through receive, layer selection, rewriting and writing, with
// subscribers spread evenly over the three layers.
func BenchmarkSimulcastFanout(b *testing.B) {
	for _, subs := range []int{3, 30, 150} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			s := simFanout(b, subs)
			var p packetView
			li := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				n := s.packet(li, i%3 == 0, i%3 == 2, false)
				l := s.up.layers[li].Load()
				if parseRTP(l.history.buffer()[:n], &p) != nil {
					b.Fatal("parse")
				}
				l.receive(&p, n, time.Now().UnixNano())
				li = (li + 1) % maxLayers
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs/maxLayers), "ns/forwarded")
		})
	}
}

func TestProbePaddingKeepsSequenceAndNACKs(t *testing.T) {
	s, _ := newSimSource(t)
	rec := &recorder{}
	d := simDown(s.up, rec)
	d.SetTargetLayer(LayerLow)
	s.sendFrame(0)
	d.Probe(3 * (12 + probePadding)) // three padding packets
	s.sendFrame()
	d.Probe(0)
	s.sendFrame()
	if len(rec.padding) != 3 {
		t.Fatalf("sent %d padding packets; want 3", len(rec.padding))
	}
	for i := 1; i < len(rec.all); i++ {
		if rec.all[i] != rec.all[i-1]+1 {
			t.Fatalf("gap at %d: %d → %d (padding %v)", i, rec.all[i-1], rec.all[i], rec.padding)
		}
	}
	if rec.padding[0] != rec.seqs[5]+1 || rec.seqs[6] != rec.padding[2]+1 {
		t.Fatalf("padding %v not after the second frame %v", rec.padding, rec.seqs)
	}
	// NACKs before, inside and after the padding: all answered.
	r := nackRequest{down: d, n: 3}
	r.seqs[0], r.seqs[1], r.seqs[2] = rec.seqs[1], rec.padding[1], rec.seqs[7]
	n := len(rec.seqs)
	s.up.layers[LayerLow].Load().retransmit(&r)
	got := rec.seqs[n:]
	if len(got) != 2 || got[0] != rec.seqs[1] || got[1] != rec.seqs[7] {
		t.Fatalf("retransmitted %v; want [%d %d]", got, rec.seqs[1], rec.seqs[7])
	}
	if rec.pics[n] != rec.pics[1] || rec.pics[n+1] != rec.pics[7] {
		t.Fatal("a retransmission carried the wrong packet")
	}
	if len(rec.padding) != 4 || rec.padding[3] != rec.padding[1] {
		t.Fatalf("padding sent %v; want %d resent as padding", rec.padding, rec.padding[1])
	}
}

func TestLayerForSize(t *testing.T) {
	all := [maxLayers]FrameSize{{320, 180}, {640, 360}, {1280, 720}}
	onlyTop := [maxLayers]FrameSize{2: {1280, 720}}
	onlyLow := [maxLayers]FrameSize{0: {320, 180}}
	for _, c := range []struct {
		sizes [maxLayers]FrameSize
		w, h  int
		want  int
	}{
		{all, 320, 180, LayerLow},
		{all, 300, 210, LayerMedium}, // 180 < 0.9 * 210
		{all, 600, 340, LayerMedium},
		{all, 660, 370, LayerMedium}, // within the slack
		{all, 800, 450, LayerHigh},
		{all, 3840, 2160, LayerHigh}, // nothing covers it: the top
		{all, 320, 0, LayerLow},
		{onlyTop, 320, 180, LayerLow}, // q inferred as a quarter of f
		{onlyTop, 640, 360, LayerMedium},
		{onlyLow, 640, 360, LayerMedium}, // h inferred as twice q
		{[maxLayers]FrameSize{}, 320, 180, LayerHigh},
	} {
		if got := layerForSize(c.sizes, c.w, c.h); got != c.want {
			t.Errorf("layerForSize(%v, %dx%d) = %d; want %d", c.sizes, c.w, c.h, got, c.want)
		}
	}
}

func TestVP8FrameSizeOfClips(t *testing.T) {
	// The key frames of the bots' clips declare their sizes.
	for name, want := range map[string][2]int{"vp8_180p.ivf": {320, 180}, "vp8_360p.ivf": {640, 360}, "vp8_720p.ivf": {1280, 720}} {
		data, err := os.ReadFile(filepath.Join("..", "signaling", "bots", "media", name))
		if err != nil {
			t.Fatal(err)
		}
		// IVF: 32-byte file header, 12-byte frame header, then the frame;
		// as the first packet's payload: a one-byte descriptor (S=1).
		frame := data[32+12:]
		payload := append([]byte{0x10}, frame[:min(len(frame), 100)]...)
		var desc vp8Descriptor
		if !parseVP8(payload, &desc) || !desc.keyframe {
			t.Fatalf("%s: first frame not parsed as a key frame", name)
		}
		w, h, ok := vp8FrameSize(payload, &desc)
		if !ok || w != want[0] || h != want[1] {
			t.Errorf("%s: %dx%d, %v; want %dx%d", name, w, h, ok, want[0], want[1])
		}
		payload[4] = 0 // a broken start code (after the descriptor and the frame tag)
		if _, _, ok := vp8FrameSize(payload, &desc); ok {
			t.Errorf("%s: size read without the start code", name)
		}
	}
}
