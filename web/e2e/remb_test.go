package e2e

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// outbound is what window.huddle.outbound() reports for one sent stream.
type outbound struct {
	Kind          string  `json:"kind"`
	RID           *string `json:"rid"`
	BytesSent     int64   `json:"bytesSent"`
	TargetBitrate float64 `json:"targetBitrate"`
	FrameWidth    int64   `json:"frameWidth"`
	FrameHeight   int64   `json:"frameHeight"`
	Limitation    string  `json:"qualityLimitationReason"`
}

// TestREMBCap checks that Chromium obeys the REMB the server sends a
// publisher without simulcast: with `serve --video-max-kbps 150` the
// page's camera (?simulcast=0) sends at most about 150 kbit/s, measured
// from the page's own outbound-rtp bytesSent after a warm-up, while the
// same page on a server without the cap sends clearly more. Chromium
// takes REMB as the limit of everything it sends on the transport, so its
// video gets the cap less packet overhead (the server adds what the audio
// sends to the REMB): about 130 of 150.
func TestREMBCap(t *testing.T) {
	bin, chrome, ctx := setup(t)
	b := startBrowser(ctx, t, chrome)

	const capKbps = 150
	capped := videoSendRate(ctx, t, b, bin, "capped", capKbps)
	uncapped := videoSendRate(ctx, t, b, bin, "uncapped", 0)
	t.Logf("Chromium video send rate without simulcast: %.0f kbit/s with --video-max-kbps %d, %.0f kbit/s without",
		capped, capKbps, uncapped)
	if capped > 1.3*capKbps {
		t.Errorf("capped at %d kbit/s, Chromium sends %.0f kbit/s (more than 1.3 times the cap)", capKbps, capped)
	}
	// The fake camera's picture is simple: uncapped, Chromium's encoder
	// uses far less than its 2 Mbit/s target (about 360 kbit/s here).
	if uncapped < 2*capped || uncapped < 1.5*capKbps {
		t.Errorf("without the cap Chromium sends %.0f kbit/s, not clearly more than the %.0f kbit/s it sends capped", uncapped, capped)
	}
}

// videoSendRate starts a server with --video-max-kbps capKbps, joins it
// from a new tab that publishes its camera without simulcast, and returns
// the rate of the page's video bytesSent, in kbit/s, over a window after
// a warm-up. The server stays up until the test ends; the tab leaves.
func videoSendRate(ctx context.Context, t *testing.T, b *browser, bin, name string, capKbps int) float64 {
	t.Helper()
	const (
		warmUp = 8 * time.Second
		window = 10 * time.Second
	)
	srv := startServer(ctx, t, bin, "--video-max-kbps", strconv.Itoa(capKbps))
	tb := b.newTab(t, name)
	t.Cleanup(func() {
		if t.Failed() {
			b.dump(t)
			srv.dump(t)
		}
	})
	if err := chromedp.Do(tb.ctx, chromedp.Navigate(srv.base+"/r/remb?simulcast=0&name="+name)); err != nil {
		t.Fatalf("tab %s: navigate: %v", name, err)
	}
	waitJoined(t, tb, 20*time.Second)
	// waitFor cannot await a promise: poll here.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		sent, err := eval[bool](tb, `window.huddle.outbound().then(o => o.some(s => s.kind === 'video' && s.bytesSent > 0))`)
		if err == nil && sent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tab %s: no camera video sent within 20 s (last error: %v)", name, err)
		}
	}

	if capKbps > 0 {
		// The server's answer offers REMB for the camera's codec.
		fb, err := eval[[]string](tb, `window.huddle.client.publisher.currentRemoteDescription.sdp.split('\r\n').filter(l => l.startsWith('a=rtcp-fb:') && l.includes('goog-remb'))`)
		if err != nil || len(fb) == 0 {
			t.Fatalf("tab %s: no goog-remb in the server's answer (%v)", name, err)
		}
		t.Logf("tab %s: the answer has %d goog-remb lines, e.g. %q", name, len(fb), fb[0])
	}
	video := func() outbound {
		t.Helper()
		out, err := eval[[]outbound](tb, `window.huddle.outbound()`)
		if err != nil {
			t.Fatalf("tab %s: outbound stats: %v", name, err)
		}
		var v []outbound
		for _, o := range out {
			if o.Kind == "video" {
				v = append(v, o)
			}
		}
		if len(v) != 1 || v[0].RID != nil {
			t.Fatalf("tab %s: video outbound-rtp %+v; want one stream without rid (no simulcast)", name, v)
		}
		return v[0]
	}
	time.Sleep(warmUp)
	first, t0 := video(), time.Now()
	time.Sleep(window)
	last, t1 := video(), time.Now()
	kbps := float64(last.BytesSent-first.BytesSent) * 8 / 1000 / t1.Sub(t0).Seconds()
	t.Logf("tab %s (--video-max-kbps %d): %.0f kbit/s of video over %v after %v, %dx%d, target bitrate %.0f kbit/s, limited by %s",
		name, capKbps, kbps, t1.Sub(t0).Round(time.Millisecond), warmUp, last.FrameWidth, last.FrameHeight, last.TargetBitrate/1000, last.Limitation)
	if _, err := eval[bool](tb, `(window.huddle.leave(), true)`); err != nil {
		t.Logf("tab %s: leave: %v", name, err)
	}
	return kbps
}
