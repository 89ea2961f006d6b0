package sfu

import (
	"slices"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// TestREMBIsOneLimitForThePublisher: browsers apply a REMB to all they
// send, so a publisher of two video tracks without simulcast gets one
// REMB, the sum of the two tracks' limits (each the smallest subscriber
// share, at most VideoMax, at least the floor), and a publisher that also
// sends simulcast video gets none (it would cap the simulcast layers).
func TestREMBIsOneLimitForThePublisher(t *testing.T) {
	track := func(sid string, kind webrtc.RTPCodecType, ssrc uint32, shares ...int64) *UpTrack {
		up := newUpTrack(TrackInfo{SID: sid, Kind: kind}, ssrc, nil, &nopRTCP{}, nil)
		for i, s := range shares {
			d := bindDown(up, uint32(1000+i), &countingWriter{})
			d.share.Store(s)
		}
		return up
	}
	const kbps = 1000
	for _, c := range []struct {
		name       string
		floor, max int
		ups        []*UpTrack
		want       int64
		wantSSRCs  []uint32
	}{
		{"no subscribers, no cap", 0, 0, []*UpTrack{track("cam", webrtc.RTPCodecTypeVideo, 1)}, 0, nil},
		{"no subscribers: the cap", 0, 150 * kbps, []*UpTrack{track("cam", webrtc.RTPCodecTypeVideo, 1)}, 150 * kbps, []uint32{1}},
		{"the smallest share under the cap", 0, 800 * kbps,
			[]*UpTrack{track("cam", webrtc.RTPCodecTypeVideo, 1, 600*kbps, 2000*kbps)}, 600 * kbps, []uint32{1}},
		{"the cap under the shares", 0, 300 * kbps,
			[]*UpTrack{track("cam", webrtc.RTPCodecTypeVideo, 1, 600*kbps)}, 300 * kbps, []uint32{1}},
		{"the floor over the cap", 200 * kbps, 100 * kbps,
			[]*UpTrack{track("cam", webrtc.RTPCodecTypeVideo, 1, 600*kbps)}, 200 * kbps, []uint32{1}},
		{"one track limited, one not: none (it would starve the other)", 0, 0, []*UpTrack{
			track("cam", webrtc.RTPCodecTypeVideo, 1, 600*kbps),
			track("screen", webrtc.RTPCodecTypeVideo, 2),
		}, 0, nil},
		{"two tracks and audio: the sum", 0, 0, []*UpTrack{
			track("cam", webrtc.RTPCodecTypeVideo, 1, 600*kbps),
			track("screen", webrtc.RTPCodecTypeVideo, 2, 900*kbps, 1200*kbps),
			track("mic", webrtc.RTPCodecTypeAudio, 3, 50*kbps),
		}, 1500 * kbps, []uint32{1, 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &Engine{floor: c.floor, videoMax: c.max}
			got, ssrcs := e.remb(c.ups, time.Now())
			slices.Sort(ssrcs)
			if got != c.want || !slices.Equal(ssrcs, c.wantSSRCs) {
				t.Fatalf("REMB %d for %v; want %d for %v", got, ssrcs, c.want, c.wantSSRCs)
			}
		})
	}

	s, _ := newSimSource(t)
	screen := track("screen", webrtc.RTPCodecTypeVideo, 2, 900*kbps)
	e := &Engine{videoMax: 150 * kbps}
	if got, _ := e.remb([]*UpTrack{screen, s.up}, time.Now()); got != 0 {
		t.Fatalf("REMB %d to a publisher that also sends simulcast video; want none", got)
	}
}
