package bots

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

// media holds the committed sample clips (made by `make samples`).
//
//go:embed media/*.ivf media/*.ogg
var media embed.FS

// Sample clips.
const (
	DefaultVideo = "vp8_360p.ivf"
	AudioClip    = "opus_48k.ogg"
)

// The clips of the simulcast layers q, h and f.
const (
	ClipLow    = "vp8_180p.ivf"
	ClipMedium = "vp8_360p.ivf"
	ClipHigh   = "vp8_720p.ivf"
)

// clip is a sample file parsed once into frames, shared read-only by every
// publisher of a run.
type clip struct {
	name      string
	codec     webrtc.RTPCodecCapability
	frames    [][]byte
	keyframes []int         // frames a publisher may start at; nil: any
	frameDur  time.Duration // pacing: one frame per frameDur
	samples   uint32        // RTP timestamp units per frame
}

// loadVP8 parses an IVF file of VP8 frames.
func loadVP8(name string) (*clip, error) {
	raw, err := media.ReadFile("media/" + name)
	if err != nil {
		return nil, fmt.Errorf("bots: sample video: %w", err)
	}
	r, hdr, err := ivfreader.NewWith(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("bots: parse %s: %w", name, err)
	}
	if hdr.FourCC != "VP80" {
		return nil, fmt.Errorf("bots: %s is %q, not VP8", name, hdr.FourCC)
	}
	if hdr.TimebaseDenominator == 0 || hdr.TimebaseNumerator == 0 {
		return nil, fmt.Errorf("bots: %s has no timebase", name)
	}
	c := &clip{
		name:  name,
		codec: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
		// The files are constant frame rate: one frame per timebase tick.
		frameDur: time.Duration(uint64(time.Second) * uint64(hdr.TimebaseNumerator) / uint64(hdr.TimebaseDenominator)),
		samples:  uint32(uint64(90000) * uint64(hdr.TimebaseNumerator) / uint64(hdr.TimebaseDenominator)),
	}
	for {
		frame, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bots: parse %s frame %d: %w", name, len(c.frames), err)
		}
		if len(frame) > 0 && frame[0]&1 == 0 { // VP8 key frame
			c.keyframes = append(c.keyframes, len(c.frames))
		}
		c.frames = append(c.frames, frame)
	}
	if len(c.keyframes) == 0 || c.keyframes[0] != 0 {
		return nil, fmt.Errorf("bots: %s does not start with a key frame", name)
	}
	return c, nil
}

// loadOpus parses an Ogg Opus file with one 20 ms packet per page.
func loadOpus(name string) (*clip, error) {
	raw, err := media.ReadFile("media/" + name)
	if err != nil {
		return nil, fmt.Errorf("bots: sample audio: %w", err)
	}
	r, _, err := oggreader.NewWith(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("bots: parse %s: %w", name, err)
	}
	c := &clip{
		name:     name,
		codec:    webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
		frameDur: 20 * time.Millisecond,
		samples:  960,
	}
	for {
		page, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bots: parse %s page %d: %w", name, len(c.frames), err)
		}
		if bytes.HasPrefix(page, []byte("OpusTags")) || len(page) == 0 {
			continue
		}
		c.frames = append(c.frames, page)
	}
	if len(c.frames) == 0 {
		return nil, fmt.Errorf("bots: %s has no audio packets", name)
	}
	return c, nil
}

// nextKeyframe returns the index of the first keyframe at or after frame
// i, wrapping to the start.
func (c *clip) nextKeyframe(i int) int {
	for _, k := range c.keyframes {
		if k >= i {
			return k
		}
	}
	if len(c.keyframes) > 0 {
		return c.keyframes[0]
	}
	return i
}
