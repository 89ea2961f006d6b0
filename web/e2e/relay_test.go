package e2e

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// selectedPairsJS reports, for the publish and the subscribe
// PeerConnection of the page, "<local type>/<relay protocol>-><remote
// type>" of the selected candidate pair.
const selectedPairsJS = `(async () => {
  const out = [];
  for (const pc of [window.huddle.client.publisher, window.huddle.client.subscriber]) {
    if (!pc) { out.push('none'); continue; }
    const stats = await pc.getStats();
    let id = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) id = s.selectedCandidatePairId; });
    const pair = id && stats.get(id);
    const l = pair && stats.get(pair.localCandidateId);
    const r = pair && stats.get(pair.remoteCandidateId);
    out.push(l && r ? l.candidateType + '/' + (l.relayProtocol || '') + '->' + r.candidateType : 'nopair');
  }
  return out;
})()`

// TestCallRelay is TestCall's media check with the page's ICE policy set
// to relay (?ice=relay): both tabs reach the SFU only through the
// server's embedded TURN server, with the credential joined gave them.
func TestCallRelay(t *testing.T) {
	bin, chrome, ctx := setup(t)
	start := time.Now()
	turnPort := freePort(t, true)
	srv := startServer(ctx, t, bin, "--turn-port", strconv.Itoa(turnPort))
	b := startBrowser(ctx, t, chrome)
	tabA := b.newTab(t, "A")
	tabB := b.newTab(t, "B")
	t.Cleanup(func() {
		if t.Failed() {
			b.dump(t)
			srv.dump(t)
		}
	})
	for _, tab := range []*tab{tabA, tabB} {
		u := srv.base + "/r/relay?ice=relay&name=" + url.QueryEscape(tab.name)
		if err := chromedp.Do(tab.ctx, chromedp.Navigate(u)); err != nil {
			t.Fatalf("tab %s: navigate to %s: %v", tab.name, u, err)
		}
	}
	for _, tab := range []*tab{tabA, tabB} {
		waitJoined(t, tab, 20*time.Second)
		ice, err := eval[[]struct {
			URLs     []string `json:"urls"`
			Username string   `json:"username"`
		}](tab, `window.huddle.client.iceServers`)
		want := "turn:127.0.0.1:" + strconv.Itoa(turnPort) + "?transport=udp"
		if err != nil || len(ice) != 1 || len(ice[0].URLs) == 0 || ice[0].URLs[0] != want || !strings.HasSuffix(ice[0].Username, ":"+identityOf(t, tab)) {
			t.Fatalf("tab %s: iceServers %+v (%v); want %s with a credential for its identity", tab.name, ice, err, want)
		}
	}
	checkMedia(t, tabA, "B", tabB, "A", 30*time.Second)
	for _, tab := range []*tab{tabA, tabB} {
		pairs, err := eval[[]string](tab, selectedPairsJS)
		if err != nil {
			t.Fatalf("tab %s: selected pairs: %v", tab.name, err)
		}
		for i, p := range pairs {
			if !strings.HasPrefix(p, "relay/") {
				t.Errorf("tab %s: %s transport's selected pair %s; want a relay local candidate", tab.name, []string{"publish", "subscribe"}[i], p)
			}
		}
		t.Logf("tab %s: selected pairs (publish, subscribe): %v", tab.name, pairs)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// identityOf is the identity the server gave the tab's participant.
func identityOf(t *testing.T, tb *tab) string {
	t.Helper()
	id, err := eval[string](tb, `window.huddle.client.you.identity`)
	if err != nil || id == "" {
		t.Fatalf("tab %s: identity: %q, %v", tb.name, id, err)
	}
	return id
}
