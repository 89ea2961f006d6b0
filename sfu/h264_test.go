package sfu

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// spsVectors are sequence parameter sets (NAL header byte included) that
// x264 wrote, with the size ffprobe reports for the stream, made with
//
//	ffmpeg -f lavfi -i testsrc=size=$size:rate=30 -frames:v 1 -c:v libx264 \
//		-pix_fmt yuv420p $args -f h264 out.h264
//
// (ffmpeg 5.1.9 of Debian 12) and cut out of the byte stream at its start
// codes. x264 puts scaling lists in the PPS only: the one with
// seq_scaling_matrix_present_flag is hcustom720's SPS rewritten by a
// script with explicit lists (a present list, an absent one, one that
// ends early with a next value of 0, useDefaultScalingMatrixFlag), which
// ffprobe then read as 1280x720 and ffmpeg decoded the stream with.
var spsVectors = []struct {
	name, args, hex string
	w, h            int
}{
	{"b720", "-profile:v baseline", "6742c01fd9005005bb0110000003001000000303c0f1832480", 1280, 720},
	{"b360", "-profile:v baseline", "6742c01ed900a02ff970110000030001000003003c0f162e48", 640, 360},
	{"m180", "-profile:v main (180 is not a multiple of 16: cropped)", "674d400deca0a0cfcf8088000003000800000301e078a14cb0", 320, 180},
	{"h1080", "-profile:v high (1088 cropped to 1080)", "67640028acd940780227e5c044000003000400000300f03c60c658", 1920, 1080},
	{"i1080", "-profile:v high -x264-params interlaced=1 (field pairs)", "67640028acd94078044fde0220000003002000000783e2c5b2c0", 1920, 1080},
	{"h444odd", "-pix_fmt yuv444p -profile:v high444, size 321x181 (crop units of 1)", "67f4000d919b282a33c211980880000003008000001e078a14cb", 321, 181},
	{"hscal720", "see above", "6764001fad8603604207e13b02103f1c08604007e3811010d080220560801cc2310080221b1f050110d81080a3b280a00b760220000003002000000781e30632c0", 1280, 720},
}

func TestH264SPSSize(t *testing.T) {
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	idr := []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	for _, v := range spsVectors {
		sps, err := hex.DecodeString(v.hex)
		if err != nil {
			t.Fatal(err)
		}
		stapA := []byte{0x78}
		for _, nal := range [][]byte{sps, pps, idr} {
			stapA = append(stapA, byte(len(nal)>>8), byte(len(nal)))
			stapA = append(stapA, nal...)
		}
		fuA := append([]byte{sps[0]&0xe0 | h264FUA, 0x80 | h264SPS}, sps[1:]...)
		for _, c := range []struct {
			packaging string
			payload   []byte
		}{{"single NAL unit", sps}, {"STAP-A", stapA}, {"FU-A start", fuA}} {
			w, h, ok := h264FrameSize(c.payload)
			if !ok || w != v.w || h != v.h {
				t.Errorf("%s in %s: %dx%d, %v; want %dx%d", v.name, c.packaging, w, h, ok, v.w, v.h)
			}
		}
		if !isH264Keyframe(stapA) {
			t.Errorf("%s: STAP-A with SPS and IDR not a key frame", v.name)
		}
		if _, _, ok := h264FrameSize(sps[:8]); ok {
			t.Errorf("%s: size read from a truncated SPS", v.name)
		}
		if n := testing.AllocsPerRun(10, func() { h264FrameSize(stapA) }); n != 0 {
			t.Errorf("%s: %v allocations", v.name, n)
		}
	}
	for _, pl := range [][]byte{idr, pps, {0x7c, 0x05, 0x88}, {0x78, 0x00, 0x04, 0x68}} {
		if w, h, ok := h264FrameSize(pl); ok {
			t.Errorf("%x: read as %dx%d", pl, w, h)
		}
	}
}

// TestH264LayerSizesServeMaxSize checks the path a subscriber's
// max_width/max_height takes with H.264 simulcast: the SPS of each
// layer's key frame sets the layer's size, which picks the layer.
func TestH264LayerSizesServeMaxSize(t *testing.T) {
	info := TrackInfo{SID: "TR_h264", Kind: webrtc.RTPCodecTypeVideo,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}}}
	up := newUpTrackGroup(info, true, &nopRTCP{}, nil)
	for i, v := range []string{"m180", "b360", "b720"} {
		l := up.addLayer(i, uint32(10+i), nil)
		var sps []byte
		for _, x := range spsVectors {
			if x.name == v {
				sps, _ = hex.DecodeString(x.hex)
			}
		}
		b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 102, SSRC: uint32(10 + i)},
			Payload: append([]byte{0x78, 0, byte(len(sps))}, sps...)}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		n := copy(l.history.buffer(), b)
		var p packetView
		if err := parseRTP(l.history.buffer()[:n], &p); err != nil {
			t.Fatal(err)
		}
		l.receive(&p, n, time.Now().UnixNano())
	}
	if got, want := up.LayerSizes(), [maxLayers]FrameSize{{320, 180}, {640, 360}, {1280, 720}}; got != want {
		t.Fatalf("layer sizes %v; want %v", got, want)
	}
	d := NewDownTrack(up)
	d.SetMaxSize(640, 360)
	if l := d.MaxLayer(); l != LayerMedium {
		t.Errorf("a 640x360 subscriber gets layer %d; want %d", l, LayerMedium)
	}
}

func TestVP9FrameSizeFromScalabilityStructure(t *testing.T) {
	for _, c := range []struct {
		name    string
		payload []byte
		w, h    int
		ok      bool
	}{
		// I (15-bit picture id), B, V; SS: N_S 0, Y; 1280x720.
		{"one layer", []byte{0x8a, 0x80, 0x05, 0x10, 0x05, 0x00, 0x02, 0xd0, 0x82}, 1280, 720, true},
		// I (7-bit), L (with TL0PICIDX), B, V; SS: N_S 2, Y, G with one
		// picture group entry (ignored): the largest of three layers.
		{"three spatial layers", []byte{0xaa, 0x05, 0x00, 0x07, 0x58,
			0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x05, 0x00, 0x02, 0xd0, 0x01, 0x04, 0x01}, 1280, 720, true},
		// I, P, F with two reference indices (N set on the first), B, V.
		{"flexible mode", []byte{0xda, 0x85, 0x00, 0x03, 0x04, 0x10, 0x01, 0x40, 0x00, 0xb4}, 320, 180, true},
		{"no SS", []byte{0x88, 0x80, 0x05, 0x00}, 0, 0, false},
		{"SS without sizes", []byte{0x8a, 0x80, 0x05, 0x08, 0x00}, 0, 0, false},
		{"truncated", []byte{0x8a, 0x80, 0x05, 0x10, 0x05, 0x00, 0x02}, 0, 0, false},
	} {
		w, h, ok := vp9FrameSize(c.payload)
		if w != c.w || h != c.h || ok != c.ok {
			t.Errorf("%s: %dx%d, %v; want %dx%d, %v", c.name, w, h, ok, c.w, c.h, c.ok)
		}
	}
}

func FuzzFrameSize(f *testing.F) {
	for _, v := range spsVectors {
		b, _ := hex.DecodeString(v.hex)
		f.Add(b)
	}
	f.Add([]byte{0xaa, 0x05, 0x00, 0x07, 0x58, 0x01, 0x40, 0x00, 0xb4})
	f.Fuzz(func(t *testing.T, b []byte) {
		if w, h, ok := h264FrameSize(b); ok && (w <= 0 || h <= 0) {
			t.Fatalf("H.264 size %dx%d", w, h)
		}
		if w, h, ok := vp9FrameSize(b); ok && (w <= 0 || h <= 0) {
			t.Fatalf("VP9 size %dx%d", w, h)
		}
	})
}

func TestBitReaderSkipsEmulationPrevention(t *testing.T) {
	// 00 00 03 01 carries 00 00 01.
	r := bitReader{b: []byte{0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x03, 0xa0}}
	if v := r.bits(24); v != 1 || r.err {
		t.Fatalf("read %#x, err %v; want 0x000001", v, r.err)
	}
	// 00 00 03 03 carries 00 00 03; then 1 (ue 0), 01 0 (ue 1).
	if v := r.bits(24); v != 3 || r.ue() != 0 || r.ue() != 1 || r.err {
		t.Fatalf("read %#x then wrong exp-Golomb codes, err %v", v, r.err)
	}
	if r.bits(8); !r.err {
		t.Fatal("read past the end without err")
	}
}
