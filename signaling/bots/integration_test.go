package bots

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRunAgainstServer runs the bots against the real server: `huddle serve
// --dev` from $HUDDLE_BIN, or built from ./cmd/huddle when that is unset.
func TestRunAgainstServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server")
	}
	base := startServer(t)

	t.Run("publishers and subscribers", func(t *testing.T) {
		var progress bytes.Buffer
		r := runBots(t, Config{
			URL: base, Room: "it", Rooms: 2, Publishers: 2, Subscribers: 2,
			Duration: 5 * time.Second, Seed: 3, Progress: &progress,
		})
		if r.Joined != 4 || r.Failed != 0 || r.NoMedia != 0 {
			t.Errorf("joined %d failed %d no media %d", r.Joined, r.Failed, r.NoMedia)
		}
		// Each subscriber shares a room with one publisher: a video and an
		// audio track.
		if r.Tracks != 4 {
			t.Errorf("%d tracks received, want 4", r.Tracks)
		}
		if r.RecvPackets == 0 || r.LossPct > 1 {
			t.Errorf("received %d packets, loss %.2f%%", r.RecvPackets, r.LossPct)
		}
		if r.LatencyMS.P50 <= 0 || r.LatencyMS.P50 > 100 {
			t.Errorf("forwarding latency p50 %.2f ms", r.LatencyMS.P50)
		}
		if r.FirstMediaMS.P50 <= 0 || r.FirstMediaMS.P99 > 5000 {
			t.Errorf("first media %+v", r.FirstMediaMS)
		}
		// The publishers heard of their uplinks, clean on loopback.
		if r.Uplink.Reports == 0 || r.Uplink.ScoreP50 < 4 {
			t.Errorf("uplink %s; want reports, scored excellent", r.Uplink)
		}
		if !strings.Contains(progress.String(), "\r") {
			t.Error("no progress line")
		}
	})

	t.Run("editors converge", func(t *testing.T) {
		r := runBots(t, Config{
			URL: base, Room: "edit", Rooms: 2, Editors: 6, EditRate: 20,
			Duration: 4 * time.Second, Seed: 5,
		})
		if r.Joined != 6 || r.Converged == nil || !*r.Converged {
			t.Fatalf("joined %d, converged %v", r.Joined, r.Converged)
		}
		// 6 editors at 20/s for about 4 s make about 480 edits; a loaded
		// machine makes fewer (the timers slip), never none.
		if r.EditOps < 50 || r.EditAckMS == nil || r.EditAckMS.P50 <= 0 || r.EditAckMS.P99 < r.EditAckMS.P50 {
			t.Errorf("edit ops %d, ack %+v", r.EditOps, r.EditAckMS)
		}
		var js bytes.Buffer
		if err := r.WriteJSON(&js); err != nil || !strings.Contains(js.String(), `"converged":true`) || !strings.Contains(js.String(), `"edit_ack_ms":{"p50":`) {
			t.Errorf("json %s, %v", js.String(), err)
		}
	})

	t.Run("editors run twice in one room", func(t *testing.T) {
		// The document outlives a run: a second run of the same editors
		// (as a user repeats a command) must converge too.
		for i := range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			r, err := Run(ctx, Config{URL: base, Room: "again", Editors: 3, EditRate: 10, Duration: 2 * time.Second, Seed: 1})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			converged := r.Converged != nil && *r.Converged
			if err := r.Err(); err != nil || !converged {
				t.Fatalf("run %d: %v, converged %v", i+1, err, converged)
			}
		}
	})

	t.Run("simulcast with a maximum layer per subscriber", func(t *testing.T) {
		// One run, as `huddle bots --simulcast --subscribers 3
		// --max-layer q,h,f`: each subscriber on the layer it asked for.
		r := runBots(t, Config{URL: base, Room: "sc", Publishers: 1, Subscribers: 3, Simulcast: true, MaxLayer: "q,h,f", Duration: 9 * time.Second})
		if r.EstKbps.P50 <= 0 || r.LossPct > 1 {
			t.Errorf("estimate %+v, loss %.2f%%", r.EstKbps, r.LossPct)
		}
		if len(r.PerSubscriber) != 3 {
			t.Fatalf("%d subscriber summaries; want 3", len(r.PerSubscriber))
		}
		seen := map[string]bool{}
		for _, s := range r.PerSubscriber {
			secs := byName(s.Layers)
			total := s.Layers.Q + s.Layers.H + s.Layers.F
			if s.Last != s.Asked || secs[s.Asked] < 5 || total-secs[s.Asked] > 2 {
				t.Errorf("%s asked for %s and got %+v seconds, last on %s", s.Bot, s.Asked, s.Layers, s.Last)
			}
			seen[s.Asked] = true
		}
		if len(seen) != 3 {
			t.Errorf("the subscribers asked for %v; want q, h and f dealt out", seen)
		}
	})

	t.Run("simulcast layer from the size a subscriber shows", func(t *testing.T) {
		// Subscribers that show the video at 320x180, 600x340 and 1280x720
		// get the layer that covers it: q (320x180), h (640x360), f.
		r := runBots(t, Config{URL: base, Room: "size", Publishers: 1, Subscribers: 3, Simulcast: true, MaxSize: "320x180,600x340,1280x720", Duration: 8 * time.Second})
		want := map[string]string{"320x180": "q", "600x340": "h", "1280x720": "f"}
		for _, s := range r.PerSubscriber {
			secs := byName(s.Layers)
			l := want[s.Size]
			// The first second may be on f: the layer sizes are learnt
			// from key frames.
			if s.Last != l || secs[l] < 5 {
				t.Errorf("%s shows %s and got %+v seconds, last on %s; want %s", s.Bot, s.Size, s.Layers, s.Last, l)
			}
		}
	})

	t.Run("layers nobody receives are paused", func(t *testing.T) {
		r := runBots(t, Config{URL: base, Room: "paused", Publishers: 1, Subscribers: 1, Simulcast: true, MaxLayer: "q", Duration: 10 * time.Second})
		// All three layers and audio are about 2.3 Mbit/s; q and audio
		// about 250 kbit/s.
		if r.SentKbps > 1000 || r.Layers.Q < 7 {
			t.Errorf("the publisher sent %.0f kbit/s for a subscriber on q (%+v s)", r.SentKbps, r.Layers)
		}
	})

	t.Run("refused tokens fail the run", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := Run(ctx, Config{
			URL: base, Subscribers: 2, Duration: 2 * time.Second,
			APIKey: "devkey", APISecret: "not-the-secret-not-the-secret-not-the-secret",
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.Failed != 2 || r.Err() == nil || len(r.Errors) == 0 || !strings.Contains(r.Errors[0], "token_invalid") {
			t.Errorf("failed %d, errors %q, Err %v", r.Failed, r.Errors, r.Err())
		}
	})
}

// startServer runs the server on free loopback ports until the test ends
// and returns its base URL.
func startServer(t testing.TB) string {
	t.Helper()
	return startServerAt(t, "127.0.0.1", "--dev")
}

// startServerAt runs the server listening on host with the extra
// arguments given, until the test ends, and returns its base URL.
func startServerAt(t testing.TB, host string, args ...string) string {
	t.Helper()
	bin := os.Getenv("HUDDLE_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "huddle")
		build := exec.Command("go", "build", "-o", bin, "./cmd/huddle")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			t.Skipf("cannot build the server (set HUDDLE_BIN to use a built one): %v\n%s", err, out)
		}
	}
	httpPort, udpPort := freePort(t, false), freePort(t, true)
	addr := net.JoinHostPort(host, strconv.Itoa(httpPort))
	var log syncBuffer
	cmd := exec.Command(bin, append([]string{"serve", "--listen", addr, "--udp-port", strconv.Itoa(udpPort)}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			// A goroutine dump in the log shows where a stuck server is.
			_ = cmd.Process.Signal(syscall.SIGQUIT)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop within 10 s of SIGTERM")
			_ = cmd.Process.Kill()
			<-exited
		}
		// HUDDLE_SERVER_LOG=1 shows the log of a passing run too (the
		// allocator's decisions are logged at debug level).
		if t.Failed() || os.Getenv("HUDDLE_SERVER_LOG") != "" {
			t.Logf("server output:\n%s", log.String())
		}
	})
	base := "http://" + addr
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("server exited: %v\n%s", err, log.String())
		default:
		}
		if res, err := hc.Get(base + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready within 20 s\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePort returns a loopback port free now; a UDP one is also free for
// TCP (the server does ICE-TCP on the same number).
func freePort(t testing.TB, udp bool) int {
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
	t.Fatal("free port: none free for both TCP and UDP")
	return 0
}

// syncBuffer collects the server's output while the test reads it.
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

// runBots runs the bots of cfg (within their duration and 30 s), logs
// their report and fails the test if the run or any bot failed.
func runBots(t *testing.T, cfg Config) *Report {
	t.Helper()
	// A hang guard: editors wait up to 30 s for convergence after the run.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+60*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_ = r.WriteText(&out)
	t.Logf("\n%s", out.String())
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

// byName gives the seconds on each layer by the layer's name.
func byName(l LayerSeconds) map[string]float64 {
	return map[string]float64{"q": l.Q, "h": l.H, "f": l.F}
}
