package bots

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// loseVideo is an interceptor that drops every nth packet of each local
// video stream's own SSRC on the way to the wire (after the NACK responder
// kept it), so that the server asks for it again.
type loseVideo struct {
	interceptor.NoOp
	n       uint64
	dropped *atomic.Uint64
}

func (l *loseVideo) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.HasPrefix(strings.ToLower(info.MimeType), "video/") {
		return w
	}
	var count atomic.Uint64 // the sender and the NACK responder write
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == info.SSRC {
			if count.Add(1)%l.n == 0 {
				l.dropped.Add(1)
				return len(payload), nil
			}
		}
		return w.Write(h, payload, a)
	})
}

type loseVideoFactory struct {
	n       uint64
	dropped *atomic.Uint64
}

func (f loseVideoFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &loseVideo{n: f.n, dropped: f.dropped}, nil
}

// TestSimulcastSurvivesPublisherLoss: a simulcast publisher whose packets
// to the server are sometimes lost answers the server's NACKs with
// retransmissions; video must keep flowing to the subscriber. (Pion
// publishers put the rid, not the repair rid, on RTX packets; with RTX
// negotiated the server's Pion took the first RTX packet of each layer
// for a new stream of that rid, and the layer's real packets were no
// longer read: video stopped for every subscriber.)
func TestSimulcastSurvivesPublisherLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server and bots for 12 s")
	}
	base := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var dropped atomic.Uint64
	var tl bytes.Buffer
	r, err := Run(ctx, Config{
		URL: base, Room: "lossy", Publishers: 1, Subscribers: 1, Simulcast: true,
		Duration: 12 * time.Second, Timeline: &tl,
		interceptors: []interceptor.Factory{loseVideoFactory{n: 100, dropped: &dropped}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_ = r.WriteText(&out)
	t.Logf("%d video packets lost on the way to the server\n%s", dropped.Load(), out.String())
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if dropped.Load() == 0 {
		t.Fatal("no packet was lost: the test tests nothing")
	}
	var entries []TimelineEntry
	for _, line := range strings.Split(tl.String(), "\n") {
		var e TimelineEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			entries = append(entries, e)
		}
	}
	if len(entries) < 8 {
		t.Fatalf("timeline has %d seconds; want about 12:\n%s", len(entries), tl.String())
	}
	// Video in each of the last seconds.
	for _, e := range entries[len(entries)-5 : len(entries)-1] {
		if e.Layer == "" || e.Packets < 30 {
			t.Fatalf("video stopped at %.0f s: layer %q, %d packets that second; timeline:\n%s", e.T, e.Layer, e.Packets, tl.String())
		}
	}
	if r.Layers.F < 6 {
		t.Errorf("the subscriber was on f for %.1f s of 12; want at least 6", r.Layers.F)
	}
}
