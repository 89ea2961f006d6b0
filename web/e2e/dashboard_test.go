package e2e

import (
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboard fills a room with bots (one publisher, two subscribers),
// opens /dashboard and checks that it lists the room and its three
// participants as online, the publisher's uplink quality and loss and the
// subscribers' downlink quality, and that its charts draw data points
// (uPlot's data and painted canvas pixels); then a person joins the call page,
// sees presence dots on the bots' tiles, sets a busy status, and the
// dashboard shows it.
func TestDashboard(t *testing.T) {
	bin, chrome, ctx := setup(t)
	start := time.Now()
	srv := startServer(ctx, t, bin)

	const room = "dash"
	bots := exec.Command(bin, "bots", "--url", srv.base, "--room", room, "--publishers", "1", "--subscribers", "2",
		"--video", "vp8_180p.ivf", "--duration", "90s")
	bots.Dir = t.TempDir()
	botLog := &syncBuffer{}
	bots.Stdout, bots.Stderr = botLog, botLog
	if err := bots.Start(); err != nil {
		t.Fatalf("start bots: %v", err)
	}
	botsDone := make(chan struct{})
	go func() { _ = bots.Wait(); close(botsDone) }()
	t.Cleanup(func() {
		_ = bots.Process.Kill()
		<-botsDone
	})

	b := startBrowser(ctx, t, chrome)
	dash := b.newTab(t, "dashboard")
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := eval[string](dash, `JSON.stringify(window.dashboard.log, null, 1)`); err == nil {
				t.Logf("dashboard log: %s", log)
			}
			b.dump(t)
			srv.dump(t)
			t.Logf("bots:\n%s", botLog.String())
		}
	})
	if err := chromedp.Do(dash.ctx, chromedp.Navigate(srv.base+"/dashboard")); err != nil {
		t.Fatalf("navigate to /dashboard: %v", err)
	}
	waitFor(t, dash, "the feed is live", 20*time.Second, `window.dashboard.state === 'live'`)
	sel := `document.querySelector('article.room[data-room="` + room + `"]')`
	waitFor(t, dash, "the room and its 3 bots, online", 30*time.Second,
		`(() => { const r = window.dashboard.rooms().find(r => r.name === '`+room+`');
		  return r && r.participants.length === 3 && r.participants.every(p => p.state === 'online') &&
		    `+sel+`.querySelectorAll('table.people tbody tr').length === 3; })()`)
	t.Logf("dashboard lists the room and its 3 online bots after %v", time.Since(start).Round(time.Millisecond))

	// Quality: the publisher's uplink (score, level and loss) next to the
	// downlink; the subscribers publish nothing and have no uplink.
	waitFor(t, dash, "the publishing bot's uplink, the subscribers' downlink", 20*time.Second,
		`(() => { const rows = [...`+sel+`.querySelectorAll('table.people tbody tr')];
		  const pub = rows.find(tr => tr.dataset.identity === 'bot-pub-1'), subs = rows.filter(tr => tr.dataset.identity.startsWith('bot-sub-'));
		  const up = pub && pub.querySelector('td.uplink');
		  return up && /^\d\.\d (excellent|good|poor)\d+\.\d % loss$/.test(up.textContent) && up.dataset.level !== 'lost' &&
		    subs.length === 2 && subs.every(tr => tr.querySelector('td.uplink').textContent === '–' && /^\d\.\d (excellent|good|poor)$/.test(tr.cells[6].textContent)); })()`)
	cells, _ := eval[string](dash, `JSON.stringify([...`+sel+`.querySelectorAll('table.people tbody tr')].map(tr => [tr.dataset.identity, tr.cells[6].textContent, tr.cells[7].textContent, tr.cells[7].title]))`)
	t.Logf("downlink and uplink per bot: %s", cells)

	// The charts: at least 3 samples for 3 participants, and pixels painted.
	waitFor(t, dash, "the room's bit-rate chart has data points", 30*time.Second,
		`window.dashboard.points('`+room+`') >= 3 && window.dashboard.series('`+room+`') === 3 && window.dashboard.points() >= 3`)
	painted, err := eval[int](dash, `(() => {
		const c = `+sel+`.querySelector('.chart canvas');
		const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		let n = 0;
		for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
		return n; })()`)
	if err != nil || painted == 0 {
		t.Fatalf("bit-rate canvas: %d painted pixels, %v", painted, err)
	}
	// The server's loss and RTT have a chart of their own, each on its
	// own axis (not flattened under the bit rate's).
	scales, err := eval[[]string](dash, `window.dashboard.serverScales()`)
	if err != nil || len(scales) != 2 || scales[0] != "%" || scales[1] != "ms" {
		t.Errorf("server loss/RTT chart scales %q (%v); want loss on %% and RTT on ms", scales, err)
	}
	points, _ := eval[int](dash, `window.dashboard.points('`+room+`')`)
	kbps, _ := eval[string](dash, `JSON.stringify([...`+sel+`.querySelectorAll('table.people tbody tr')].map(tr => [...tr.cells].slice(2, 6).map(td => td.textContent)))`)
	t.Logf("charts: %d samples, %d painted pixels; up/down kbit/s, loss %%, RTT ms per bot: %s", points, painted, kbps)

	// A person on the call page: presence dots on the bots' tiles; a busy
	// status shows on the dashboard.
	call := b.newTab(t, "Eve")
	if err := chromedp.Do(call.ctx, chromedp.Navigate(srv.base+"/r/"+url.PathEscape(room)+"?name=Eve")); err != nil {
		t.Fatalf("navigate to the call page: %v", err)
	}
	waitJoined(t, call, 20*time.Second)
	waitFor(t, call, "online dots on the bots' tiles", 15*time.Second,
		`document.querySelectorAll('.tile[data-presence="online"] .presence-dot').length >= 3`)
	if _, err := eval[bool](call, `(window.huddle.client.setStatus('busy', 'in review'), true)`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, call, "Eve's own tile shows busy and the text", 10*time.Second,
		`(() => { const t = document.querySelector('.tile.self'); return t && t.dataset.presence === 'busy' &&
		  t.querySelector('.presence-text').textContent === 'in review'; })()`)
	waitFor(t, dash, "the dashboard shows Eve busy", 10*time.Second,
		`window.dashboard.rooms().find(r => r.name === '`+room+`').participants.some(p => p.name === 'Eve' && p.state === 'busy') &&
		 `+sel+`.textContent.includes('in review')`)
	n, _ := eval[int](dash, `window.dashboard.events`)
	t.Logf("dashboard got %d events; total %v", n, time.Since(start).Round(time.Millisecond))
	if dir := os.Getenv("HUDDLE_E2E_SCREENSHOTS"); dir != "" {
		b.screenshots(t, dir)
	}
}
