package client

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

func TestWebSocketURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "http://127.0.0.1:7800", want: "ws://127.0.0.1:7800/ws"},
		{in: "http://127.0.0.1:7800/", want: "ws://127.0.0.1:7800/ws"},
		{in: "https://huddle.example/base", want: "wss://huddle.example/base/ws"},
		{in: "ws://h:1", want: "ws://h:1/ws"},
		{in: "wss://h:1/custom", want: "wss://h:1/custom"},
		{in: "ftp://h", err: "scheme"},
		{in: "http://", err: "no host"},
	}
	for _, tt := range tests {
		got, err := WebSocketURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("WebSocketURL(%q) error %v, want one containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("WebSocketURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestDialRefusedReturnsProtocolError(t *testing.T) {
	fs := newFakeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, fs.srv.URL, "forged", Options{API: fs.api})
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial with a bad token succeeded")
	}
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Code != protocol.CodeTokenInvalid {
		t.Fatalf("Dial error %v, want a *protocol.Error with code %s", err, protocol.CodeTokenInvalid)
	}
}

// TestSession runs one whole session against the fake server: join,
// receive a track named by its SID, data both ways, publish with
// abs-capture-time, ping, events, leave.
func TestSession(t *testing.T) {
	fs := newFakeServer(t)
	fs.extra = func(c *fakeConn) {
		c.write(protocol.ParticipantEvent{Envelope: protocol.Envelope{Type: protocol.TypeParticipantJoined},
			Participant: protocol.Participant{SID: "PA_carol", Identity: "carol"}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type gotTrack struct {
		info protocol.Track
		seq  uint16
	}
	tracks := make(chan gotTrack, 4)
	dataIn := make(chan protocol.DataMessage, 4)
	c, err := Dial(ctx, fs.srv.URL, "good", Options{
		API: fs.api,
		OnTrack: func(info protocol.Track, tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			buf := make([]byte, 1500)
			var h rtp.Header
			n, _, err := tr.Read(buf)
			if err == nil {
				_, err = h.Unmarshal(buf[:n])
			}
			if err == nil {
				tracks <- gotTrack{info, h.SequenceNumber}
			}
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
			}
		},
		OnData: func(m protocol.DataMessage) { dataIn <- m },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Joined().You.SID; got != "PA_me" {
		t.Errorf("joined SID %q, want PA_me", got)
	}

	// Media from the server arrives named by the offer's mids.
	select {
	case g := <-tracks:
		if g.info.SID != "TR_cam" || g.info.Identity != "bob" || g.info.Kind != protocol.KindVideo {
			t.Errorf("OnTrack info %+v, want TR_cam from bob (video)", g.info)
		}
	case <-ctx.Done():
		t.Fatal("no track from the server")
	}
	if err := c.WaitConnected(ctx, protocol.TransportSubscribe); err != nil {
		t.Fatal(err)
	}

	// Data channel round trip (the fake server echoes).
	if err := c.WaitData(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.SendData([]string{"bob"}, json.RawMessage(`{"emoji":"👍"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-dataIn:
		if m.Type != "message" || m.From != "me" || string(m.Data) != `{"emoji":"👍"}` {
			t.Errorf("data echo %+v", m)
		}
	case <-ctx.Done():
		t.Fatal("no data echo")
	}

	// Publish an audio track, then a video track (a renegotiation).
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic-1", "me")
	if err != nil {
		t.Fatal(err)
	}
	sids, err := c.Publish(ctx, PublishTrack{Track: audio})
	if err != nil {
		t.Fatal(err)
	}
	if len(sids) != 1 || sids[0] != "TR_mic-1" {
		t.Fatalf("Publish returned %v, want [TR_mic-1]", sids)
	}
	extID := ExtensionID(c.Sender(sids[0]).GetParameters().HeaderExtensions, URIAbsCaptureTime)
	if extID == 0 {
		t.Fatal("abs-capture-time not negotiated on the publish transport")
	}
	if err := c.WaitConnected(ctx, protocol.TransportPublish); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := rtp.Packet{Header: rtp.Header{Version: 2}, Payload: []byte{0xfc, 0xff, 0xfe}}
		ext := make([]byte, 8)
		for sendCtx.Err() == nil {
			p.SequenceNumber++
			p.Timestamp += 960
			binary.BigEndian.PutUint64(ext, uint64(time.Now().UnixNano()))
			_ = p.SetExtension(extID, ext)
			_ = audio.WriteRTP(&p)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	sink := fs.sink("TR_mic-1")
	select {
	case <-sink.first:
	case <-ctx.Done():
		t.Fatal("the server received no RTP from the published track")
	}
	video, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "cam-1", "me")
	if err != nil {
		t.Fatal(err)
	}
	sids, err = c.Publish(ctx, PublishTrack{Track: video, Source: protocol.SourceScreen})
	if err != nil || len(sids) != 1 || sids[0] != "TR_cam-1" {
		t.Fatalf("second Publish = %v, %v; want [TR_cam-1]", sids, err)
	}
	stopSending()
	wg.Wait()
	sink.mu.Lock()
	if sink.captureExts == 0 || sink.captureExts != sink.packets {
		t.Errorf("%d of %d packets carried abs-capture-time", sink.captureExts, sink.packets)
	}
	sink.mu.Unlock()

	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// The event sent after joined.
	select {
	case ev := <-c.Events():
		m, ok := ev.Message.(*protocol.ParticipantEvent)
		if ev.Type != protocol.TypeParticipantJoined || !ok || m.Participant.Identity != "carol" {
			t.Errorf("event %+v, want participant_joined of carol", ev)
		}
	case <-ctx.Done():
		t.Fatal("no event")
	}

	if err := c.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("connection still up after Leave")
	}
	// The bye is the last event, then the channel is closed.
	var last Event
	for ev := range c.Events() {
		last = ev
	}
	if last.Type != protocol.TypeBye {
		t.Errorf("last event %+v, want bye", last)
	}
}

// TestSlowEventConsumerDoesNotBlock floods events at a client nobody
// reads: the read loop must keep answering (a ping gets its pong) and
// count what it dropped.
func TestSlowEventConsumerDoesNotBlock(t *testing.T) {
	fs := newFakeServer(t)
	fs.extra = func(c *fakeConn) {
		for i := range 100 {
			c.write(protocol.TrackMuted{Envelope: protocol.Envelope{Type: protocol.TypeTrackMuted}, Track: "TR_cam", Muted: i%2 == 0})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, fs.srv.URL, "good", Options{API: fs.api, EventBuffer: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.DroppedEvents(); got != 92 {
		t.Errorf("dropped %d events, want 92", got)
	}
	if got := len(c.Events()); got != 8 {
		t.Errorf("%d events queued, want 8", got)
	}
}

// TestCloseEndsEverything: Close returns with OnTrack readers still
// running, and calls after it fail.
func TestCloseEndsEverything(t *testing.T) {
	fs := newFakeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	started := make(chan struct{}, 1)
	c, err := Dial(ctx, fs.srv.URL, "good", Options{API: fs.api, OnTrack: func(_ protocol.Track, tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		started <- struct{}{}
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Read(buf); err != nil {
				return
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("no track")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Subscribe("TR_x"); err == nil {
		t.Error("Subscribe after Close succeeded")
	}
	if _, err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close: %v, want ErrClosed", err)
	}
}

func TestJoinRefusalWithoutIDEndsDial(t *testing.T) {
	fs := newFakeServer(t)
	fs.refuseWithoutID = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Dial(ctx, fs.srv.URL, "forged", Options{API: fs.api})
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Code != protocol.CodeTokenInvalid {
		t.Fatalf("Dial error %v, want token_invalid before the deadline", err)
	}
}
