package e2e

import (
	"context"
	"net/url"
	"os"
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
}
