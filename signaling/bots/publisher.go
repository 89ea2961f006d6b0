package bots

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// rtpMTU is the size of the RTP packets the packetizer makes (12-byte
// header and payload); header extensions (about 20 bytes) and SRTP's tag
// still fit a 1280-byte path MTU.
const rtpMTU = 1200

// runPublisher joins without subscribing, publishes the clips and sends
// them until ctx ends.
func runPublisher(ctx context.Context, e *env, spec botSpec, token string, res *botResult) error {
	dialStart := time.Now()
	// The server says which simulcast layers anyone receives; the others
	// are not sent.
	var paused [3]atomic.Bool
	var keyReqs [3]atomic.Pointer[atomic.Bool]
	var videoSID atomic.Pointer[string]
	onLayers := func(m *protocol.Layers) {
		if sid := videoSID.Load(); sid == nil || *sid != m.Track {
			return // not (yet) known as our simulcast track
		}
		e.cfg.Logger.Debug("bots: layers to send", "bot", spec.identity, "active", m.Active)
		for i := range paused {
			on := slices.Contains(m.Active, layerName(i))
			if paused[i].Swap(!on) && on {
				if req := keyReqs[i].Load(); req != nil {
					req.Store(true) // resume at a keyframe
				}
			}
		}
	}
	jctx, cancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	c, err := client.Dial(jctx, spec.urls[0], token, client.Options{
		API:           e.api,
		AutoSubscribe: new(false),
		Logger:        e.cfg.Logger,
		OnLayers:      onLayers,
		OnQuality:     res.uplink.onQuality,
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	res.joined = true
	res.joinTime = time.Since(dialStart)
	e.progress.joined.Add(1)

	// One source per RTP stream: the video (or its three simulcast
	// layers) and the audio.
	type source struct {
		clip   *clip
		track  *webrtc.TrackLocalStaticRTP
		pub    int // index of the published track
		keyReq *atomic.Bool
		paused *atomic.Bool // a simulcast layer nobody receives
	}
	var sources []source
	var pub []client.PublishTrack
	var layerSSRCs atomic.Pointer[map[uint32]*atomic.Bool]
	var rembMu sync.Mutex
	var rembs []int
	onRTCP := func(pkts []rtcp.Packet) {
		m := layerSSRCs.Load()
		if m == nil {
			return
		}
		for _, p := range pkts {
			var ssrc uint32
			switch k := p.(type) {
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				rembMu.Lock()
				rembs = append(rembs, int(k.Bitrate/1000))
				rembMu.Unlock()
				continue
			case *rtcp.PictureLossIndication:
				ssrc = k.MediaSSRC
			case *rtcp.FullIntraRequest:
				ssrc = k.MediaSSRC
			default:
				continue
			}
			if req := (*m)[ssrc]; req != nil {
				req.Store(true)
			}
		}
	}
	if e.video != nil {
		id := spec.identity + "-v"
		if e.layers[0] != nil {
			var layers []webrtc.TrackLocal
			var base *webrtc.TrackLocalStaticRTP
			for i, cl := range e.layers {
				tr, err := webrtc.NewTrackLocalStaticRTP(cl.codec, id, spec.identity, webrtc.WithRTPStreamID(layerName(i)))
				if err != nil {
					return fmt.Errorf("bots: %s: new track: %w", spec.identity, err)
				}
				req := &atomic.Bool{}
				keyReqs[i].Store(req)
				sources = append(sources, source{cl, tr, len(pub), req, &paused[i]})
				if i == 0 {
					base = tr
				} else {
					layers = append(layers, tr)
				}
			}
			pub = append(pub, client.PublishTrack{Track: base, Layers: layers, OnRTCP: onRTCP})
		} else {
			tr, err := webrtc.NewTrackLocalStaticRTP(e.video.codec, id, spec.identity)
			if err != nil {
				return fmt.Errorf("bots: %s: new track: %w", spec.identity, err)
			}
			sources = append(sources, source{e.video, tr, len(pub), &atomic.Bool{}, nil})
			pub = append(pub, client.PublishTrack{Track: tr, OnRTCP: onRTCP})
		}
	}
	{
		tr, err := webrtc.NewTrackLocalStaticRTP(e.audio.codec, spec.identity+"-a", spec.identity)
		if err != nil {
			return fmt.Errorf("bots: %s: new track: %w", spec.identity, err)
		}
		sources = append(sources, source{e.audio, tr, len(pub), nil, nil})
		pub = append(pub, client.PublishTrack{Track: tr})
	}
	pctx, cancel := context.WithTimeout(ctx, e.cfg.JoinTimeout)
	sids, err := c.Publish(pctx, pub...)
	cancel()
	if err != nil {
		leave(ctx, c)
		return fmt.Errorf("bots: %s: publish: %w", spec.identity, err)
	}
	// Keyframe requests name the SSRC of the layer they want.
	reqs := map[uint32]*atomic.Bool{}
	for _, s := range sources {
		if s.keyReq == nil {
			continue
		}
		for _, enc := range c.Sender(sids[s.pub]).GetParameters().Encodings {
			if enc.RID == s.track.RID() {
				reqs[uint32(enc.SSRC)] = s.keyReq
			}
		}
	}
	layerSSRCs.Store(&reqs)
	for _, s := range sources {
		if s.clip == e.audio {
			res.uplink.setAudio(sids[s.pub])
		}
	}
	if e.layers[0] != nil && e.video != nil {
		videoSID.Store(&sids[0])
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
	sent := make([]sendCounts, len(sources))
	for i, s := range sources {
		params := c.Sender(sids[s.pub]).GetParameters()
		o := sendOptions{
			absCaptureID: client.ExtensionID(params.HeaderExtensions, client.URIAbsCaptureTime),
			keyReq:       s.keyReq,
			paused:       s.paused,
		}
		if rid := s.track.RID(); rid != "" {
			o.midID = client.ExtensionID(params.HeaderExtensions, sdp.SDESMidURI)
			o.ridID = client.ExtensionID(params.HeaderExtensions, sdp.SDESRTPStreamIDURI)
			o.mid, o.rid = []byte(c.Mid(sids[s.pub])), []byte(rid)
		}
		first := 0
		if n := len(s.clip.keyframes); n > 0 {
			first = s.clip.keyframes[spec.rng.IntN(n)]
		} else {
			first = spec.rng.IntN(len(s.clip.frames))
		}
		if s.keyReq != nil && e.layers[0] != nil {
			first = 0 // the layers start together
		}
		seq, ts := uint16(spec.rng.Uint32()), spec.rng.Uint32()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[i] = sendClip(sendCtx, s.clip, s.track, o, first, seq, ts, e.progress)
		}()
	}
	wg.Wait()
	res.uplink.stop()
	rembMu.Lock() // the RTCP readers may still deliver until Close
	res.rembKbps = slices.Clone(rembs)
	rembMu.Unlock()
	for _, s := range sent {
		res.sentPackets += s.packets
		res.sentBytes += s.bytes
	}
	leave(ctx, c)
	return nil
}

type sendCounts struct{ packets, bytes uint64 }

// layerName returns the rid of simulcast layer i (0, 1, 2).
func layerName(i int) string {
	switch i {
	case 0:
		return protocol.QualityLow
	case 1:
		return protocol.QualityMedium
	case 2:
		return protocol.QualityHigh
	}
	return ""
}

// sendOptions are the header extensions a stream's packets carry and how
// it answers keyframe requests.
type sendOptions struct {
	absCaptureID uint8 // send time in abs-capture-time; 0: none
	// midID and ridID, when not 0, put mid and rid on every packet (a
	// simulcast layer: the server finds the layer by them).
	midID, ridID uint8
	mid, rid     []byte
	// keyReq, when set by a keyframe request, makes the stream jump to a
	// keyframe of the clip at its next frame.
	keyReq *atomic.Bool
	// paused, while true, stops sending (the frames still advance).
	paused *atomic.Bool
}

// sendClip packetizes the clip's frames from index first, paced at one
// frame per frameDur, looping at the end, until ctx ends.
func sendClip(ctx context.Context, cl *clip, track *webrtc.TrackLocalStaticRTP, o sendOptions, first int, seq uint16, ts uint32, pr *progress) sendCounts {
	extID := o.absCaptureID
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
		if o.paused != nil && o.paused.Load() {
			next = next.Add(cl.frameDur)
			timer.Reset(time.Until(next))
			continue
		}
		if o.keyReq != nil && o.keyReq.Swap(false) {
			i = cl.nextKeyframe(i)
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
			if o.midID != 0 && o.ridID != 0 {
				if p.SetExtension(o.midID, o.mid) != nil || p.SetExtension(o.ridID, o.rid) != nil {
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
