// Package e2e is the browser test of the call page: the real server
// ($HUDDLE_BIN) and two tabs of Debian's headless Chromium, driven with
// chromedp. `make e2e` builds both and runs it in a network namespace that
// has only loopback.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPaths are where Debian puts Chromium; the real binary first (the
// /usr/bin wrapper works too but adds flags). $HUDDLE_CHROMIUM overrides.
var chromiumPaths = []string{"/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"}

// TestCall joins one room from two tabs, checks that each tab decodes the
// other's video and receives its audio, mutes one microphone and checks the
// other tab shows it, then leaves from one tab and checks that the other tab
// drops its tile.
func TestCall(t *testing.T) {
	bin, chrome, ctx := setup(t)

	start := time.Now()
	srv := startServer(ctx, t, bin)
	t.Logf("server ready at %s in %v", srv.base, time.Since(start).Round(time.Millisecond))

	b := startBrowser(ctx, t, chrome)
	t.Logf("browser up in %v", time.Since(start).Round(time.Millisecond))
	tabA := b.newTab(t, "A")
	tabB := b.newTab(t, "B")
	t.Cleanup(func() {
		if t.Failed() {
			b.dump(t)
			srv.dump(t)
		}
	})

	const room = "e2e room" // a space: the page must encode and decode it
	for _, tab := range []*tab{tabA, tabB} {
		u := srv.base + "/r/" + url.PathEscape(room) + "?name=" + url.QueryEscape(tab.name)
		if err := chromedp.Do(tab.ctx, chromedp.Navigate(u)); err != nil {
			t.Fatalf("tab %s: navigate to %s: %v", tab.name, u, err)
		}
	}
	for _, tab := range []*tab{tabA, tabB} {
		waitJoined(t, tab, 20*time.Second)
	}
	t.Logf("both tabs joined after %v", time.Since(start).Round(time.Millisecond))

	// Each tab decodes the other's video and receives its audio: the
	// counters rise between two polls.
	checkMedia(t, tabA, "B", tabB, "A", 30*time.Second)
	t.Logf("media flows both ways after %v", time.Since(start).Round(time.Millisecond))
	if dir := os.Getenv("HUDDLE_E2E_SCREENSHOTS"); dir != "" {
		b.screenshots(t, dir)
	}

	for _, tab := range []*tab{tabA, tabB} {
		n, err := eval[int](tab, `window.huddle.participants()`)
		if err != nil || n != 2 {
			t.Errorf("tab %s: participants() = %d, %v; want 2", tab.name, n, err)
		}
	}

	// Adaptive video: B shows A's camera in a small window, then in a
	// large one; each time the tile tells the server its size and the
	// server sends the simulcast layer that covers it.
	large := shownVideo(t, tabB, "A", 1600, 1000)
	small := shownVideo(t, tabB, "A", 360, 640) // a phone: the tile is about 330 px wide
	t.Logf("A's video in B: tile %s gets %dx%d; tile %s gets %dx%d", small.View, small.VideoWidth, small.VideoHeight, large.View, large.VideoWidth, large.VideoHeight)
	if small.VideoWidth >= large.VideoWidth {
		t.Errorf("a small tile (%s) got %dx%d, a large one (%s) %dx%d: want a smaller layer for the small tile",
			small.View, small.VideoWidth, small.VideoHeight, large.View, large.VideoWidth, large.VideoHeight)
	}

	// A tile off screen asks for nothing: B stops receiving A's video
	// and A, whose only subscriber B is, stops sending it; back on screen
	// both resume.
	hiddenTile(t, tabA, tabB)

	// A mutes its microphone; B's tile for A shows it.
	if _, err := eval[bool](tabA, `(document.getElementById('mic').click(), true)`); err != nil {
		t.Fatalf("tab A: click mic: %v", err)
	}
	waitFor(t, tabB, "A's tile shows the microphone muted", 5*time.Second,
		`window.huddle.tiles().some(t => t.name === 'A' && t.micMuted) &&
		 !document.querySelector('.tile[data-name="A"] .mic-off').hidden`)
	t.Logf("tab B shows A muted")

	// B leaves with the Leave button; A's tile for B goes away.
	if _, err := eval[bool](tabB, `(document.getElementById('leave').click(), true)`); err != nil {
		t.Fatalf("tab B: click leave: %v", err)
	}
	left := time.Now()
	waitFor(t, tabA, "B's tile gone from tab A", 5*time.Second,
		`!window.huddle.tiles().some(t => t.name === 'B') && window.huddle.participants() === 1 &&
		 !document.querySelector('.tile[data-name="B"]')`)
	t.Logf("tab A dropped B's tile %v after the click", time.Since(left).Round(time.Millisecond))
	waitFor(t, tabB, "tab B in state left", 5*time.Second, `window.huddle.state === 'left'`)
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// tileView is what window.huddle.tiles() says of a tile's video.
type tileView struct {
	View        string `json:"view"`
	VideoWidth  int    `json:"videoWidth"`
	VideoHeight int    `json:"videoHeight"`
}

// shownVideo resizes the tab's viewport, waits until the tile of name has
// told the server its new size, then until the decoded video's size stays
// the same for 8 s (a layer switch waits for a key frame; the publisher
// turns its top layer on only as its bandwidth estimate grows), and
// returns it.
func shownVideo(t *testing.T, tb *tab, name string, width, height int64) tileView {
	t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.EmulateViewport(width, height)); err != nil {
		t.Fatalf("tab %s: viewport %dx%d: %v", tb.name, width, height, err)
	}
	js := fmt.Sprintf(`window.huddle.tiles().find(t => t.name === %q) ?? {}`, name)
	waitFor(t, tb, "the tile's view is sent", 10*time.Second, fmt.Sprintf(`(() => {
		const r = document.querySelector('.tile[data-name=%q] video').getBoundingClientRect();
		const v = (%s).view || '';
		const [w, h] = v.split('x').map(Number);
		const dpr = window.devicePixelRatio || 1;
		return Math.abs(w - r.width * dpr) <= r.width * dpr / 10 + 1 && Math.abs(h - r.height * dpr) <= r.height * dpr / 10 + 1;
	})()`, name, js))
	deadline := time.Now().Add(30 * time.Second)
	var last tileView
	stableSince := time.Now()
	for time.Now().Before(deadline) {
		v, err := eval[tileView](tb, js)
		if err != nil {
			t.Fatalf("tab %s: tiles: %v", tb.name, err)
		}
		if v.VideoWidth != last.VideoWidth || v.VideoHeight != last.VideoHeight {
			t.Logf("tab %s: %s's tile %s: video %dx%d", tb.name, name, v.View, v.VideoWidth, v.VideoHeight)
			last, stableSince = v, time.Now()
		}
		last.View = v.View
		// Long enough for the publisher's own ramp-up to turn a layer on.
		if time.Since(stableSince) >= 8*time.Second {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

// hiddenTile moves pub's tile in sub's page off screen and checks that
// sub stops receiving pub's video and pub stops sending it (the server
// pauses the subscription and then the layers nobody receives), then
// moves it back and checks that the video comes back.
func hiddenTile(t *testing.T, pub, sub *tab) {
	t.Helper()
	move := func(dy int) {
		t.Helper()
		js := fmt.Sprintf(`(document.querySelector('.tile[data-name=%q]').style.transform = 'translateY(%dpx)', true)`, pub.name, dy)
		if _, err := eval[bool](sub, js); err != nil {
			t.Fatalf("tab %s: move %s's tile: %v", sub.name, pub.name, err)
		}
	}
	view := fmt.Sprintf(`(window.huddle.tiles().find(t => t.name === %q) ?? {}).view`, pub.name)
	received := func() int64 {
		t.Helper()
		stats, err := eval[[]inbound](sub, `window.huddle.inbound()`)
		if err != nil {
			t.Fatalf("tab %s: inbound: %v", sub.name, err)
		}
		var n int64
		for _, in := range stats {
			if in.Kind == "video" && in.Name == pub.name {
				n += in.PacketsReceived
			}
		}
		return n
	}
	sent := func() int64 {
		t.Helper()
		stats, err := eval[[]struct {
			Kind      string `json:"kind"`
			BytesSent int64  `json:"bytesSent"`
		}](pub, `window.huddle.outbound()`)
		if err != nil {
			t.Fatalf("tab %s: outbound: %v", pub.name, err)
		}
		var n int64
		for _, o := range stats {
			if o.Kind == "video" {
				n += o.BytesSent
			}
		}
		return n
	}
	// Both counters over 3 s, after 2 s for what is in flight and for the
	// publisher to take the server's word.
	rise := func() (packets, bytes int64) {
		time.Sleep(2 * time.Second)
		p0, b0 := received(), sent()
		time.Sleep(3 * time.Second)
		return received() - p0, sent() - b0
	}

	shownPackets, shownBytes := rise()
	move(-20000)
	waitFor(t, sub, pub.name+"'s tile off screen tells the server", 10*time.Second, view+` === 'paused'`)
	hiddenPackets, hiddenBytes := rise()
	move(0)
	waitFor(t, sub, pub.name+"'s tile back on screen tells the server", 10*time.Second, view+` !== 'paused'`)
	back := time.Now()
	var backPackets int64
	for p0 := received(); time.Since(back) < 15*time.Second; time.Sleep(500 * time.Millisecond) {
		if backPackets = received() - p0; backPackets > 30 {
			break
		}
	}
	t.Logf("%s's video in %s over 3 s: shown %d packets received, %d bytes sent; off screen %d, %d; back on screen %d packets in %v",
		pub.name, sub.name, shownPackets, shownBytes, hiddenPackets, hiddenBytes, backPackets, time.Since(back).Round(100*time.Millisecond))
	if shownPackets < 30 {
		t.Fatalf("%s received %d video packets from %s over 3 s while shown; want a flowing video to compare with", sub.name, shownPackets, pub.name)
	}
	// A few packets may still come: a key frame asked for before the pause.
	if hiddenPackets > max(shownPackets/10, 5) {
		t.Errorf("%s received %d video packets from %s over 3 s with the tile off screen (%d shown); want next to none", sub.name, hiddenPackets, pub.name, shownPackets)
	}
	if hiddenBytes > shownBytes/10 {
		t.Errorf("%s sent %d bytes of video over 3 s while its only viewer's tile was off screen (%d shown); want its layers paused", pub.name, hiddenBytes, shownBytes)
	}
	if backPackets <= 30 {
		t.Errorf("%s received %d video packets from %s within 15 s of the tile coming back; want the video back", sub.name, backPackets, pub.name)
	}
}

// setup skips the test unless `make e2e` runs it (HUDDLE_BIN names the
// server), finds Chromium, and gives the test 3 minutes.
func setup(t *testing.T) (bin, chrome string, ctx context.Context) {
	t.Helper()
	bin = os.Getenv("HUDDLE_BIN")
	if bin == "" {
		t.Skip("HUDDLE_BIN is not set: run `make e2e`, which builds the server and runs this test in a loopback-only network namespace")
	}
	chrome = findChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return bin, chrome, ctx
}

// --- the server --------------------------------------------------------------

type server struct {
	base string
	cmd  *exec.Cmd
	log  *syncBuffer
}

// startServer runs `huddle serve --dev` (plus extra flags) on free
// loopback ports and waits until /healthz answers 200. The process is
// stopped (SIGTERM, then SIGKILL) when the test ends.
func startServer(ctx context.Context, t *testing.T, bin string, extra ...string) *server {
	t.Helper()
	httpPort := freePort(t, false)
	udpPort := freePort(t, true)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	s := &server{base: "http://" + addr, log: &syncBuffer{}}
	s.cmd = exec.Command(bin, append([]string{"serve", "--dev", "--listen", addr, "--udp-port", strconv.Itoa(udpPort)}, extra...)...)
	// Anything the server writes relative to its working directory stays
	// in the test's temporary directory.
	s.cmd.Dir = t.TempDir()
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Logf("started %s", strings.Join(s.cmd.Args, " "))
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop within 10 s of SIGTERM; killing it")
			_ = s.cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("server exited before it was ready: %v\n%s", err, s.log.String())
		default:
		}
		if res, err := client.Get(s.base + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("server not ready: %s/healthz did not answer 200 within 20 s\n%s", s.base, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *server) dump(t *testing.T) {
	out := s.log.String()
	if len(out) > 8000 {
		out = "…" + out[len(out)-8000:]
	}
	t.Logf("server output:\n%s", out)
}

// freePort returns a loopback port that is free now; for UDP it also
// checks TCP, since the server does ICE-TCP on the same port number.
func freePort(t *testing.T, udp bool) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !udp {
			l.Close()
			return port
		}
		c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			c.Close()
			return port
		}
	}
	t.Fatal("free port: no port free for both TCP and UDP after 20 tries")
	return 0
}

// --- the browser -------------------------------------------------------------

type browser struct {
	ctx  context.Context
	tabs []*tab
}

type tab struct {
	name string
	ctx  context.Context
	mu   sync.Mutex
	logs []string
}

func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HUDDLE_CHROMIUM"); p != "" {
		return p
	}
	for _, p := range chromiumPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium at %s: install Debian's chromium (`make deps`) or set HUDDLE_CHROMIUM", strings.Join(chromiumPaths, ", "))
	return ""
}

// startBrowser starts headless Chromium with fake camera and microphone;
// tabs come from newTab. The browser stops when the test ends.
func startBrowser(ctx context.Context, t *testing.T, chrome string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	)
	actx, stopAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(stopAlloc) // waits for the process to exit and frees the profile
	bctx, stopBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		_ = chromedp.Cancel(bctx) // closes the browser gracefully
		stopBrowser()
	})
	// Start the browser first: tabs made before it would each start one.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	return &browser{ctx: bctx}
}

// newTab opens a tab and records its console.
func (b *browser) newTab(t *testing.T, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	tb := &tab{name: name, ctx: ctx}
	messages := chromedp.Console(ctx) // opens the tab
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.logs = append(tb.logs, m.String())
			tb.mu.Unlock()
		}
	}()
	b.tabs = append(b.tabs, tb)
	return tb
}

// dump saves a screenshot of every tab in a directory that outlives the
// test, and logs the tabs' consoles.
func (b *browser) dump(t *testing.T) {
	dir, err := os.MkdirTemp("", "huddle-e2e-")
	if err != nil {
		t.Logf("screenshots: %v", err)
	} else {
		b.screenshots(t, dir)
	}
	for _, tb := range b.tabs {
		tb.mu.Lock()
		if len(tb.logs) == 0 {
			t.Logf("tab %s console: (nothing)", tb.name)
		} else {
			t.Logf("tab %s console:\n  %s", tb.name, strings.Join(tb.logs, "\n  "))
		}
		tb.mu.Unlock()
	}
}

// screenshots saves a PNG of every tab in dir ($HUDDLE_E2E_SCREENSHOTS
// asks for them on success too).
func (b *browser) screenshots(t *testing.T, dir string) {
	for _, tb := range b.tabs {
		ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Logf("tab %s: screenshot: %v", tb.name, err)
		} else {
			p := filepath.Join(dir, "tab-"+tb.name+".png")
			if err := os.WriteFile(p, png, 0o644); err != nil {
				t.Logf("tab %s: screenshot: %v", tb.name, err)
			} else {
				t.Logf("tab %s: screenshot saved to %s", tb.name, p)
			}
		}
	}
}

// eval evaluates a JavaScript expression in the tab (awaiting a promise),
// with a time limit of its own.
func eval[T any](tb *tab, js string) (T, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// waitFor polls a JavaScript condition until it is true.
func waitFor(t *testing.T, tb *tab, what string, limit time.Duration, cond string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := eval[bool](tb, "!!("+cond+")")
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("tab %s: %s: not true within %v (last error: %v)", tb.name, what, limit, lastErr)
}

// waitJoined waits until the page says it joined, and fails at once with
// the page's error when it could not.
func waitJoined(t *testing.T, tb *tab, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	state := ""
	for time.Now().Before(deadline) {
		st, err := eval[struct {
			State, Error, Media string
		}](tb, `({state: window.huddle?.state ?? '', error: window.huddle?.error ?? '', media: window.huddle?.mediaError ?? ''})`)
		if err == nil {
			state = st.State
			switch st.State {
			case "joined", "media":
				if st.Media != "" {
					t.Fatalf("tab %s: joined without camera and microphone: %s", tb.name, st.Media)
				}
				return
			case "failed":
				text, _ := eval[string](tb, `document.getElementById('overlay-text').textContent`)
				t.Fatalf("tab %s: join failed: %s (%s)", tb.name, st.Error, text)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("tab %s: not joined within %v (state %q)", tb.name, limit, state)
}

// inbound is what window.huddle.inbound() reports for one receiver.
type inbound struct {
	Kind            string `json:"kind"`
	Name            string `json:"name"`
	PacketsReceived int64  `json:"packetsReceived"`
	FramesDecoded   int64  `json:"framesDecoded"`
	FrameWidth      int64  `json:"frameWidth"`
	FrameHeight     int64  `json:"frameHeight"`
}

// sample sums, for one tab, what it receives from the named participant.
type sample struct {
	videoFrames, audioPackets int64
	width, height             int64
	videoElementWidth         int64
}

func takeSample(tb *tab, from string) (sample, error) {
	var s sample
	stats, err := eval[[]inbound](tb, `window.huddle.inbound()`)
	if err != nil {
		return s, err
	}
	for _, in := range stats {
		if in.Name != from {
			continue
		}
		switch in.Kind {
		case "video":
			s.videoFrames += in.FramesDecoded
			s.width, s.height = max(s.width, in.FrameWidth), max(s.height, in.FrameHeight)
		case "audio":
			s.audioPackets += in.PacketsReceived
		}
	}
	w, err := eval[int64](tb, fmt.Sprintf(`document.querySelector('.tile[data-name=%q] video')?.videoWidth ?? 0`, from))
	if err != nil {
		return s, err
	}
	s.videoElementWidth = w
	return s, nil
}

// checkMedia polls both tabs until each has decoded more of the other's
// video frames and received more of its audio packets than at the poll
// before, and shows the video in the other's tile.
func checkMedia(t *testing.T, a *tab, aFrom string, b *tab, bFrom string, limit time.Duration) {
	t.Helper()
	type side struct {
		tab        *tab
		from       string
		prev, last sample
		havePrev   bool
		ok         bool
	}
	sides := []*side{{tab: a, from: aFrom}, {tab: b, from: bFrom}}
	deadline := time.Now().Add(limit)
	var errs []error
	for time.Now().Before(deadline) {
		errs = errs[:0]
		done := true
		for _, s := range sides {
			if s.ok {
				continue
			}
			cur, err := takeSample(s.tab, s.from)
			if err != nil {
				errs = append(errs, fmt.Errorf("tab %s: %w", s.tab.name, err))
				done = false
				continue
			}
			if s.havePrev && s.prev.videoFrames > 0 && cur.videoFrames > s.prev.videoFrames &&
				s.prev.audioPackets > 0 && cur.audioPackets > s.prev.audioPackets && cur.videoElementWidth > 0 {
				s.ok = true
				t.Logf("tab %s receives %s: video frames decoded %d → %d (%dx%d, <video> %d px wide), audio packets %d → %d",
					s.tab.name, s.from, s.prev.videoFrames, cur.videoFrames, cur.width, cur.height, cur.videoElementWidth,
					s.prev.audioPackets, cur.audioPackets)
			} else {
				done = false
			}
			s.prev, s.last, s.havePrev = cur, cur, true
		}
		if done {
			return
		}
		time.Sleep(time.Second)
	}
	for _, s := range sides {
		if !s.ok {
			t.Errorf("tab %s: no rising media from %s within %v: last video frames decoded %d, audio packets %d, <video> width %d",
				s.tab.name, s.from, limit, s.last.videoFrames, s.last.audioPackets, s.last.videoElementWidth)
		}
	}
	t.Fatalf("media check failed: %v", errors.Join(errs...))
}

// syncBuffer is a bytes.Buffer that the server's output can be written to
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
