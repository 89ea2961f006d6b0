package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/huddle-rtc/huddle/signaling/protocol"
	"github.com/huddle-rtc/huddle/turn"
)

// turnFlags configure the embedded TURN server (`serve`) or the
// standalone one (`turn`).
type turnFlags struct {
	enabled    bool
	port       int
	portSet    bool // --turn-port was given: a busy port is an error
	listenIP   string
	publicIP   string
	host       string
	secret     string
	certFile   string
	keyFile    string
	allowPeers []string
	quota      int
	ttl        time.Duration
	relayPorts string
}

func addTurnFlags(fl *pflag.FlagSet, t *turnFlags, standalone bool) {
	if !standalone {
		fl.BoolVar(&t.enabled, "turn", true, "run the embedded TURN server (relay for clients behind strict firewalls)")
	}
	fl.IntVar(&t.port, "turn-port", turn.DefaultPort, "TURN UDP and TCP port (TLS on the TCP port with --turn-cert); 0 picks a free one")
	publicDefault := "--public-ip, the --listen address, or the first global address"
	if standalone {
		publicDefault = "--turn-listen-ip, or the first global address"
	}
	fl.StringVar(&t.publicIP, "turn-public-ip", "", "public IPv4 address clients reach the TURN server and its relays at (default: "+publicDefault+")")
	fl.StringVar(&t.host, "turn-host", "", "host name in the TURN URLs (default: the public IP; use the certificate's name with TLS)")
	fl.StringVar(&t.secret, "turn-secret", "", "secret of the TURN credentials, at least 16 bytes (default: derived from --api-secret, so nodes that share keys share it)")
	fl.StringVar(&t.certFile, "turn-cert", "", "PEM certificate: the TCP port speaks TLS (turns:)")
	fl.StringVar(&t.keyFile, "turn-key", "", "PEM private key of --turn-cert")
	fl.StringSliceVar(&t.allowPeers, "turn-allow-peer", nil, "peer ranges relays may reach although private or loopback (CIDR or address; repeatable)")
	fl.IntVar(&t.quota, "turn-quota", turn.DefaultUserQuota, "allocations one identity may hold at once")
	fl.DurationVar(&t.ttl, "turn-ttl", turn.DefaultCredentialTTL, "lifetime of the TURN credentials handed out")
	fl.StringVar(&t.relayPorts, "turn-relay-ports", "", "relay port range MIN-MAX (default: any)")
	if standalone {
		fl.StringVar(&t.listenIP, "turn-listen-ip", "0.0.0.0", "local address the TURN server and its relays bind")
	}
}

// turnSecret is --turn-secret, or one derived from the API secret.
func turnSecret(t turnFlags, apiSecret string) []byte {
	if t.secret != "" {
		return []byte(t.secret)
	}
	m := hmac.New(sha256.New, []byte(apiSecret))
	m.Write([]byte("huddle turn credentials v1"))
	return m.Sum(nil)
}

// turnPublicIP picks the address announced to clients.
func turnPublicIP(t turnFlags, publicIPs []string, listenHost string) (net.IP, error) {
	for _, s := range append([]string{t.publicIP}, publicIPs...) {
		if s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("TURN public IP %q: not an IPv4 address", s)
		}
		return ip, nil
	}
	if ip := net.ParseIP(listenHost); ip != nil && !ip.IsUnspecified() && ip.To4() != nil {
		return ip, nil
	}
	if listenHost == "localhost" {
		return net.IPv4(127, 0, 0, 1), nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("TURN public IP: list addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP, nil
		}
	}
	return nil, errors.New("TURN: no global IPv4 address found: set --turn-public-ip (or --turn=false)")
}

// turnConfig turns the flags into a turn.Config; allow are exact peers
// (the SFU's media addresses) the relays may reach.
func turnConfig(t turnFlags, secret []byte, publicIP net.IP, allow []netip.AddrPort, log *slog.Logger) (turn.Config, error) {
	nets, err := turn.ParsePrefixes(t.allowPeers)
	if err != nil {
		return turn.Config{}, fmt.Errorf("--turn-allow-peer: %w", err)
	}
	cfg := turn.Config{
		Secret:        secret,
		ListenIP:      t.listenIP,
		Port:          t.port,
		PublicIP:      publicIP,
		Host:          t.host,
		Policy:        turn.Policy{AllowNets: nets, AllowPeers: allow},
		UserQuota:     t.quota,
		CredentialTTL: t.ttl,
		Logger:        log,
	}
	if t.relayPorts != "" {
		lo, hi, ok := strings.Cut(t.relayPorts, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if !ok || err1 != nil || err2 != nil {
			return turn.Config{}, fmt.Errorf("--turn-relay-ports %q: want MIN-MAX", t.relayPorts)
		}
		cfg.RelayPortMin, cfg.RelayPortMax = a, b
	}
	if (t.certFile == "") != (t.keyFile == "") {
		return turn.Config{}, errors.New("--turn-cert and --turn-key go together")
	}
	if t.certFile != "" {
		cert, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
		if err != nil {
			return turn.Config{}, fmt.Errorf("TURN certificate: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// startEmbeddedTURN starts the TURN server of `huddle serve` next to the
// SFU whose media addresses are sfuAddrs. It returns nil (and no error)
// when TURN is off, or when the default port is busy (a warning says so).
func startEmbeddedTURN(t turnFlags, apiSecret string, publicIPs []string, listenHost string, udpPort int,
	sfuAddrs []net.Addr, log *slog.Logger) (*turn.Server, error) {
	if !t.enabled {
		return nil, nil
	}
	publicIP, err := turnPublicIP(t, publicIPs, listenHost)
	if err != nil {
		return nil, err
	}
	if isLoopback(listenHost) {
		t.listenIP = "127.0.0.1"
	}
	// The relays may reach the SFU's own media ports, wherever they are.
	var allow []netip.AddrPort
	for _, a := range sfuAddrs {
		if ua, ok := a.(*net.UDPAddr); ok {
			allow = append(allow, ua.AddrPort())
		}
	}
	for _, s := range publicIPs {
		if ip, err := netip.ParseAddr(s); err == nil {
			allow = append(allow, netip.AddrPortFrom(ip.Unmap(), uint16(udpPort)))
		}
	}
	cfg, err := turnConfig(t, turnSecret(t, apiSecret), publicIP, allow, log)
	if err != nil {
		return nil, err
	}
	ts, err := turn.Listen(cfg)
	if err != nil {
		if !t.portSet && t.port == turn.DefaultPort {
			log.Warn("TURN server not started: its default port is busy; set --turn-port, or --turn=false", "err", err)
			return nil, nil
		}
		return nil, err
	}
	return ts, nil
}

// iceServersFor returns the function that gives each participant its
// own TURN credential.
func iceServersFor(ts *turn.Server) func(identity string) []protocol.ICEServer {
	return func(identity string) []protocol.ICEServer {
		c := ts.Credential(identity)
		return []protocol.ICEServer{{URLs: ts.URLs(), Username: c.Username, Credential: c.Password}}
	}
}

// newTurnCmd is `huddle turn`: the TURN server alone.
func newTurnCmd() *cobra.Command {
	var t turnFlags
	var apiSecret, logLevel string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "turn",
		Short: "Run only the TURN server",
		Long: `Runs the TURN server alone (UDP and TCP, or TLS with --turn-cert, on
--turn-port). Credentials are TURN REST ones (username "expiry:identity",
password the base64 HMAC-SHA1 of it): give it the same --turn-secret, or
the same --api-secret, as the Huddle servers that hand them out.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		PreRunE:      func(cmd *cobra.Command, _ []string) error { return applyEnvAndConfig(cmd, "") },
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(serveFlags{logJSON: logJSON, logLevel: logLevel})
			if err != nil {
				return err
			}
			if t.secret == "" && apiSecret == "" {
				return errors.New("set --turn-secret (or --api-secret, to derive the secret the Huddle servers use)")
			}
			publicIP, err := turnPublicIP(t, nil, t.listenIP)
			if err != nil {
				return err
			}
			cfg, err := turnConfig(t, turnSecret(t, apiSecret), publicIP, nil, log)
			if err != nil {
				return err
			}
			ts, err := turn.Listen(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			log.Info("shutting down", "stats", fmt.Sprintf("%+v", ts.Stats()))
			return ts.Close()
		},
	}
	fl := cmd.Flags()
	addTurnFlags(fl, &t, true)
	fl.StringVar(&apiSecret, "api-secret", "", "API secret of the Huddle servers (the TURN secret is derived from it unless --turn-secret is set)")
	fl.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&logJSON, "log-json", false, "log JSON instead of text")
	return cmd
}
