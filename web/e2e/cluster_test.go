package e2e

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/huddle-rtc/huddle/internal/redistest"
)

// TestCallCluster runs three nodes on one redis-server. Tab A joins
// through node 1; tab B opens the same room through a node that does not
// serve it: the join is redirected, the page moves to the room's node, and
// each tab decodes the other's media. Then the room's node and one other
// are killed (kill -9): both tabs check the nodes they know, move to the
// one that answers by themselves, and media flows again.
func TestCallCluster(t *testing.T) {
	bin, chrome, ctx := setup(t)
	redisURL := "redis://" + redistest.Start(t) + "/0"
	n1 := startServer(ctx, t, bin, "--turn=false", "--redis", redisURL, "--node-id", "n1", "--lease-ttl", "3s")
	n2 := startServer(ctx, t, bin, "--turn=false", "--redis", redisURL, "--node-id", "n2", "--lease-ttl", "3s")
	n3 := startServer(ctx, t, bin, "--turn=false", "--redis", redisURL, "--node-id", "n3", "--lease-ttl", "3s")
	nodes := []*server{n1, n2, n3}
	b := startBrowser(ctx, t, chrome)
	tabA := b.newTab(t, "A")
	tabB := b.newTab(t, "B")
	t.Cleanup(func() {
		if t.Failed() {
			b.dump(t)
			for _, n := range nodes {
				n.dump(t)
			}
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
	// The room's node, and the two others: tab B opens the room on one
	// of them and is sent to the room's node.
	var ownerNode *server
	var others []*server
	for _, n := range nodes {
		if strings.Contains(owner, strings.TrimPrefix(n.base, "http://")) {
			ownerNode = n
		} else {
			others = append(others, n)
		}
	}
	if ownerNode == nil || len(others) != 2 {
		t.Fatalf("the room is on %s, not one of the three nodes", owner)
	}
	other := others[0].base
	open(tabB, other)
	if got := served(tabB); got != owner {
		t.Fatalf("tab B joined at %s; want it redirected to the room's node %s", got, owner)
	}
	if page, err := eval[string](tabB, `location.href`); err != nil || strings.Contains(page, "hop=") || !strings.Contains(owner, strings.TrimPrefix(strings.SplitN(page, "/r/", 2)[0], "http://")) {
		t.Errorf("tab B's page is %s (%v); want the room's node, without the hop count", page, err)
	}
	t.Logf("tab A on %s; tab B opened %s and was sent there", owner, other)
	checkMedia(t, tabA, "B", tabB, "A", 30*time.Second)

	// Failover: the room's node and one other die (kill -9). Each tab
	// finds its origin gone, checks the other nodes listed in joined,
	// loads the page from the one that answers, waits there for the dead
	// node's lease to expire, and is back in the room on that node, with
	// the same identity, and media flows again.
	live := others[1]
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
	for _, dead := range []*server{ownerNode, others[0]} {
		if err := dead.cmd.Process.Kill(); err != nil {
			t.Fatalf("kill -9 %s: %v", dead.base, err)
		}
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
