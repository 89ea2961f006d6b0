package sfu

import (
	"encoding/binary"
	"fmt"
	"io"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// countingWriter stands in for Pion's write stream: it records what it
// was given and copies nothing.
type countingWriter struct {
	packets int
	lastSeq uint16
	lastTS  uint32
	ssrc    uint32
	exts    int
	seqs    []uint16
	keep    bool
}

func (w *countingWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.packets++
	w.lastSeq = h.SequenceNumber
	w.lastTS = h.Timestamp
	w.ssrc = h.SSRC
	w.exts = len(h.Extensions)
	if w.keep {
		w.seqs = append(w.seqs, h.SequenceNumber)
	}
	return h.MarshalSize() + len(payload), nil
}

type nopRTCP struct{ plis int }

func (n *nopRTCP) WriteRTCP(p []rtcp.Packet) error { n.plis += len(p); return nil }

// fakeSource yields the packets of a synthetic stream, then EOF.
type fakeSource struct {
	pkt  []byte
	seq  uint16
	left int
	skip map[uint16]bool // sequence numbers to leave out (upstream loss)
}

func (s *fakeSource) Read(b []byte) (int, error) {
	for {
		if s.left == 0 {
			return 0, io.EOF
		}
		s.left--
		seq := s.seq
		s.seq++
		if s.skip[seq] {
			continue
		}
		n := copy(b, s.pkt)
		binary.BigEndian.PutUint16(b[2:], seq)
		binary.BigEndian.PutUint32(b[4:], uint32(seq)*3000)
		return n, nil
	}
}

func testPacket(t testing.TB) []byte {
	h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1234}
	_ = h.SetExtension(3, []byte{0x80})                   // audio level style, forwarded
	_ = h.SetExtension(5, []byte{1, 2, 3, 4, 5, 6, 7, 8}) // abs-capture-time, forwarded
	_ = h.SetExtension(7, []byte{0, 1})                   // transport-cc, not forwarded
	b, err := (&rtp.Packet{Header: h, Payload: make([]byte, 1100)}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestUp(src rtpSource) (*UpTrack, *nopRTCP) {
	w := &nopRTCP{}
	up := newUpTrack(TrackInfo{SID: "TR_test", Kind: webrtc.RTPCodecTypeVideo}, 1234, src, w,
		map[uint8]string{3: URIAudioLevel, 5: URIAbsCaptureTime, 7: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"})
	return up, w
}

func bindDown(up *UpTrack, ssrc uint32, w rtpWriter) *DownTrack {
	d := NewDownTrack(up)
	b := &binding{ssrc: ssrc, pt: 100, writer: w}
	b.extMap[3] = 1
	b.extMap[5] = 2
	d.binding.Store(b)
	up.addDown(d)
	return d
}

func TestForwardRewritesAndKeepsSequence(t *testing.T) {
	src := &fakeSource{pkt: testPacket(t), seq: 65530, left: 40}
	up, _ := newTestUp(src)
	w1, w2 := &countingWriter{keep: true}, &countingWriter{keep: true}
	bindDown(up, 111, w1)
	bindDown(up, 222, w2)
	// The source wraps its sequence number; the rewritten one must have
	// no gap either.
	done := make(chan struct{})
	go func() { up.l0().run(); close(done) }()
	<-done
	if w1.packets != 40 || w2.packets != 40 {
		t.Fatalf("packets = %d, %d; want 40 each", w1.packets, w2.packets)
	}
	if w1.ssrc != 111 || w2.ssrc != 222 {
		t.Fatalf("ssrc not rewritten: %d %d", w1.ssrc, w2.ssrc)
	}
	if w1.exts != 2 {
		t.Fatalf("forwarded %d extensions; want 2 (transport-cc dropped)", w1.exts)
	}
	for i := 1; i < len(w1.seqs); i++ {
		if w1.seqs[i] != w1.seqs[i-1]+1 {
			t.Fatalf("gap in rewritten sequence at %d: %d → %d", i, w1.seqs[i-1], w1.seqs[i])
		}
	}
}

func TestPauseResumeLeavesNoGap(t *testing.T) {
	src := &fakeSource{pkt: testPacket(t), left: 1 << 30}
	up, rt := newTestUp(src)
	w := &countingWriter{keep: true}
	d := bindDown(up, 111, w)
	var p packetView
	buf := make([]byte, maxPacketSize)
	step := func(n int) {
		for i := 0; i < n; i++ {
			k, _ := src.Read(buf)
			if err := parseRTP(buf[:k], &p); err != nil {
				t.Fatal(err)
			}
			up.l0().forward(&p)
		}
	}
	step(10)
	d.SetPaused(true)
	step(25)
	d.SetPaused(false)
	step(10)
	if len(w.seqs) != 20 {
		t.Fatalf("sent %d packets; want 20", len(w.seqs))
	}
	for i := 1; i < len(w.seqs); i++ {
		if w.seqs[i] != w.seqs[i-1]+1 {
			t.Fatalf("gap across pause at %d: %d → %d", i, w.seqs[i-1], w.seqs[i])
		}
	}
	if rt.plis == 0 {
		t.Fatal("resume did not ask the publisher for a keyframe")
	}
}

func TestNACKServedFromSharedHistory(t *testing.T) {
	src := &fakeSource{pkt: testPacket(t), left: 100}
	up, _ := newTestUp(src)
	w := &countingWriter{keep: true}
	d := bindDown(up, 111, w)
	done := make(chan struct{})
	go func() { up.l0().run(); close(done) }()
	<-done
	first := w.seqs[0]
	r := nackRequest{down: d, n: 3}
	r.seqs[0], r.seqs[1], r.seqs[2] = first+10, first+50, first+500 // the last was never sent
	up.l0().retransmit(&r)
	got := w.seqs[100:]
	if len(got) != 2 || got[0] != first+10 || got[1] != first+50 {
		t.Fatalf("retransmitted %v; want [%d %d]", got, first+10, first+50)
	}
}

func TestParseRTPRejectsGarbage(t *testing.T) {
	var p packetView
	good := testPacket(t)
	for n := 0; n < 40; n++ {
		_ = parseRTP(good[:n], &p) // must not panic on any truncation
	}
	bad := append([]byte(nil), good...)
	bad[0] |= 0x20 // padding bit with a huge pad count
	bad[len(bad)-1] = 255
	if err := parseRTP(bad[:40], &p); err == nil {
		t.Fatal("accepted padding longer than the packet")
	}
}

func FuzzParseRTP(f *testing.F) {
	f.Add(testPacket(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packetView
		if parseRTP(b, &p) == nil {
			_ = p.payload()
			for i := 0; i < p.nExts; i++ {
				_ = p.extensionByID(p.exts[i].id)
			}
		}
	})
}

// BenchmarkFanout measures the per-packet path: parse, store in the shared
// history, and rewrite + write for every subscriber. It must not allocate.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			src := &fakeSource{pkt: testPacket(b), left: 1 << 62}
			up, _ := newTestUp(src)
			for i := 0; i < subs; i++ {
				bindDown(up, uint32(1000+i), &countingWriter{})
			}
			var p packetView
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				buf := up.l0().history.buffer()
				n, _ := src.Read(buf)
				if parseRTP(buf[:n], &p) != nil {
					b.Fatal("parse")
				}
				up.l0().history.commit(p.seq, n)
				up.l0().forward(&p)
				up.l0().serveNACKs()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs), "ns/subscriber")
		})
	}
}

func TestFanoutAllocatesNothing(t *testing.T) {
	src := &fakeSource{pkt: testPacket(t), left: 1 << 30}
	up, _ := newTestUp(src)
	for i := 0; i < 8; i++ {
		bindDown(up, uint32(1000+i), &countingWriter{})
	}
	var p packetView
	allocs := testing.AllocsPerRun(1000, func() {
		buf := up.l0().history.buffer()
		n, _ := src.Read(buf)
		_ = parseRTP(buf[:n], &p)
		up.l0().history.commit(p.seq, n)
		up.l0().forward(&p)
		up.l0().serveNACKs()
	})
	if allocs != 0 {
		t.Fatalf("fan-out allocates %.1f times per packet; want 0", allocs)
	}
}

// l0 is the first layer of a test track.
func (u *UpTrack) l0() *layer { return u.layers[0].Load() }
