package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/huddle-rtc/huddle/presence"
	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/rooms/cluster"
	"github.com/huddle-rtc/huddle/rooms/doc"
	"github.com/huddle-rtc/huddle/sfu"
	"github.com/huddle-rtc/huddle/signaling"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/web"
)

type serveFlags struct {
	listen    string
	udpPort   int
	iceTCP    bool
	publicIPs []string
	dev       bool
	apiKey    string
	apiSecret string
	logJSON   bool
	logLevel  string
	maxData   int
	dataDir   string

	presenceAway    time.Duration
	presenceOffline time.Duration
	turn            turnFlags
	redis           string
	cluster         clusterFlags
	// videoFloor is sfu.Config.VideoFloor in kbit/s.
	videoFloor int
	// videoMax is sfu.Config.VideoMax in kbit/s.
	videoMax int
}

func newServeCmd() *cobra.Command {
	var f serveFlags
	var configPath string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Huddle server",
		Long: `Runs the signaling endpoint (/ws), the SFU, the web pages, /healthz and
/metrics. Every flag can also come from the environment as HUDDLE_<FLAG>
(dashes become underscores) or from a YAML file given with --config; a flag
on the command line wins over the environment, which wins over the file.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		PreRunE:      func(cmd *cobra.Command, _ []string) error { return applyEnvAndConfig(cmd, configPath) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			f.turn.portSet = cmd.Flags().Changed("turn-port")
			return serve(ctx, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configPath, "config", "", "YAML file of flag values (keys are flag names)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7800", "HTTP and WebSocket address")
	fl.IntVar(&f.udpPort, "udp-port", 7801, "the one UDP port for all media (ICE-TCP uses the same number)")
	fl.BoolVar(&f.iceTCP, "ice-tcp", true, "also accept ICE over TCP")
	fl.StringSliceVar(&f.publicIPs, "public-ip", nil, "public address(es) to announce for media (NAT 1:1)")
	fl.BoolVar(&f.dev, "dev", false, "dev mode: fixed dev key, /dev/token route, loopback only (the default when no key is set)")
	fl.StringVar(&f.apiKey, "api-key", "", "API key that signs tokens")
	fl.StringVar(&f.apiSecret, "api-secret", "", "API secret (at least 32 bytes)")
	fl.BoolVar(&f.logJSON, "log-json", false, "log JSON instead of text")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.IntVar(&f.maxData, "max-data-message", 16<<10, "largest data-channel message relayed, in bytes")
	fl.StringVar(&f.dataDir, "data-dir", "./data", "directory of the rooms' documents (created if missing; unused with --redis, where documents live in Redis)")
	fl.DurationVar(&f.presenceAway, "presence-away", 45*time.Second, "a session without heartbeat for this long is away")
	fl.DurationVar(&f.presenceOffline, "presence-offline", 2*time.Minute, "a session without heartbeat for this long is gone (offline)")
	addTurnFlags(fl, &f.turn, false)
	fl.StringVar(&f.redis, "redis", "", "Redis URL (redis://host:6379/0) shared by the nodes: cluster mode, documents and presence in Redis; empty keeps everything in process")
	addClusterFlags(fl, &f.cluster)
	fl.IntVar(&f.videoFloor, "video-floor", 0, "kbit/s: a subscriber whose bandwidth estimate is below this gets video without simulcast as audio only (and is told so); REMB never caps a publisher below it")
	fl.IntVar(&f.videoMax, "video-max-kbps", 0, "kbit/s: the most a video track without simulcast is asked (REMB) to send, whatever its subscribers could take; 0 means no cap (--video-floor wins over it)")
	return cmd
}

// applyEnvAndConfig fills every flag not given on the command line from
// HUDDLE_<FLAG>, then from the YAML file.
func applyEnvAndConfig(cmd *cobra.Command, path string) error {
	file := map[string]any{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return fmt.Errorf("parse config %s: %w", path, err)
		}
	}
	var errs []error
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "config" {
			return
		}
		env := "HUDDLE_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fl.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
			return
		}
		if v, ok := file[fl.Name]; ok {
			var s string
			switch x := v.(type) {
			case []any:
				parts := make([]string, len(x))
				for i, p := range x {
					parts[i] = fmt.Sprint(p)
				}
				s = strings.Join(parts, ",")
			default:
				s = fmt.Sprint(x)
			}
			if err := fl.Value.Set(s); err != nil {
				errs = append(errs, fmt.Errorf("config %s: %w", fl.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(f serveFlags) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if f.logJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

func serve(ctx context.Context, f serveFlags) error {
	log, err := newLogger(f)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(f.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", f.listen, err)
	}
	loopback := isLoopback(host)
	if f.apiKey == "" && f.apiSecret == "" {
		f.dev = true
	}
	if f.dev {
		if !loopback {
			return fmt.Errorf("dev mode (no API key configured) only listens on loopback, not %q: "+
				"set --api-key and --api-secret (or HUDDLE_API_KEY / HUDDLE_API_SECRET, or api-key/api-secret in --config) "+
				"to listen on another address", f.listen)
		}
		if f.apiKey == "" {
			f.apiKey, f.apiSecret = auth.DevAPIKey, auth.DevAPISecret
		}
	}
	if f.apiKey == "" || f.apiSecret == "" {
		return errors.New("set both --api-key and --api-secret")
	}
	verifier, err := auth.NewVerifier(map[string]string{f.apiKey: f.apiSecret}, nil)
	if err != nil {
		return err
	}
	engCfg := sfu.Config{UDPPort: f.udpPort, ICETCP: f.iceTCP, PublicIPs: f.publicIPs, Logger: log}
	engCfg.VideoFloor = f.videoFloor * 1000
	engCfg.VideoMax = f.videoMax * 1000
	if loopback {
		// A loopback server serves this machine: announce loopback only.
		// ICE-TCP binds 127.0.0.1 too, so no media port is open to the network.
		engCfg.IncludeLoopback = true
		engCfg.IPFilter = func(ip net.IP) bool { return ip.IsLoopback() }
		engCfg.ListenIP = "127.0.0.1"
	}
	engine, err := sfu.NewEngine(engCfg)
	if err != nil {
		return err
	}
	defer engine.Close()
	turnSrv, err := startEmbeddedTURN(f.turn, f.apiSecret, f.publicIPs, host, f.udpPort, engine.UDPAddrs(), log)
	if err != nil {
		return err
	}
	if turnSrv != nil {
		defer turnSrv.Close()
	}
	roomsCfg := rooms.Config{Engine: engine, Logger: log, MaxDataMessage: f.maxData, Version: version}
	var collectors []prometheus.Collector
	if turnSrv != nil {
		roomsCfg.ICEServersFor = iceServersFor(turnSrv)
		collectors = append(collectors, turnCollector{turnSrv})
	}
	tracker, stopPresence, err := startPresence(ctx, f, log)
	if err != nil {
		return err
	}
	defer stopPresence()
	// Cluster mode: documents in Redis, fenced by the rooms' leases.
	var cl *cluster.Cluster
	if f.redis != "" {
		rdb, err := openRedis(ctx, f.redis)
		if err != nil {
			return err
		}
		defer rdb.Close()
		roomsCfg.Docs = fencedDocs(rdb, &cl)
		reg := rooms.NewRegistry(roomsCfg)
		if cl, _, err = joinCluster(ctx, f, rdb, reg, log); err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := cl.Close(cctx); err != nil {
				log.Warn("leave the cluster", "err", err)
			}
		}()
		return serveHTTP(ctx, f, log, reg, verifier, engine, tracker, cl, append(collectors, clusterCollector{cl}))
	}
	// One machine: documents in bbolt under --data-dir (not opened in
	// cluster mode, where they live in Redis).
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	docs, err := doc.OpenBolt(f.dataDir)
	if err != nil {
		return fmt.Errorf("open documents in %s: %w", f.dataDir, err)
	}
	// Deferred before serveHTTP's shutdown runs: the rooms close their
	// documents first.
	defer func() {
		if err := docs.Close(); err != nil {
			log.Warn("close documents", "err", err)
		}
	}()
	roomsCfg.Docs = docs
	reg := rooms.NewRegistry(roomsCfg)
	return serveHTTP(ctx, f, log, reg, verifier, engine, tracker, nil, collectors)
}

// serveHTTP runs the signaling server until ctx ends; in cluster mode
// (cl not nil) it first drains the rooms to other nodes.
func serveHTTP(ctx context.Context, f serveFlags, log *slog.Logger, reg *rooms.Registry, verifier *auth.Verifier, engine *sfu.Engine,
	tracker *presence.Tracker, cl *cluster.Cluster, collectors []prometheus.Collector) error {
	sigCfg := signaling.Config{
		Registry: reg, Verifier: verifier, Logger: log,
		Dev: f.dev, DevKey: f.apiKey, DevSecret: f.apiSecret, Web: web.Handler(),
		Presence: tracker, Collectors: collectors,
	}
	if cl != nil {
		sigCfg.Placement = cl
		// The call page may check the other nodes before moving there.
		sigCfg.Web = web.HandlerWith(web.Config{PeerOrigins: func(ctx context.Context) []string {
			urls, err := cl.NodeURLs(ctx)
			if err != nil {
				log.Debug("node list for the page", "err", err)
			}
			return urls
		}})
	}
	srv := signaling.New(sigCfg)
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	if f.dev {
		log.Warn("DEV MODE: fixed dev API key and secret, /dev/token is open; listening on loopback only. Do not use in production.")
		fmt.Fprintf(os.Stderr, "\n  Huddle (dev mode) is running. Open %s/ in a browser, or a meeting link: %s/r/hello?name=Ada\n\n", url, url)
	}
	log.Info("serving", "url", url, "ice_udp", engine.UDPAddrs(), "ice_tcp", f.iceTCP, "version", version)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	}
	if cl != nil {
		drain(cl, reg, f.cluster.drainGrace, log)
	}
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	srv.Shutdown(shutCtx)
	_ = httpSrv.Shutdown(shutCtx)
	<-errc
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
