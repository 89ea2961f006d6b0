// Package bots owns the load bots: publishers that loop sample media into
// rooms and subscribers that receive it, all joining over the real
// signaling protocol with the Go client, and the measurements they report
// (time to join and to first media, packets, loss, bitrate, forwarding
// latency). `huddle bots` is its command line.
package bots

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// Config describes one run. The zero value of each field means its
// default.
type Config struct {
	// URL is the server, http(s):// or ws(s):// (default
	// http://127.0.0.1:7800).
	URL string
	// URLs, when it has more than one entry, spreads the bots over
	// several servers (the nodes of a cluster): bot i dials URLs[i mod n]
	// first, and a node that does not serve its room redirects it. URL is
	// then ignored.
	URLs []string
	// Reconnect makes a bot whose session ended before the run (its node
	// died, drained) or whose join failed join again, with backoff, through
	// the next URL.
	Reconnect bool
	// Room is the room name (default "bots"); with Rooms > 1 the bots are
	// spread round-robin over Room-1 … Room-K.
	Room  string
	Rooms int
	// Publishers and Subscribers are how many bots of each kind start.
	Publishers  int
	Subscribers int
	// Editors are bots with grant edit that type into the room's document
	// (random inserts and deletes, EditRate per second each, default 10)
	// and move their cursor ten times a second.
	Editors  int
	EditRate float64
	// Duration bounds the whole run, from the first bot's start (default
	// 10 s).
	Duration time.Duration
	// AudioOnly makes publishers send only audio.
	AudioOnly bool
	// Video is the sample clip publishers send (default vp8_360p.ivf).
	Video string
	// Simulcast makes publishers send three layers of video instead, as
	// rids q, h and f: vp8_180p.ivf, vp8_360p.ivf and vp8_720p.ivf.
	Simulcast bool
	// MaxLayer, when set (q, h or f), is the highest layer subscribers
	// ask for; a comma-separated list ("q,h,f") is dealt out to the
	// subscribers in turn, so that one run shows each on its layer.
	MaxLayer string
	// MaxSize, when set ("320x180"), is the video size subscribers say
	// they show video at, as a call page's tile does; a comma-separated
	// list is dealt out in turn like MaxLayer.
	MaxSize string
	// Timeline, when set, gets one JSON line per subscriber and second:
	// what it received in that second (see TimelineEntry).
	Timeline io.Writer
	// APIKey and APISecret sign the bots' tokens (default: the dev
	// credentials).
	APIKey    string
	APISecret string
	// Seed makes a run reproducible: where in the clips each publisher
	// starts and the jitter of the start times.
	Seed uint64
	// Stagger is the pause between two bots' starts (default 20 ms).
	Stagger time.Duration
	// JoinTimeout bounds one bot's dial and join (default 10 s).
	JoinTimeout time.Duration
	// LoopbackOnly restricts ICE to loopback; nil decides from URL (true
	// when its host is a loopback address or localhost).
	LoopbackOnly *bool
	// Progress, when set, gets one line rewritten in place (\r) while the
	// run goes on.
	Progress io.Writer
	Logger   *slog.Logger

	// interceptors are added to the bots' API nearest the wire (tests).
	interceptors []interceptor.Factory
	// configure adjusts the bots' SettingEngine (tests).
	configure func(*webrtc.SettingEngine)
}

func (c *Config) setDefaults() error {
	if c.URL == "" {
		c.URL = "http://127.0.0.1:7800"
	}
	if c.Room == "" {
		c.Room = "bots"
	}
	if c.Rooms <= 0 {
		c.Rooms = 1
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Video == "" {
		c.Video = DefaultVideo
	}
	if c.APIKey == "" && c.APISecret == "" {
		c.APIKey, c.APISecret = auth.DevAPIKey, auth.DevAPISecret
	}
	if c.Stagger <= 0 {
		c.Stagger = 20 * time.Millisecond
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.EditRate <= 0 {
		c.EditRate = 10
	}
	if c.Publishers < 0 || c.Subscribers < 0 || c.Editors < 0 || c.Publishers+c.Subscribers+c.Editors == 0 {
		return errors.New("bots: need at least one publisher, subscriber or editor")
	}
	for _, sz := range maxLayers(c.MaxSize) {
		if _, _, err := parseSize(sz); err != nil {
			return err
		}
	}
	for _, l := range maxLayers(c.MaxLayer) {
		switch l {
		case protocol.QualityLow, protocol.QualityMedium, protocol.QualityHigh:
		default:
			return fmt.Errorf("bots: max layer must be q, h or f (or a comma-separated list of them), not %q", c.MaxLayer)
		}
	}
	if c.LoopbackOnly == nil {
		lo, err := isLoopbackURL(c.URL)
		if err != nil {
			return err
		}
		c.LoopbackOnly = &lo
	}
	return nil
}

func isLoopbackURL(raw string) (bool, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return false, fmt.Errorf("bots: bad URL %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// role is what a bot does.
type role string

const (
	rolePublisher  role = "publisher"
	roleSubscriber role = "subscriber"
	roleEditor     role = "editor"
)

// botSpec is one bot to start.
type botSpec struct {
	role     role
	index    int // 1-based within its role
	room     string
	identity string
	start    time.Duration // offset from the run's start
	rng      *rand.Rand    // this bot's own, from the seed
	urls     []string      // the servers to dial, the first first
}

// plan lays out the bots: publishers first (so subscribers find media),
// each room in turn, starts Stagger apart with up to ±25% jitter.
func plan(cfg *Config) []botSpec {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6875646c65)) // "huddle"
	room := func(i int) string {
		if cfg.Rooms == 1 {
			return cfg.Room
		}
		return cfg.Room + "-" + strconv.Itoa(i%cfg.Rooms+1)
	}
	var specs []botSpec
	add := func(r role, n int) {
		for i := range n {
			specs = append(specs, botSpec{
				role:     r,
				index:    i + 1,
				room:     room(i),
				identity: fmt.Sprintf("bot-%s-%d", r[:3], i+1),
				rng:      rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())),
			})
		}
	}
	add(rolePublisher, cfg.Publishers)
	add(roleSubscriber, cfg.Subscribers)
	add(roleEditor, cfg.Editors)
	urls := cfg.URLs
	if len(urls) == 0 {
		urls = []string{cfg.URL}
	}
	var at time.Duration
	for i := range specs {
		for j := range urls {
			specs[i].urls = append(specs[i].urls, urls[(i+j)%len(urls)])
		}
		specs[i].start = at
		jitter := time.Duration(rng.Int64N(int64(cfg.Stagger)/2+1)) - cfg.Stagger/4
		at += cfg.Stagger + jitter
	}
	return specs
}

// env is what every bot of a run shares.
type env struct {
	cfg      *Config
	api      *webrtc.API
	video    *clip    // nil when audio only
	layers   [3]*clip // simulcast: q, h, f; nil without
	audio    *clip
	timeline *timeline
	progress *progress
	barriers map[string]*editBarrier // per room; read-only once the run starts
	ready    map[string]*editBarrier // per room: editors joined, they start together
	// run tells this run's editors from an earlier run's: their document
	// client ids are "<identity>.<run>". The document outlives the run, and
	// a client id that came back would have its sequence numbers, which
	// restart at 1, refused as stale.
	run string
}

// barrier returns the editors' barrier of room.
func (e *env) barrier(room string) *editBarrier { return e.barriers[room] }

// Run starts the bots, lets them run until cfg.Duration has passed since
// the start (or ctx ends), makes them leave and returns the aggregated
// report. The error is about the run itself (bad config, unreadable
// media); bots that fail show in the report (Report.Err).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	e := &env{cfg: &cfg, progress: &progress{}, run: strconv.FormatUint(rand.Uint64()>>24, 36)}
	var err error
	if cfg.Publishers > 0 {
		if e.audio, err = loadOpus(AudioClip); err != nil {
			return nil, err
		}
	}
	if cfg.Publishers > 0 && !cfg.AudioOnly {
		if e.video, err = loadVP8(cfg.Video); err != nil {
			return nil, err
		}
		if cfg.Simulcast {
			for i, name := range [3]string{ClipLow, ClipMedium, ClipHigh} {
				if e.layers[i], err = loadVP8(name); err != nil {
					return nil, err
				}
			}
		}
	}
	if cfg.Timeline != nil {
		e.timeline = &timeline{w: cfg.Timeline}
	}
	if e.api, err = client.NewAPI(client.APIOptions{LoopbackOnly: *cfg.LoopbackOnly, Interceptors: cfg.interceptors, Configure: cfg.configure}); err != nil {
		return nil, err
	}

	specs := plan(&cfg)
	editorsIn := map[string]int{}
	for _, s := range specs {
		if s.role == roleEditor {
			editorsIn[s.room]++
		}
	}
	e.barriers = make(map[string]*editBarrier, len(editorsIn))
	e.ready = make(map[string]*editBarrier, len(editorsIn))
	for room, n := range editorsIn {
		e.barriers[room] = newEditBarrier(n)
		e.ready[room] = newEditBarrier(n)
	}
	start := time.Now()
	if e.timeline != nil {
		e.timeline.start = start
	}
	runCtx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer cancel()

	var wg sync.WaitGroup
	stopProgress := e.progress.start(cfg.Progress, len(specs), cfg.Subscribers)
	results := make([]*botResult, len(specs))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i, spec := range specs {
		if wait := time.Until(start.Add(spec.start)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-runCtx.Done():
			}
		}
		if runCtx.Err() != nil {
			results[i] = &botResult{spec: spec, err: errors.New("not started: the run ended first")}
			e.progress.failed.Add(1)
			if spec.role == roleEditor {
				e.ready[spec.room].arrive(0)
				e.barrier(spec.room).arrive(0)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runBot(runCtx, e, spec)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	return aggregate(&cfg, results, elapsed), nil
}

// runBot runs one bot to the end of ctx and returns what it measured.
func runBot(ctx context.Context, e *env, spec botSpec) *botResult {
	res := &botResult{spec: spec}
	switch spec.role {
	case roleSubscriber:
		res.sub = newSubscriberStats()
	case rolePublisher:
		res.uplink = newUplinkStats()
	case roleEditor:
		res.editor = &editorStats{acks: &histogram{}}
		defer func() {
			if !res.editor.joined {
				e.ready[spec.room].arrive(0)
			}
			if !res.editor.arrived {
				e.barrier(spec.room).arrive(0)
			}
		}()
	}
	err := func() error {
		grants := []string{protocol.GrantSubscribe, protocol.GrantData}
		switch spec.role {
		case rolePublisher:
			grants = []string{protocol.GrantPublish, protocol.GrantData}
		case roleEditor:
			grants = []string{protocol.GrantEdit}
		}
		token, err := auth.Mint(e.cfg.APIKey, e.cfg.APISecret, auth.Token{
			Room: spec.room, Identity: spec.identity, Grants: grants,
			TTL: e.cfg.Duration + time.Hour,
		}, time.Now())
		if err != nil {
			return err
		}
		run := runSubscriber
		switch spec.role {
		case rolePublisher:
			run = runPublisher
		case roleEditor:
			// An editor's session is its document state: it does not
			// rejoin (its report says what it lost).
			return runEditor(ctx, e, spec, token, res)
		}
		for attempt := 0; ; attempt++ {
			err := run(ctx, e, spec, token, res)
			if !e.cfg.Reconnect || ctx.Err() != nil {
				return err
			}
			// The session ended early, or the join failed: go on through
			// the next server after a pause that grows to 2 s.
			res.reconnects++
			if err == nil {
				attempt = 0
			}
			spec.urls = append(spec.urls[1:], spec.urls[0])
			select {
			case <-ctx.Done():
				if res.joined {
					return nil
				}
				return err
			case <-time.After(min(200*time.Millisecond<<attempt, 2*time.Second)):
			}
		}
	}()
	if err != nil {
		res.err = err
		e.progress.failed.Add(1)
	}
	return res
}

// leave says goodbye within a short time of its own: ctx has usually ended
// already.
func leave(ctx context.Context, c *client.Client) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = c.Leave(lctx)
}

// maxLayers splits a MaxLayer list ("q,h,f") into its layers; nil when
// empty.
func maxLayers(list string) []string {
	if list == "" {
		return nil
	}
	return strings.Split(list, ",")
}

// maxLayerOf is the layer subscriber number index (1-based) asks for:
// the list is dealt out in turn; "" means no limit.
func maxLayerOf(list string, index int) string {
	ls := maxLayers(list)
	if len(ls) == 0 || index < 1 {
		return ""
	}
	return ls[(index-1)%len(ls)]
}

// parseSize parses a video size such as 640x360.
func parseSize(s string) (w, h int, err error) {
	ws, hs, ok := strings.Cut(s, "x")
	if ok {
		w, err = strconv.Atoi(ws)
		if err == nil {
			h, err = strconv.Atoi(hs)
		}
	}
	if !ok || err != nil || w < 0 || h < 0 {
		return 0, 0, fmt.Errorf("bots: a video size is WIDTHxHEIGHT such as 640x360, not %q", s)
	}
	return w, h, nil
}
