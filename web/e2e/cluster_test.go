package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/huddle-rtc/huddle/internal/redistest"
)

// TestCallCluster runs two nodes on one redis-server. Tab A joins through
// node 1; tab B opens the same room through the node that does not serve
// it: the join is redirected, the page moves to the room's node (its CSP
// allows only its own origin), and each tab decodes the other's media.
// Then the room's node is killed (kill -9): both tabs move to the other
// node by themselves and media flows again.
func TestCallCluster(t *testing.T) {
	bin := os.Getenv("HUDDLE_BIN")
	if bin == "" {
		t.Skip("HUDDLE_BIN is not set: run `make e2e`, which builds the server and runs this test in a loopback-only network namespace")
	}
	chrome := findChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	redisURL := "redis://" + redistest.Start(t) + "/0"
	n1 := startServer(ctx, t, bin, "--turn=false", "--redis", redisURL, "--node-id", "n1", "--lease-ttl", "3s")
	n2 := startServer(ctx, t, bin, "--turn=false", "--redis", redisURL, "--node-id", "n2", "--lease-ttl", "3s")
	b := startBrowser(ctx, t, chrome)
	tabA := b.newTab(t, "A")
	tabB := b.newTab(t, "B")
	t.Cleanup(func() {
		if t.Failed() {
			b.dump(t)
			n1.dump(t)
			n2.dump(t)
		}
	})
	const room = "cluster"
	open := func(tb *tab, base string) {
		u := base + "/r/" + room + "?name=" + url.QueryEscape(tb.name)
		if err := chromedp.Do(tb.ctx, chromedp.Navigate(u)); err != nil {
			t.Fatalf("tab %s: navigate to %s: %v", tb.name, u, err)
		}
		waitJoined(t, tb, 20*time.Second)
	}
	served := func(tb *tab) string {
		u, err := eval[string](tb, `window.huddle.client.url`)
		if err != nil {
			t.Fatalf("tab %s: client url: %v", tb.name, err)
		}
		return u
	}
	open(tabA, n1.base)
	owner := served(tabA)
	other := n2.base
	if strings.Contains(owner, strings.TrimPrefix(n2.base, "http://")) {
		other = n1.base
	}
	open(tabB, other)
	if got := served(tabB); got != owner {
		t.Fatalf("tab B joined at %s; want it redirected to the room's node %s", got, owner)
	}
	if page, err := eval[string](tabB, `location.href`); err != nil || strings.Contains(page, "hop=") || !strings.Contains(owner, strings.TrimPrefix(strings.SplitN(page, "/r/", 2)[0], "http://")) {
		t.Errorf("tab B's page is %s (%v); want the room's node, without the hop count", page, err)
	}
	t.Logf("tab A on %s; tab B opened %s and was sent there", owner, other)
	checkMedia(t, tabA, "B", tabB, "A", 30*time.Second)

	// Failover: the room's node dies (kill -9). Each tab finds its origin
	// gone, loads the page from the other node (listed in joined), waits
	// there for the dead node's lease to expire, and is back in the room
	// on that node, with the same identity, and media flows again.
	dead, live := n1, n2
	if other == n1.base {
		dead, live = n2, n1
	}
	identity := map[*tab]string{}
	for _, tb := range []*tab{tabA, tabB} {
		nodes, err := eval[[]string](tb, `window.huddle.client.nodes`)
		if err != nil || !slices.Contains(nodes, live.base) {
			t.Fatalf("tab %s: joined lists nodes %v (%v); want %s among them", tb.name, nodes, err, live.base)
		}
		if identity[tb], err = eval[string](tb, `window.huddle.client.you.identity`); err != nil {
			t.Fatalf("tab %s: identity: %v", tb.name, err)
		}
	}
	if err := dead.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 the room's node: %v", err)
	}
	killed := time.Now()
	for _, tb := range []*tab{tabA, tabB} {
		waitFor(t, tb, "back in the room on the live node", 40*time.Second,
			fmt.Sprintf(`location.origin === %q && ['joined', 'media'].includes(window.huddle.state) &&
			 window.huddle.client?.connectionState === 'joined'`, live.base))
		if got, err := eval[string](tb, `window.huddle.client.you.identity`); err != nil || got != identity[tb] {
			t.Errorf("tab %s: identity after the failover %q (%v); want %q as before", tb.name, got, err, identity[tb])
		}
		if page, err := eval[string](tb, `location.href`); err != nil || strings.Contains(page, "lost=") || strings.Contains(page, "identity=") {
			t.Errorf("tab %s: page after the failover is %s (%v); want it without lost= and identity=", tb.name, page, err)
		}
		t.Logf("tab %s back in the room on %s %v after the kill", tb.name, live.base, time.Since(killed).Round(time.Millisecond))
	}
	checkMedia(t, tabA, "B", tabB, "A", 30*time.Second)
	t.Logf("media flows again %v after the kill", time.Since(killed).Round(time.Millisecond))
}
