// The race detector slows Pion down several times over, which these
// timing measurements cannot survive; `make netns` (part of `make test`)
// runs them without it.

//go:build !race

package bots

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/quality"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// The tests here put a subscriber bot behind an impaired link: a network
// namespace joined to the test's namespace by a veth pair, with a tbf rate
// limit on the server's side of the link (server → subscriber) or nft
// drops on the subscriber's side. They need root (to create namespaces),
// ip and tc (iproute2) and, for loss, nft (nftables); `make deps` installs
// them and CI runs the tests as root. The subscriber behind the link is
// this test binary run again inside the namespace (TestNetnsSubscriber).

const (
	netnsKey    = "netns-test-key"
	netnsSecret = "netns-test-secret-netns-test-secret-0123"
)

// netLink is a namespace with a veth pair to the test's namespace.
type netLink struct {
	ns         string
	hostDev    string // the test's end
	hostIP     string
	subIP      string
	subDev     string
	clientNext int
}

func needNetns(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("impaired-network test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("impaired-network test: needs root to create network namespaces (ip netns) and shape traffic (tc, nft); run as root (CI does)")
	}
	for _, tool := range append([]string{"ip", "tc"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("impaired-network test: %s is not installed (make deps installs iproute2 and nftables)", tool)
		}
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetLink creates the namespace and the veth pair, on a subnet of its
// own, and removes them when the test ends.
func newNetLink(t *testing.T) *netLink {
	t.Helper()
	id := os.Getpid()%200 + 20 + rand.IntN(30)
	l := &netLink{
		ns:      fmt.Sprintf("hdl%d", id),
		hostDev: fmt.Sprintf("hdlh%d", id),
		hostIP:  fmt.Sprintf("10.213.%d.1", id),
		subIP:   fmt.Sprintf("10.213.%d.2", id),
	}
	subDev := fmt.Sprintf("hdls%d", id)
	l.subDev = subDev
	_ = exec.Command("ip", "netns", "del", l.ns).Run() // a leftover of a killed run
	_ = exec.Command("ip", "link", "del", l.hostDev).Run()
	run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", l.hostDev).Run()
		_ = exec.Command("ip", "netns", "del", l.ns).Run()
	})
	run(t, "ip", "link", "add", l.hostDev, "type", "veth", "peer", "name", subDev, "netns", l.ns)
	run(t, "ip", "addr", "add", l.hostIP+"/24", "dev", l.hostDev)
	run(t, "ip", "link", "set", l.hostDev, "up")
	run(t, "ip", "-n", l.ns, "addr", "add", l.subIP+"/24", "dev", subDev)
	run(t, "ip", "-n", l.ns, "link", "set", subDev, "up")
	run(t, "ip", "-n", l.ns, "link", "set", "lo", "up")
	return l
}

// limit shapes the server → subscriber direction to rate (tc tbf).
func (l *netLink) limit(t *testing.T, rate string) {
	t.Helper()
	run(t, "tc", "qdisc", "replace", "dev", l.hostDev, "root", "tbf", "rate", rate, "burst", "8kb", "latency", "100ms")
}

// drop makes the subscriber's side drop a share (per mille) of what
// arrives from the server (nft netdev ingress, numgen random).
func (l *netLink) drop(t *testing.T, perMille int) {
	t.Helper()
	l.nft(t, fmt.Sprintf("table netdev imp {\n chain in {\n  type filter hook ingress device %q priority 0; policy accept;\n  numgen random mod 1000 < %d counter drop\n }\n}\n", l.subDev, perMille))
}

// dropOut makes the namespace's side drop a share (per mille) of what it
// sends to the server (nft netdev egress, numgen random): a lossy uplink.
func (l *netLink) dropOut(t *testing.T, perMille int) {
	t.Helper()
	l.nft(t, fmt.Sprintf("table netdev impout {\n chain out {\n  type filter hook egress device %q priority 0; policy accept;\n  numgen random mod 1000 < %d counter drop\n }\n}\n", l.subDev, perMille))
}

// nft loads rules into the namespace.
func (l *netLink) nft(t *testing.T, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
}

func (l *netLink) unlimit(t *testing.T) {
	t.Helper()
	run(t, "tc", "qdisc", "del", "dev", l.hostDev, "root")
}

// nsBot is a bot run in the namespace: this test binary again, running
// TestNetnsSubscriber or TestNetnsPublisher.
type nsBot struct {
	cmd  *exec.Cmd
	out  syncBuffer
	errs syncBuffer
	done chan error
}

// startSubscriber runs a subscriber bot in the namespace for d; its wait
// returns its timeline when it ends.
func (l *netLink) startSubscriber(t *testing.T, base string, d time.Duration, maxLayer string) *nsBot {
	t.Helper()
	return l.startBot(t, "TestNetnsSubscriber", "HUDDLE_NETNS_URL="+base, "HUDDLE_NETNS_DURATION="+d.String(), "HUDDLE_NETNS_MAX_LAYER="+maxLayer)
}

func (l *netLink) startBot(t *testing.T, test string, env ...string) *nsBot {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &nsBot{done: make(chan error, 1)}
	s.cmd = exec.Command("ip", "netns", "exec", l.ns, exe, "-test.run=^"+test+"$", "-test.v", "-test.timeout=3m")
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.errs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

func (s *nsBot) wait(t *testing.T, within time.Duration) []TimelineEntry {
	t.Helper()
	s.end(t, within)
	return parseTimeline(s.out.String())
}

// end waits for the bot to end, and fails the test if it failed.
func (s *nsBot) end(t *testing.T, within time.Duration) {
	t.Helper()
	ended, err := s.exited(within)
	if !ended {
		t.Fatalf("bot in the namespace did not end within %v", within)
	}
	if err != nil {
		t.Fatalf("bot in the namespace: %v\n%s\n%s", err, s.out.String(), s.errs.String())
	}
}

// exited waits up to within for the bot to end and returns how it ended;
// the result stays there for the test's cleanup.
func (s *nsBot) exited(within time.Duration) (ended bool, err error) {
	select {
	case err := <-s.done:
		s.done <- err
		return true, err
	case <-time.After(within):
		return false, nil
	}
}

func parseTimeline(text string) []TimelineEntry {
	var out []TimelineEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, `{"t":`) {
			continue
		}
		var e TimelineEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// TestNetnsSubscriber is the subscriber that the impaired-network tests
// run inside their namespace; on its own it does nothing.
func TestNetnsSubscriber(t *testing.T) {
	runNetnsBot(t, Config{Subscribers: 1, MaxLayer: os.Getenv("HUDDLE_NETNS_MAX_LAYER"), Timeline: os.Stdout, Seed: 7})
}

// TestNetnsPublisher is the publisher that TestUplinkLossReported runs
// inside its namespace; it prints its report as JSON. On its own it does
// nothing.
func TestNetnsPublisher(t *testing.T) {
	r := runNetnsBot(t, Config{Publishers: 1, Video: ClipMedium, Seed: 9})
	_ = r.WriteJSON(os.Stdout)
}

// runNetnsBot runs the bots of cfg against the server and for the time
// that the test in the host's namespace set.
func runNetnsBot(t *testing.T, cfg Config) *Report {
	base := os.Getenv("HUDDLE_NETNS_URL")
	if base == "" {
		t.Skip("run by the impaired-network tests inside a namespace")
	}
	d, err := time.ParseDuration(os.Getenv("HUDDLE_NETNS_DURATION"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL, cfg.Room, cfg.Duration = base, "netns", d
	if room := os.Getenv("HUDDLE_NETNS_ROOM"); room != "" {
		cfg.Room = room
	}
	cfg.APIKey, cfg.APISecret = netnsKey, netnsSecret
	return runBots(t, cfg)
}

// startNetnsRoom starts the server on the host end of the link and, in
// this process, a simulcast publisher and a clean subscriber for d; the
// returned function waits for them and returns the clean timeline.
func startNetnsRoom(t *testing.T, l *netLink, d time.Duration, simulcast bool) (string, func() ([]TimelineEntry, *Report)) {
	t.Helper()
	return startNetnsRoomWith(t, l, d, Config{Simulcast: simulcast})
}

// startNetnsRoomWith is startNetnsRoom with the publisher's media from
// media (Simulcast, Video).
func startNetnsRoomWith(t *testing.T, l *netLink, d time.Duration, media Config) (string, func() ([]TimelineEntry, *Report)) {
	t.Helper()
	base := startServerAt(t, l.hostIP, "--api-key", netnsKey, "--api-secret", netnsSecret, "--log-level", "debug")
	var tl syncBuffer
	done := goRun(t, Config{
		URL: base, Room: "netns", Publishers: 1, Subscribers: 1, Simulcast: media.Simulcast, Video: media.Video, Duration: d,
		Timeline: &tl, Seed: 5,
	})
	return base, func() ([]TimelineEntry, *Report) {
		rep := done()
		return parseTimeline(tl.String()), rep
	}
}

// goRun starts the bots of cfg in this process, with the tests' key; the
// returned function waits for their report.
func goRun(t *testing.T, cfg Config) func() *Report {
	t.Helper()
	cfg.APIKey, cfg.APISecret = netnsKey, netnsSecret
	var rep *Report
	var runErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+30*time.Second)
		defer cancel()
		rep, runErr = Run(ctx, cfg)
	}()
	return func() *Report {
		t.Helper()
		wg.Wait()
		if runErr != nil {
			t.Fatal(runErr)
		}
		return rep
	}
}

// layerAt returns the entries from (inclusive) and to (exclusive), by wall
// clock.
func between(es []TimelineEntry, from, to time.Time) []TimelineEntry {
	var out []TimelineEntry
	for _, e := range es {
		if e.UnixMS >= from.UnixMilli() && e.UnixMS < to.UnixMilli() {
			out = append(out, e)
		}
	}
	return out
}

func summary(es []TimelineEntry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%5.1fs %-1s %4d pkts %3d lost est %5d kbit/s nacks %d plis %d score %.1f\n", e.T, orDash(e.Layer), e.Packets, e.Lost, e.EstKbps, e.NACKs, e.PLIs, e.Score)
	}
	return b.String()
}

// TestSimulcastAdaptsToRateLimit is (a) and (b): a subscriber behind
// 400 kbit/s goes to the low layer within 5 s and then loses under 3 % of
// its packets while a clean subscriber in the room stays on the top layer;
// when the limit is lifted it climbs back to the top layer within 20 s.
func TestSimulcastAdaptsToRateLimit(t *testing.T) {
	needNetns(t)
	l := newNetLink(t)
	l.limit(t, "400kbit")
	const total = 42 * time.Second
	base, wait := startNetnsRoom(t, l, total, true)
	time.Sleep(time.Second) // the publisher first
	start := time.Now()
	sub := l.startSubscriber(t, base, total-3*time.Second, "")

	const limited = 16 * time.Second
	time.Sleep(limited)
	lifted := time.Now()
	l.unlimit(t)
	limitedTL := sub.wait(t, total+20*time.Second)
	clean, rep := wait()
	t.Logf("limited subscriber (limit lifted at %.1fs):\n%s", lifted.Sub(start).Seconds(), summary(limitedTL))
	if rep != nil {
		var out bytes.Buffer
		_ = rep.WriteText(&out)
		t.Logf("clean run:\n%s", out.String())
	}

	// (a) Down to q within 5 s of the first media, and it stays there.
	var firstMedia, onLow time.Time
	for _, e := range between(limitedTL, start, lifted) {
		at := time.UnixMilli(e.UnixMS)
		if firstMedia.IsZero() && e.Packets > 0 {
			firstMedia = at
		}
		if e.Layer == "q" && onLow.IsZero() {
			onLow = at
		} else if e.Layer != "q" {
			onLow = time.Time{}
		}
	}
	if firstMedia.IsZero() || onLow.IsZero() {
		t.Fatalf("the limited subscriber never settled on q before the limit was lifted")
	}
	if d := onLow.Sub(firstMedia); d > 5*time.Second {
		t.Errorf("the limited subscriber reached q %.1fs after its first media; want within 5 s", d.Seconds())
	}
	// From 2 s after it reached q, by when the packets were sent: a
	// timeline entry counts a packet lost when its recovery window closes,
	// a window after it went missing (the loss of the switch itself, the
	// top layer's burst into the full queue, reads up to 3 s after).
	var pkts, lost uint64
	for _, e := range between(limitedTL, onLow.Add(2*time.Second+quality.DefaultRecoveryWindow), lifted) {
		pkts += e.Packets
		lost += e.Lost
	}
	if pkts == 0 || float64(lost) > 0.03*float64(pkts+lost) {
		t.Errorf("on q behind the limit: %d packets, %d lost; want under 3 %% loss", pkts, lost)
	}
	cleanWin := between(clean, onLow, lifted)
	top := 0
	for _, e := range cleanWin {
		if e.Layer == "f" {
			top++
		}
	}
	if len(cleanWin) == 0 || top < len(cleanWin)*9/10 {
		t.Errorf("the clean subscriber was on f for %d of %d seconds while the other was limited:\n%s", top, len(cleanWin), summary(cleanWin))
	}

	// (b) Back on f within 20 s of the lift.
	var backOnTop time.Time
	for _, e := range between(limitedTL, lifted, lifted.Add(time.Minute)) {
		if e.Layer == "f" {
			backOnTop = time.UnixMilli(e.UnixMS)
			break
		}
	}
	if backOnTop.IsZero() {
		t.Fatalf("the subscriber did not climb back to f after the lift")
	}
	if d := backOnTop.Sub(lifted); d > 20*time.Second {
		t.Errorf("back on f %.1fs after the lift; want within 20 s", d.Seconds())
	} else {
		t.Logf("back on f %.1fs after the lift", d.Seconds())
	}
}

var _ = strconv.Itoa

// TestREMBCapsPublisherWithoutSimulcast is (d): a publisher without
// simulcast whose only subscriber is behind 400 kbit/s is told by REMB to
// send no more than the subscriber takes.
func TestREMBCapsPublisherWithoutSimulcast(t *testing.T) {
	needNetns(t)
	l := newNetLink(t)
	l.limit(t, "400kbit")
	base := startServerAt(t, l.hostIP, "--api-key", netnsKey, "--api-secret", netnsSecret, "--log-level", "debug")
	const total = 14 * time.Second
	done := goRun(t, Config{URL: base, Room: "netns", Publishers: 1, Video: ClipHigh, Duration: total, Seed: 5})
	time.Sleep(time.Second)
	sub := l.startSubscriber(t, base, total-3*time.Second, "")
	tl := sub.wait(t, total+20*time.Second)
	rep := done()
	var out bytes.Buffer
	_ = rep.WriteText(&out)
	t.Logf("publisher:\n%s\nsubscriber:\n%s", out.String(), summary(tl))
	if rep.REMBKbps.Min <= 0 || rep.REMBKbps.Min > 400 {
		t.Errorf("REMB to the publisher: %+v kbit/s; want it capped at no more than the subscriber's 400 kbit/s", rep.REMBKbps)
	}
}

// decodableVideo checks that a subscriber's timeline, after its first 3
// seconds, is a video stream with keyframes and under 1 % of its packets
// missing after NACK recovery.
func decodableVideo(t *testing.T, who string, tl []TimelineEntry) {
	t.Helper()
	var pkts, lost uint64
	keyframes := false
	for _, e := range tl[min(3, len(tl)):] {
		pkts += e.Packets
		lost += e.Lost
		keyframes = keyframes || e.Layer != ""
	}
	if pkts < 200 || !keyframes {
		t.Fatalf("%s got %d video packets (keyframes seen: %v); want a stream", who, pkts, keyframes)
	}
	if float64(lost) > 0.01*float64(pkts+lost) {
		t.Errorf("%s: residual video loss %d of %d after NACK recovery; want under 1 %%", who, lost, pkts+lost)
	}
}

// TestNACKRecoversRandomLoss is (c): a subscriber that loses 5 % of what
// arrives keeps decodable video (NACK retransmissions leave under 1 %
// missing) and scores lower than a clean subscriber in the same room.
func TestNACKRecoversRandomLoss(t *testing.T) {
	needNetns(t, "nft")
	l := newNetLink(t)
	l.drop(t, 50)
	const total = 16 * time.Second
	base, wait := startNetnsRoomWith(t, l, total, Config{Video: ClipMedium})
	time.Sleep(time.Second)
	sub := l.startSubscriber(t, base, total-3*time.Second, "")
	lossy := sub.wait(t, total+20*time.Second)
	clean, rep := wait()
	var out bytes.Buffer
	_ = rep.WriteText(&out)
	t.Logf("lossy subscriber:\n%s\nclean run:\n%s\nclean timeline:\n%s", summary(lossy), out.String(), summary(clean))

	decodableVideo(t, "the lossy subscriber", lossy)
	if n := len(lossy); n == 0 || lossy[n-1].NACKs == 0 {
		t.Errorf("no NACKs counted by the server")
	}
	avg := func(es []TimelineEntry) float64 {
		var s float64
		n := 0
		for _, e := range es[len(es)/2:] {
			if e.Score > 0 {
				s += e.Score
				n++
			}
		}
		if n == 0 {
			return 0
		}
		return s / float64(n)
	}
	ls, cs := avg(lossy), avg(clean)
	if ls == 0 || cs == 0 || ls >= cs {
		t.Errorf("quality score: lossy %.2f, clean %.2f; want the lossy one lower", ls, cs)
	}
}

// TestUplinkLossReported: a publisher whose packets to the server are 5 %
// dropped is told so in its own quality messages, and its subscriber is
// not blamed. The server reports loss after retransmissions, so the video
// track, which the server NACKs, recovers nearly all of it while audio
// (Opus, not retransmitted) keeps the 5 %: the uplink (its worst track)
// reads about 5 % and scores lower than a clean publisher's. A clean
// subscriber of the lossy publisher still gets video with under 1 %
// missing, and its own downlink score stays excellent: the server takes
// the publisher's loss out of what the subscriber's receiver reports say.
func TestUplinkLossReported(t *testing.T) {
	needNetns(t, "nft")
	l := newNetLink(t)
	l.dropOut(t, 50)
	base := startServerAt(t, l.hostIP, "--api-key", netnsKey, "--api-secret", netnsSecret, "--log-level", "debug")
	const total = 22 * time.Second // 19 s of the lossy publisher: the median score below steadies
	var tl syncBuffer
	subDone := goRun(t, Config{URL: base, Room: "netns", Subscribers: 1, Duration: total, Timeline: &tl, Seed: 5})
	cleanDone := goRun(t, Config{URL: base, Room: "clean", Publishers: 1, Video: ClipMedium, Duration: total, Seed: 6})
	time.Sleep(time.Second)
	pub := l.startBot(t, "TestNetnsPublisher", "HUDDLE_NETNS_URL="+base, "HUDDLE_NETNS_DURATION="+(total-3*time.Second).String())
	pub.end(t, total+20*time.Second)
	subRep, cleanRep := subDone(), cleanDone()
	sub := parseTimeline(tl.String())
	var lossy *Report
	for line := range strings.Lines(pub.out.String()) {
		if strings.HasPrefix(line, `{"participants":`) {
			lossy = new(Report)
			if err := json.Unmarshal([]byte(line), lossy); err != nil {
				t.Fatalf("the lossy publisher's report: %v\n%s", err, line)
			}
		}
	}
	if lossy == nil {
		t.Fatalf("the lossy publisher printed no report:\n%s\n%s", pub.out.String(), pub.errs.String())
	}
	var out bytes.Buffer
	_ = subRep.WriteText(&out)
	_ = cleanRep.WriteText(&out)
	t.Logf("lossy publisher uplink: %s\nclean publisher uplink: %s\nsubscriber and clean publisher:\n%s\nsubscriber timeline:\n%s",
		lossy.Uplink, cleanRep.Uplink, out.String(), summary(sub))

	// What the lossy publisher was told.
	up, clean := lossy.Uplink, cleanRep.Uplink
	if up.Reports == 0 || clean.Reports == 0 {
		t.Fatalf("uplink reports: lossy publisher %d, clean publisher %d; want some each", up.Reports, clean.Reports)
	}
	// Near the 5 % dropped: an interval holds some 100 audio packets, so
	// one reading is 5 ± 2.2 %; messages go out only when it moves by a
	// point or more, and a reading stands until then.
	if up.LossPctP50 < 1.5 || up.LossPctP50 > 9 || up.LossPctMax < 4 || up.LossPctMax > 15 {
		t.Errorf("lossy publisher's uplink: %s; want loss p50 1.5 to 9 %% and max 4 to 15 %%, near the 5 %% dropped (audio is not retransmitted)", up)
	}
	if v := up.VideoLossPctP50; v == nil || *v >= 1 {
		t.Errorf("lossy publisher's uplink: %s; want video loss under 1 %% after NACK recovery", up)
	}
	if up.ScoreP50 >= clean.ScoreP50 {
		t.Errorf("uplink score p50: lossy publisher %.1f, clean publisher %.1f; want the lossy one lower", up.ScoreP50, clean.ScoreP50)
	}
	if clean.LossPctMax > 0.5 {
		t.Errorf("clean publisher's uplink loss max %.1f %%; want none", clean.LossPctMax)
	}

	// What the subscriber got.
	decodableVideo(t, "the subscriber of the lossy publisher", sub)
	// Its own score: audio arrives with the publisher's 5 % missing, which
	// would cost it half a point (4.4 → 3.9) if it were blamed. The median
	// over the seconds: the score still dips now and then, as the server
	// takes out the publisher's loss of the quality interval from the
	// receiver report's loss of about the last second, and 5 % of some
	// 50 audio packets a second varies much from one second to the next.
	var scores []float64
	for _, e := range sub {
		if e.Score > 0 {
			scores = append(scores, e.Score)
		}
	}
	scores = scores[min(2, len(scores)):] // the first interval has no uplink measured to take out
	if len(scores) < 5 {
		t.Fatalf("the subscriber got %d quality scores; want one a second after the first", len(scores))
	}
	slices.Sort(scores)
	med := scores[len(scores)/2]
	t.Logf("the subscriber's downlink score: median %.1f, lowest %.1f over %d s (lossy uplink p50 %.1f)", med, scores[0], len(scores), up.ScoreP50)
	if med < 4 {
		t.Errorf("the subscriber's downlink score: median %.1f, lowest %.1f (lossy uplink %.1f); want the median excellent (4 and up), not dragged down by the publisher's loss", med, scores[0], up.ScoreP50)
	}
}

// TestLostConnectionScored: when a participant's network goes away
// entirely, the room's quality says "lost" within seconds, long before the
// server's ICE agent gives up on the path (10 s): for a subscriber, media
// goes out and no feedback comes back; for a publisher, its audio stops
// arriving. A participant on a clean link in the same room stays as it
// was.
func TestLostConnectionScored(t *testing.T) {
	needNetns(t, "nft")
	l := newNetLink(t)
	base := startServerAt(t, l.hostIP, "--api-key", netnsKey, "--api-secret", netnsSecret)
	const run = 24 * time.Second
	// Room netns: a publisher here, a subscriber behind the link. Room
	// uplink: a publisher behind the link (another room: the bots of
	// two runs have the same names).
	cleanDone := goRun(t, Config{URL: base, Room: "netns", Publishers: 1, Duration: run, Seed: 6})
	time.Sleep(time.Second)
	sub := l.startSubscriber(t, base, run, "")
	pub := l.startBot(t, "TestNetnsPublisher", "HUDDLE_NETNS_URL="+base, "HUDDLE_NETNS_DURATION="+run.String(), "HUDDLE_NETNS_ROOM=uplink")

	tok, err := auth.Mint(netnsKey, netnsSecret, auth.Token{Room: "*", Identity: "netns-test", Grants: []string{protocol.GrantAdmin}, TTL: time.Minute}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// levels gives the quality level the server holds for each of the
	// three, "" for none yet.
	type who struct{ room, identity string }
	watched := []who{{"netns", "bot-sub-1"}, {"uplink", "bot-pub-1"}, {"netns", "bot-pub-1"}}
	levels := func() map[who]string {
		out := map[who]string{}
		for _, room := range []string{"netns", "uplink"} {
			req, _ := http.NewRequest("GET", base+"/admin/rooms/"+room, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("admin room %s: %v", room, err)
			}
			var d struct {
				Participants []struct {
					Identity string `json:"identity"`
					Quality  *struct {
						Level string `json:"level"`
					} `json:"quality"`
				} `json:"participants"`
			}
			err = json.NewDecoder(res.Body).Decode(&d)
			res.Body.Close()
			if err != nil && res.StatusCode != http.StatusNotFound {
				t.Fatalf("admin room %s: %s: %v", room, res.Status, err)
			}
			for _, p := range d.Participants {
				if p.Quality != nil {
					out[who{room, p.Identity}] = p.Quality.Level
				}
			}
		}
		return out
	}
	var before map[who]string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		before = levels()
		ready := true
		for _, w := range watched {
			ready = ready && before[w] != "" && before[w] != "lost"
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("quality before the cut: %v; want a level, not lost, for each of %v", before, watched)
		}
	}
	cut := time.Now()
	l.nft(t, fmt.Sprintf("table netdev cut {\n chain in {\n  type filter hook ingress device %q priority 0; policy drop;\n }\n chain out {\n  type filter hook egress device %q priority 0; policy drop;\n }\n}\n", l.subDev, l.subDev))
	lostAfter := map[who]time.Duration{}
	var after map[who]string
	for time.Since(cut) < 9*time.Second && len(lostAfter) < 2 {
		time.Sleep(250 * time.Millisecond)
		after = levels()
		for _, w := range watched[:2] {
			if _, ok := lostAfter[w]; !ok && after[w] == "lost" {
				lostAfter[w] = time.Since(cut)
			}
		}
	}
	t.Logf("levels before the cut %v, after %v; lost after %v", before, after, lostAfter)
	for _, w := range watched[:2] {
		if d, ok := lostAfter[w]; !ok || d > 6*time.Second {
			t.Errorf("%s in room %s: lost after %v (seen: %v); want within 6 s of the cut (3 s of silence, a 2 s quality interval)", w.identity, w.room, d, ok)
		}
	}
	if w := watched[2]; after[w] == "" || after[w] == "lost" {
		t.Errorf("the publisher on the clean link: %q after the cut; want its level as before (%q)", after[w], before[w])
	}
	// The bots behind the cut end with their run; what they report is
	// about a server they lost, and not checked.
	for _, b := range []*nsBot{sub, pub} {
		_, _ = b.exited(run + 15*time.Second)
	}
	cleanDone()
}
