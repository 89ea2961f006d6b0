package turn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	pionturn "github.com/pion/turn/v5"
)

// Defaults of Config.
const (
	DefaultPort           = 3478
	DefaultRealm          = "huddle"
	DefaultCredentialTTL  = 4 * time.Hour
	DefaultUserQuota      = 10
	minSecretLength       = 16
	maxPortTries          = 20
	relayAllocationsRetry = 10
)

// errPeerRefused is returned when the relay refuses to send to a peer
// that the Policy does not allow.
var errPeerRefused = errors.New("turn: peer address refused by policy")

// Config sets up a Server.
type Config struct {
	// Secret signs the credentials (at least 16 bytes). Every node that
	// hands out credentials for this server must share it.
	Secret []byte
	// Realm is the TURN realm; empty means "huddle".
	Realm string
	// ListenIP is the local address the server and its relays bind;
	// empty means all IPv4 addresses.
	ListenIP string
	// Port is the UDP and TCP port (the same number for both); 0 picks a
	// free one (tests).
	Port int
	// PublicIP is the address clients reach and the relay address
	// announced in allocations. Required.
	PublicIP net.IP
	// Host names the server in the URLs handed to clients; empty means
	// PublicIP. Set it to the certificate's name with TLS.
	Host string
	// TLS, when set, makes the TCP port speak TLS (turns: URLs).
	TLS *tls.Config
	// RelayPortMin and RelayPortMax bound the relay ports; both 0 means
	// any port the system gives.
	RelayPortMin, RelayPortMax int
	// Policy decides which peers relays may reach.
	Policy Policy
	// UserQuota is the number of allocations one identity may hold at
	// once; 0 means DefaultUserQuota.
	UserQuota int
	// CredentialTTL is how long a credential from Credential is valid;
	// 0 means DefaultCredentialTTL.
	CredentialTTL time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Logger gets the server's lines; nil means slog.Default().
	Logger *slog.Logger
}

// Stats are the server's counters.
type Stats struct {
	Allocations    int    // live allocations
	RelayedPackets uint64 // packets the relays sent to peers
	RelayedBytes   uint64
	ReceivedPkts   uint64 // packets the relays received from peers
	ReceivedBytes  uint64
	Refused        uint64 // permissions and packets refused by the policy
	AuthFailures   uint64 // requests refused for their credentials
	QuotaRefused   uint64 // allocations refused by the per-user quota
}

// Server is a running TURN server: UDP and TCP (or TLS) on one port.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ts     *pionturn.Server
	udp    net.PacketConn
	tcp    net.Listener
	urls   []string
	closed sync.Once

	mu     sync.Mutex
	allocs map[string]int // identity → live allocations
	// admitted holds, per identity, when the quota admitted allocations
	// that are not created yet: they count against the quota, so that
	// requests arriving together (over UDP and TCP, or several TCP
	// connections, each read on its own goroutine) cannot all pass.
	admitted map[string][]time.Time

	relayedPackets, relayedBytes atomic.Uint64
	receivedPkts, receivedBytes  atomic.Uint64
	refused, authFailures        atomic.Uint64
	quotaRefused                 atomic.Uint64
}

// Listen starts a Server.
func Listen(cfg Config) (*Server, error) {
	if len(cfg.Secret) < minSecretLength {
		return nil, fmt.Errorf("turn: the secret must be at least %d bytes", minSecretLength)
	}
	if cfg.PublicIP == nil {
		return nil, errors.New("turn: no public IP to announce (set --turn-public-ip)")
	}
	if (cfg.RelayPortMin == 0) != (cfg.RelayPortMax == 0) || cfg.RelayPortMin > cfg.RelayPortMax ||
		cfg.RelayPortMin < 0 || cfg.RelayPortMax > 65535 {
		return nil, fmt.Errorf("turn: bad relay port range %d-%d", cfg.RelayPortMin, cfg.RelayPortMax)
	}
	if cfg.Realm == "" {
		cfg.Realm = DefaultRealm
	}
	if cfg.ListenIP == "" {
		cfg.ListenIP = "0.0.0.0"
	}
	if cfg.UserQuota == 0 {
		cfg.UserQuota = DefaultUserQuota
	}
	if cfg.CredentialTTL == 0 {
		cfg.CredentialTTL = DefaultCredentialTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Host == "" {
		cfg.Host = cfg.PublicIP.String()
	}
	cfg.Policy = cfg.Policy.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, allocs: map[string]int{}, admitted: map[string][]time.Time{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "turn")

	udp, tcp, err := listenPair(cfg.ListenIP, cfg.Port)
	if err != nil {
		return nil, err
	}
	s.udp = udp
	port := udp.LocalAddr().(*net.UDPAddr).Port
	var ln net.Listener = tcp
	if cfg.TLS != nil {
		ln = tls.NewListener(tcp, cfg.TLS)
	}
	s.tcp = ln

	host := net.JoinHostPort(cfg.Host, strconv.Itoa(port))
	s.urls = []string{"turn:" + host + "?transport=udp"}
	if cfg.TLS != nil {
		s.urls = append(s.urls, "turns:"+host+"?transport=tcp")
	} else {
		s.urls = append(s.urls, "turn:"+host+"?transport=tcp")
	}

	gen := func() pionturn.RelayAddressGenerator {
		return &relayGenerator{s: s, inner: s.innerGenerator()}
	}
	perm := func(_ net.Addr, peer net.IP) bool {
		ip, ok := netip.AddrFromSlice(peer)
		if ok && s.cfg.Policy.AllowsIP(ip) {
			return true
		}
		s.refused.Add(1)
		s.log.Debug("permission refused", "peer", peer.String())
		return false
	}
	ts, err := pionturn.NewServer(pionturn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.quota,
		LoggerFactory: pionLogs{s.log},
		EventHandler: pionturn.EventHandler{
			OnAuth: func(src, _ net.Addr, _, user, _, method string, ok bool) {
				if !ok {
					s.authFailures.Add(1)
					s.log.Debug("credential refused: bad password", "username", user, "from", src.String(), "method", method)
				}
			},
			OnAllocationCreated: func(_, _ net.Addr, _, user, _ string, _ net.Addr, _ int) { s.addAlloc(user, 1) },
			OnAllocationDeleted: func(_, _ net.Addr, _, user, _ string) { s.addAlloc(user, -1) },
		},
		PacketConnConfigs: []pionturn.PacketConnConfig{{PacketConn: udp, RelayAddressGenerator: gen(), PermissionHandler: perm}},
		ListenerConfigs:   []pionturn.ListenerConfig{{Listener: ln, RelayAddressGenerator: gen(), PermissionHandler: perm}},
	})
	if err != nil {
		udp.Close()
		tcp.Close()
		return nil, fmt.Errorf("turn: start: %w", err)
	}
	s.ts = ts
	s.log.Info("TURN server listening", "udp", udp.LocalAddr().String(), "tcp", tcp.Addr().String(),
		"tls", cfg.TLS != nil, "urls", s.urls)
	return s, nil
}

// listenPair binds UDP and TCP on the same port number.
func listenPair(ip string, port int) (net.PacketConn, net.Listener, error) {
	for range maxPortTries {
		udp, err := net.ListenPacket("udp4", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return nil, nil, fmt.Errorf("turn: listen UDP %s:%d: %w", ip, port, err)
		}
		p := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp4", net.JoinHostPort(ip, strconv.Itoa(p)))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if port != 0 {
			return nil, nil, fmt.Errorf("turn: listen TCP %s:%d: %w", ip, port, err)
		}
	}
	return nil, nil, fmt.Errorf("turn: no port free for both UDP and TCP on %s after %d tries", ip, maxPortTries)
}

func (s *Server) innerGenerator() pionturn.RelayAddressGenerator {
	if s.cfg.RelayPortMin != 0 {
		return &pionturn.RelayAddressGeneratorPortRange{
			RelayAddress: s.cfg.PublicIP,
			Address:      s.cfg.ListenIP,
			MinPort:      uint16(s.cfg.RelayPortMin),
			MaxPort:      uint16(s.cfg.RelayPortMax),
			MaxRetries:   relayAllocationsRetry,
		}
	}
	return &pionturn.RelayAddressGeneratorStatic{RelayAddress: s.cfg.PublicIP, Address: s.cfg.ListenIP}
}

// URLs are the server's URLs for RTCIceServer.urls.
func (s *Server) URLs() []string { return append([]string(nil), s.urls...) }

// UDPAddr is the server's UDP address; its TCP port has the same number.
func (s *Server) UDPAddr() *net.UDPAddr { return s.udp.LocalAddr().(*net.UDPAddr) }

// Realm is the server's realm.
func (s *Server) Realm() string { return s.cfg.Realm }

// Credential returns a fresh credential for identity, valid for the
// configured lifetime.
func (s *Server) Credential(identity string) Credential {
	return NewCredential(s.cfg.Secret, identity, s.cfg.Now(), s.cfg.CredentialTTL)
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := 0
	for _, c := range s.allocs {
		n += c
	}
	s.mu.Unlock()
	return Stats{
		Allocations:    n,
		RelayedPackets: s.relayedPackets.Load(), RelayedBytes: s.relayedBytes.Load(),
		ReceivedPkts: s.receivedPkts.Load(), ReceivedBytes: s.receivedBytes.Load(),
		Refused: s.refused.Load(), AuthFailures: s.authFailures.Load(), QuotaRefused: s.quotaRefused.Load(),
	}
}

// Close stops the server and ends every allocation.
func (s *Server) Close() error {
	var err error
	s.closed.Do(func() { err = s.ts.Close() })
	return err
}

// authenticate checks a TURN REST username: not expired, well formed;
// the key is derived from the password that only the secret's holders
// can compute, so a forged or another user's password fails the
// message integrity check. The user id, which quotas count, is the
// identity.
func (s *Server) authenticate(ra *pionturn.RequestAttributes) (string, []byte, bool) {
	identity, err := Check(ra.Username, s.cfg.Now())
	if err != nil || ra.Realm != s.cfg.Realm {
		s.authFailures.Add(1)
		s.log.Debug("credential refused", "username", ra.Username, "from", ra.SrcAddr.String(), "err", err)
		return "", nil, false
	}
	return identity, pionturn.GenerateAuthKey(ra.Username, s.cfg.Realm, Password(s.cfg.Secret, ra.Username)), true
}

// admitTimeout is how long an admitted allocation counts against the
// quota before it is created; one that fails after admission (no relay
// port, say) stops counting then.
const admitTimeout = 5 * time.Second

// quota admits an allocation while the identity holds, and has been
// admitted, fewer than the quota.
func (s *Server) quota(identity, _ string, src net.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	pending := s.admitted[identity]
	for len(pending) > 0 && now.Sub(pending[0]) > admitTimeout {
		pending = pending[1:]
	}
	if s.allocs[identity]+len(pending) < s.cfg.UserQuota {
		s.admitted[identity] = append(pending, now)
		return true
	}
	if len(pending) == 0 {
		delete(s.admitted, identity)
	} else {
		s.admitted[identity] = pending
	}
	s.quotaRefused.Add(1)
	s.log.Info("allocation quota reached", "identity", identity, "from", src.String(), "quota", s.cfg.UserQuota)
	return false
}

func (s *Server) addAlloc(identity string, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d > 0 {
		// Created: it no longer counts as admitted.
		if pending := s.admitted[identity]; len(pending) > 1 {
			s.admitted[identity] = pending[1:]
		} else {
			delete(s.admitted, identity)
		}
	}
	n := s.allocs[identity] + d
	if n <= 0 {
		delete(s.allocs, identity)
		return
	}
	s.allocs[identity] = n
}

// relayGenerator makes the relay sockets and wraps them so that every
// packet to a peer is checked against the policy (permissions are per
// address; the policy may allow only one port of an address) and counted.
type relayGenerator struct {
	s     *Server
	inner pionturn.RelayAddressGenerator
}

func (g *relayGenerator) Validate() error { return g.inner.Validate() }

func (g *relayGenerator) AllocatePacketConn(c pionturn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	conn, addr, err := g.inner.AllocatePacketConn(c)
	if err != nil {
		return nil, nil, err
	}
	return &relayConn{PacketConn: conn, s: g.s}, addr, nil
}

func (g *relayGenerator) AllocateListener(c pionturn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return g.inner.AllocateListener(c)
}

func (g *relayGenerator) AllocateConn(c pionturn.AllocateConnConfig) (net.Conn, error) {
	if ap, ok := addrPortOf(c.RemoteAddr); !ok || !g.s.cfg.Policy.AllowsPeer(ap) {
		g.s.refused.Add(1)
		return nil, fmt.Errorf("%w: %s", errPeerRefused, c.RemoteAddr)
	}
	return g.inner.AllocateConn(c)
}

// relayConn is one UDP relay socket.
type relayConn struct {
	net.PacketConn
	s *Server
}

func (c *relayConn) WriteTo(p []byte, to net.Addr) (int, error) {
	if ap, ok := addrPortOf(to); !ok || !c.s.cfg.Policy.AllowsPeer(ap) {
		c.s.refused.Add(1)
		return 0, fmt.Errorf("%w: %s", errPeerRefused, to)
	}
	n, err := c.PacketConn.WriteTo(p, to)
	if err == nil {
		c.s.relayedPackets.Add(1)
		c.s.relayedBytes.Add(uint64(n))
	}
	return n, err
}

func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		c.s.receivedPkts.Add(1)
		c.s.receivedBytes.Add(uint64(n))
	}
	return n, from, err
}

// pionLogs sends Pion's lines to slog, one level down: what Pion calls an
// error is usually one client's bad packet.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("scope", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) Trace(string)              {}
func (l pionLogger) Tracef(string, ...any)     {}
func (l pionLogger) Debug(m string)            { l.log.Debug(m) }
func (l pionLogger) Debugf(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l pionLogger) Info(m string)             { l.log.Debug(m) }
func (l pionLogger) Infof(f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l pionLogger) Warn(m string)             { l.log.Info(m) }
func (l pionLogger) Warnf(f string, a ...any)  { l.log.Info(fmt.Sprintf(f, a...)) }
func (l pionLogger) Error(m string)            { l.log.Warn(m) }
func (l pionLogger) Errorf(f string, a ...any) { l.log.Warn(fmt.Sprintf(f, a...)) }

var _ logging.LoggerFactory = pionLogs{}
