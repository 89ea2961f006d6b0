package bots

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/client"
)

// rtpMTU is the size of the RTP packets the packetizer makes (12-byte
// header and payload); header extensions (about 20 bytes) and SRTP's tag
// still fit a 1280-byte path MTU.
const rtpMTU = 1200

// runPublisher joins without subscribing, publishes the clips and sends
// them until ctx ends.
func runPublisher(ctx context.Context, e *env, spec botSpec, token string, res *botResult) error {
	dialStart := time.Now()
	jctx, cancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	c, err := client.Dial(jctx, spec.urls[0], token, client.Options{
		API:           e.api,
		AutoSubscribe: new(false),
		Logger:        e.cfg.Logger,
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	res.joined = true
	res.joinTime = time.Since(dialStart)
	e.progress.joined.Add(1)

	type source struct {
		clip  *clip
		track *webrtc.TrackLocalStaticRTP
	}
	var sources []source
	var pub []client.PublishTrack
	for _, cl := range []*clip{e.video, e.audio} {
		if cl == nil {
			continue
		}
		kind := "a"
		if cl.codec.MimeType == webrtc.MimeTypeVP8 {
			kind = "v"
		}
		tr, err := webrtc.NewTrackLocalStaticRTP(cl.codec, spec.identity+"-"+kind, spec.identity)
		if err != nil {
			return fmt.Errorf("bots: %s: new track: %w", spec.identity, err)
		}
		sources = append(sources, source{cl, tr})
		pub = append(pub, client.PublishTrack{Track: tr})
	}
	pctx, cancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	sids, err := c.Publish(pctx, pub...)
	cancel()
	if err != nil {
		leave(ctx, c)
		return fmt.Errorf("bots: %s: publish: %w", spec.identity, err)
	}

	// Sending stops at the end of the run, or when the server ends the
	// session (bye, a dropped socket).
	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-c.Done():
		case <-sendCtx.Done():
		}
		stopSend()
	}()
	var sent [2]sendCounts
	for i, s := range sources {
		extID := client.ExtensionID(c.Sender(sids[i]).GetParameters().HeaderExtensions, client.URIAbsCaptureTime)
		first := 0
		if n := len(s.clip.keyframes); n > 0 {
			first = s.clip.keyframes[spec.rng.IntN(n)]
		} else {
			first = spec.rng.IntN(len(s.clip.frames))
		}
		seq, ts := uint16(spec.rng.Uint32()), spec.rng.Uint32()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[i] = sendClip(sendCtx, s.clip, s.track, extID, first, seq, ts, e.progress)
		}()
	}
	wg.Wait()
	for _, s := range sent {
		res.sentPackets += s.packets
		res.sentBytes += s.bytes
	}
	leave(ctx, c)
	return nil
}

type sendCounts struct{ packets, bytes uint64 }

// sendClip packetizes the clip's frames from index first, paced at one
// frame per frameDur, looping at the end, until ctx ends. Every packet
// carries its send time in abs-capture-time when extID is not 0.
func sendClip(ctx context.Context, cl *clip, track *webrtc.TrackLocalStaticRTP, extID uint8, first int, seq uint16, ts uint32, pr *progress) sendCounts {
	var payloader rtp.Payloader = &codecs.OpusPayloader{}
	if cl.codec.MimeType == webrtc.MimeTypeVP8 {
		payloader = &codecs.VP8Payloader{EnablePictureID: true}
	}
	// SSRC and payload type are set by the track for each binding.
	pz := rtp.NewPacketizerWithOptions(rtpMTU, payloader, rtp.NewFixedSequencer(seq), cl.codec.ClockRate, rtp.WithTimestamp(ts))

	var n sendCounts
	ext := make([]byte, 8)
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for i := first; ; i = (i + 1) % len(cl.frames) {
		select {
		case <-ctx.Done():
			return n
		case <-timer.C:
		}
		now := time.Now()
		if extID != 0 {
			binary.BigEndian.PutUint64(ext, ntpTime(now))
		}
		for _, p := range pz.Packetize(cl.frames[i], cl.samples) {
			if extID != 0 {
				if err := p.SetExtension(extID, ext); err != nil {
					continue
				}
			}
			if err := track.WriteRTP(p); err != nil && errors.Is(err, io.ErrClosedPipe) {
				return n
			}
			n.packets++
			n.bytes += uint64(p.MarshalSize())
			pr.sentPackets.Add(1)
		}
		// Pace by the clip's timebase; after a stall, resume from now
		// instead of bursting to catch up.
		next = next.Add(cl.frameDur)
		if late := now.Sub(next); late > cl.frameDur {
			next = now.Add(cl.frameDur)
		}
		timer.Reset(time.Until(next))
	}
}

// ntpEpochOffset is the number of seconds from 1900 (NTP) to 1970 (Unix).
const ntpEpochOffset = 2208988800

// ntpTime returns t as a 64-bit NTP timestamp (UQ32.32 seconds since 1900),
// the format of abs-capture-time.
func ntpTime(t time.Time) uint64 {
	ns := t.UnixNano()
	secs := uint64(ns/1e9) + ntpEpochOffset
	frac := (uint64(ns%1e9) << 32) / 1e9
	return secs<<32 | frac
}

// fromNTP is the inverse of ntpTime.
func fromNTP(v uint64) time.Time {
	secs := int64(v>>32) - ntpEpochOffset
	ns := (int64(v&0xffffffff) * 1e9) >> 32
	return time.Unix(secs, ns)
}
