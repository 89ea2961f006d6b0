package bots

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// dropIncoming is an interceptor that drops every nth video packet that
// arrives (retransmissions and padding included), before the NACK
// generator sees it, and remembers the sequence numbers it dropped. It
// sits above SRTP, whose replay protection must be off for the
// retransmission of a dropped packet to get through.
type dropIncoming struct {
	interceptor.NoOp
	n int

	mu        sync.Mutex
	dropped   map[uint64]bool // SSRC<<16 | sequence number
	recovered int             // dropped ones that arrived later
}

func (d *dropIncoming) NewInterceptor(string) (interceptor.Interceptor, error) { return d, nil }

func (d *dropIncoming) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	if !strings.HasPrefix(strings.ToLower(info.MimeType), "video/") {
		return r
	}
	count := 0 // one reader per stream
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		for {
			n, attr, err := r.Read(b, a)
			if err != nil {
				return n, attr, err
			}
			var h rtp.Header
			if _, err := h.Unmarshal(b[:n]); err != nil || h.SSRC != info.SSRC {
				return n, attr, nil
			}
			key := uint64(h.SSRC)<<16 | uint64(h.SequenceNumber)
			count++
			d.mu.Lock()
			drop := count%d.n == 0
			if drop {
				d.dropped[key] = true
			} else if d.dropped[key] {
				d.recovered++
				delete(d.dropped, key)
			}
			d.mu.Unlock()
			if !drop {
				return n, attr, nil
			}
		}
	})
}

// TestNACKCountIsPacketsAskedFor: the server's NACK count for a
// subscriber that loses every 20th video packet is the number of
// sequence numbers it asked to be resent, not the number of times it
// asked: a receiver asks again until the packet arrives (Pion every
// 100 ms), for one that never does (the SFU cannot resend padding or
// packets sent before a layer switch) as long as it keeps the number.
func TestNACKCountIsPacketsAskedFor(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server and bots for 2 × 12 s")
	}
	base := startServer(t)
	for _, c := range []struct {
		name    string
		resends bool // whether retransmissions reach the subscriber
	}{
		{"resent", true},
		// Above SRTP, a retransmission of a packet the interceptor
		// dropped is a replay: SRTP drops it.
		{"never resent", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			drop := &dropIncoming{n: 20, dropped: map[uint64]bool{}}
			r, err := Run(ctx, Config{
				URL: base, Room: "nacks " + c.name, Publishers: 1, Subscribers: 1, Simulcast: true,
				Duration: 12 * time.Second, interceptors: []interceptor.Factory{drop},
				configure: func(se *webrtc.SettingEngine) { se.DisableSRTPReplayProtection(c.resends) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			drop.mu.Lock()
			recovered := drop.recovered
			lost := uint64(len(drop.dropped) + recovered)
			drop.mu.Unlock()
			t.Logf("subscriber lost %d distinct video packets (%d resent and received); the server counted %d NACKed packets; layers q %.1fs, h %.1fs, f %.1fs",
				lost, recovered, r.NACKs, r.Layers.Q, r.Layers.H, r.Layers.F)
			if lost < 20 || c.resends != (recovered > 0) {
				t.Fatalf("%d packets lost, %d resent and received: the test tests nothing", lost, recovered)
			}
			// The count lags by a quality report or two (2 s each) of the 12.
			if r.NACKs > lost || r.NACKs < lost/3 {
				t.Errorf("server counted %d NACKed packets for %d lost; want about as many, never more", r.NACKs, lost)
			}
		})
	}
}
