package turn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	pionturn "github.com/pion/turn/v5"
)

var testSecret = []byte("a test secret of 32 bytes.......")

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("HUDDLE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func loopbackOnly() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
}

// startServer runs a server on a free loopback port.
func startServer(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Secret:   testSecret,
		ListenIP: "127.0.0.1",
		PublicIP: net.ParseIP("127.0.0.1"),
		Policy:   Policy{AllowNets: loopbackOnly()},
		Logger:   testLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// turnClient is a Pion TURN client on its own socket.
type turnClient struct {
	c    *pionturn.Client
	conn net.PacketConn
}

// dial makes a client of srv over transport "udp", "tcp" or "tls".
func dial(t *testing.T, srv *Server, transport, user, pass string, tlsCfg *tls.Config) *turnClient {
	t.Helper()
	addr := srv.UDPAddr().String()
	var conn net.PacketConn
	switch transport {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case "tcp":
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn = pionturn.NewSTUNConn(c)
	case "tls":
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp4", addr, tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		conn = pionturn.NewSTUNConn(c)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Conn:           conn,
		Username:       user,
		Password:       pass,
		Realm:          srv.Realm(),
		RTO:            200 * time.Millisecond,
		LoggerFactory:  lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	tc := &turnClient{c: c, conn: conn}
	t.Cleanup(func() {
		c.Close()
		conn.Close()
	})
	return tc
}

// peer is a UDP echo server on loopback; it counts what it gets.
type peer struct {
	conn net.PacketConn
	got  chan []byte
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{conn: c, got: make(chan []byte, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			b := append([]byte(nil), buf[:n]...)
			select {
			case p.got <- b:
			default:
			}
			_, _ = c.WriteTo(b, from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return p
}

func (p *peer) addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

// roundTrip sends msg through relay to p and reads the echo back.
func roundTrip(t *testing.T, relay net.PacketConn, p *peer, msg []byte) error {
	t.Helper()
	if _, err := relay.WriteTo(msg, p.addr()); err != nil {
		return err
	}
	select {
	case b := <-p.got:
		if !bytes.Equal(b, msg) {
			t.Fatalf("peer got %q; want %q", b, msg)
		}
	case <-time.After(3 * time.Second):
		return errors.New("the peer got nothing within 3 s")
	}
	buf := make([]byte, 1500)
	_ = relay.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := relay.ReadFrom(buf)
	if err != nil {
		return err
	}
	if !bytes.Equal(buf[:n], msg) || from.String() != p.addr().String() {
		t.Fatalf("relay read %q from %v; want %q from %v", buf[:n], from, msg, p.addr())
	}
	return nil
}

func selfSigned(t *testing.T) (*tls.Config, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "turn.test"},
		DNSNames:     []string{"turn.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	srv := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	cli := &tls.Config{RootCAs: pool, ServerName: "turn.test", MinVersion: tls.VersionTLS12}
	return srv, cli
}

// TestRelay allocates over UDP, TCP and TLS with a good credential and
// relays a datagram to a loopback peer and back.
func TestRelay(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			var cliTLS *tls.Config
			srv := startServer(t, func(c *Config) {
				if transport == "tls" {
					c.TLS, cliTLS = selfSigned(t)
					c.Host = "turn.test"
				}
			})
			urls := srv.URLs()
			port := strconv.Itoa(srv.UDPAddr().Port)
			wantTCP := "turn:127.0.0.1:" + port + "?transport=tcp"
			if transport == "tls" {
				wantTCP = "turns:turn.test:" + port + "?transport=tcp"
			}
			if len(urls) != 2 || urls[1] != wantTCP {
				t.Fatalf("URLs = %v; want the second %q", urls, wantTCP)
			}
			cred := srv.Credential("ada")
			c := dial(t, srv, transport, cred.Username, cred.Password, cliTLS)
			relay, err := c.c.Allocate()
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			defer relay.Close()
			if got := relay.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.1" {
				t.Errorf("relay address %s; want the public IP 127.0.0.1", got)
			}
			p := newPeer(t)
			if err := roundTrip(t, relay, p, []byte("hello via "+transport)); err != nil {
				t.Fatalf("round trip: %v", err)
			}
			// The relay counts a packet after its write returns, which may
			// be after the echo came back.
			st := srv.Stats()
			for deadline := time.Now().Add(2 * time.Second); st.RelayedPackets < 1 && time.Now().Before(deadline); st = srv.Stats() {
				time.Sleep(10 * time.Millisecond)
			}
			if st.Allocations != 1 || st.RelayedPackets < 1 || st.ReceivedPkts < 1 {
				t.Errorf("stats %+v; want 1 allocation and a packet each way", st)
			}
		})
	}
}

// TestCredentialsRefused tries an expired credential, a forged password,
// another user's password, a credential of another secret and a
// malformed username: every allocation is refused, and the same socket
// then allocates with a good one.
func TestCredentialsRefused(t *testing.T) {
	srv := startServer(t, nil)
	now := time.Now()
	ada := srv.Credential("ada")
	bob := srv.Credential("bob")
	expired := NewCredential(testSecret, "ada", now.Add(-2*time.Hour), time.Hour)
	other := NewCredential([]byte("another secret, 32 bytes long..."), "ada", now, time.Hour)
	cases := []struct{ name, user, pass string }{
		{"expired", expired.Username, expired.Password},
		{"forged", ada.Username, "bm90IHRoZSBwYXNzd29yZA=="},
		{"other user's password", bob.Username, ada.Password},
		{"renamed user", "9999999999:ada", bob.Password},
		{"other secret", other.Username, other.Password},
		{"malformed", "ada", Password(testSecret, "ada")},
	}
	for _, tc := range cases {
		c := dial(t, srv, "udp", tc.user, tc.pass, nil)
		if relay, err := c.c.Allocate(); err == nil {
			relay.Close()
			t.Errorf("%s: allocation accepted", tc.name)
		}
	}
	if st := srv.Stats(); st.Allocations != 0 || st.AuthFailures < uint64(len(cases)) {
		t.Errorf("stats %+v; want 0 allocations and at least %d refused credentials", st, len(cases))
	}
	c := dial(t, srv, "udp", ada.Username, ada.Password, nil)
	relay, err := c.c.Allocate()
	if err != nil {
		t.Fatalf("good credential: %v", err)
	}
	relay.Close()
}

// TestExpiryEndsRefresh checks that a credential that expires while in
// use no longer refreshes: a request made after its expiry is refused.
func TestExpiryEndsRefresh(t *testing.T) {
	var clock atomicTime
	clock.Store(time.Now())
	srv := startServer(t, func(c *Config) { c.Now = clock.Load; c.CredentialTTL = time.Minute })
	cred := srv.Credential("ada")
	c := dial(t, srv, "udp", cred.Username, cred.Password, nil)
	relay, err := c.c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	defer relay.Close()
	p := newPeer(t)
	if err := roundTrip(t, relay, p, []byte("before")); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	clock.Store(clock.Load().Add(2 * time.Minute))
	before := srv.Stats().AuthFailures
	// A permission for a new peer needs an authenticated request.
	// The server must refuse it (counted); the client must see the
	// refusal (three tries, so that a lost datagram cannot pass for one).
	q := newPeer(t)
	refused := false
	for range 3 {
		if err := c.c.CreatePermission(q.addr()); err != nil {
			refused = true
			break
		}
	}
	if !refused {
		t.Error("CreatePermission with an expired credential succeeded")
	}
	if srv.Stats().AuthFailures <= before {
		t.Errorf("no refused credential counted")
	}
}

// TestQuota lets one identity hold two allocations, refuses a third
// (from another socket, with a fresh credential), and admits it again
// once one is released. Another identity is not affected.
func TestQuota(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.UserQuota = 2 })
	var relays []net.PacketConn
	for i := range 2 {
		cred := srv.Credential("ada")
		r, err := dial(t, srv, "udp", cred.Username, cred.Password, nil).c.Allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		relays = append(relays, r)
	}
	cred := srv.Credential("ada")
	if r, err := dial(t, srv, "udp", cred.Username, cred.Password, nil).c.Allocate(); err == nil {
		r.Close()
		t.Fatal("a third allocation for ada was accepted with a quota of 2")
	}
	if st := srv.Stats(); st.QuotaRefused != 1 || st.Allocations != 2 {
		t.Fatalf("stats %+v; want 1 refused by quota, 2 allocations", st)
	}
	bob := srv.Credential("bob")
	rb, err := dial(t, srv, "udp", bob.Username, bob.Password, nil).c.Allocate()
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	defer rb.Close()

	relays[0].Close() // deallocates (refresh with lifetime 0)
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Allocations != 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cred = srv.Credential("ada")
	r, err := dial(t, srv, "udp", cred.Username, cred.Password, nil).c.Allocate()
	if err != nil {
		t.Fatalf("after releasing one: %v", err)
	}
	r.Close()
	relays[1].Close()
}

// TestQuotaCountsAdmittedAllocations: an allocation the quota admitted
// counts until it is created (or the admission times out), so that two
// admissions before either allocation exists cannot exceed the quota.
func TestQuotaCountsAdmittedAllocations(t *testing.T) {
	s := &Server{cfg: Config{UserQuota: 2}, log: testLogger(), allocs: map[string]int{}, admitted: map[string][]time.Time{}}
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	if !s.quota("ada", "", src) || !s.quota("ada", "", src) {
		t.Fatal("the first two admissions refused")
	}
	if s.quota("ada", "", src) {
		t.Fatal("a third admission before any allocation exists passed a quota of 2")
	}
	s.addAlloc("ada", 1) // the first is created: still two held
	if s.quota("ada", "", src) {
		t.Fatal("admitted with one allocation and one admission held")
	}
	s.addAlloc("ada", -1) // released
	if !s.quota("ada", "", src) {
		t.Fatal("refused after one was released")
	}
	// An admission whose allocation never came stops counting.
	s.admitted["bob"] = []time.Time{time.Now().Add(-2 * admitTimeout), time.Now().Add(-2 * admitTimeout)}
	if !s.quota("bob", "", src) {
		t.Fatal("stale admissions still count")
	}
}

// TestQuotaUnderConcurrentRequests: allocation requests of one identity
// arriving together on many TCP connections (each read on its own
// goroutine) and over UDP get exactly the quota, no more; for three
// identities at once.
func TestQuotaUnderConcurrentRequests(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.UserQuota = 2 })
	identities := []string{"ada", "bob", "cyd"}
	const perIdentity = 40
	type attempt struct {
		identity string
		c        *turnClient
	}
	var attempts []attempt
	for _, id := range identities {
		for i := range perIdentity {
			cred := srv.Credential(id)
			transport := "tcp"
			if i%8 == 7 {
				transport = "udp"
			}
			attempts = append(attempts, attempt{id, dial(t, srv, transport, cred.Username, cred.Password, nil)})
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := map[string]int{}
	start := make(chan struct{})
	for _, a := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if r, err := a.c.c.Allocate(); err == nil {
				mu.Lock()
				granted[a.identity]++
				mu.Unlock()
				t.Cleanup(func() { r.Close() })
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, id := range identities {
		if granted[id] != 2 {
			t.Errorf("%s: %d of %d simultaneous allocations granted with a quota of 2; want 2", id, granted[id], perIdentity)
		}
	}
	want := len(identities) * 2
	if st := srv.Stats(); st.Allocations != want || st.QuotaRefused != uint64(len(attempts)-want) {
		t.Fatalf("stats %+v; want %d allocations, %d refused by quota", st, want, len(attempts)-want)
	}
}

// TestPolicy checks the allow-list: with the default policy, permissions
// for loopback and private peers are refused; an exactly allowed peer
// (the SFU's media port) is reachable and another port of the same
// address is not.
func TestPolicy(t *testing.T) {
	allowed := newPeer(t)
	other := newPeer(t)
	srv := startServer(t, func(c *Config) {
		c.Policy = Policy{AllowPeers: []netip.AddrPort{allowed.addr().AddrPort()}}
	})
	cred := srv.Credential("ada")
	c := dial(t, srv, "udp", cred.Username, cred.Password, nil)
	relay, err := c.c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	defer relay.Close()
	for _, a := range []string{"10.1.2.3:9", "192.168.1.1:9", "169.254.1.1:9", "172.16.0.1:9", "127.0.0.2:9", "0.0.0.0:9"} {
		ua, _ := net.ResolveUDPAddr("udp4", a)
		if err := c.c.CreatePermission(ua); err == nil {
			t.Errorf("permission for %s granted", a)
		}
	}
	if err := c.c.CreatePermission(&net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 9}); err != nil {
		t.Errorf("permission for a public address refused: %v", err)
	}
	if err := roundTrip(t, relay, allowed, []byte("to the SFU port")); err != nil {
		t.Fatalf("allowed peer: %v", err)
	}
	before := srv.Stats().Refused
	if _, err := relay.WriteTo([]byte("elsewhere"), other.addr()); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	select {
	case b := <-other.got:
		t.Fatalf("another port of an allowed address got %q", b)
	case <-time.After(500 * time.Millisecond):
	}
	if srv.Stats().Refused <= before {
		t.Errorf("the refused packet was not counted")
	}
}

func TestPolicyRules(t *testing.T) {
	p := Policy{
		AllowNets:  []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")},
		AllowPeers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7801")},
	}.withDefaults()
	for _, tc := range []struct {
		ap   string
		ip   bool
		peer bool
	}{
		{"8.8.8.8:53", true, true},
		{"10.9.1.1:5", true, true},
		{"10.8.1.1:5", false, false},
		{"127.0.0.1:7801", true, true},
		{"127.0.0.1:22", true, false},
		{"[::ffff:127.0.0.1]:22", true, false},
		{"[::ffff:10.0.0.1]:22", false, false},
		{"[::1]:7801", false, false},
		{"[fe80::1]:1", false, false},
		{"[2001:db8::1]:1", true, true},
	} {
		ap := netip.MustParseAddrPort(tc.ap)
		if got := p.AllowsIP(ap.Addr()); got != tc.ip {
			t.Errorf("AllowsIP(%s) = %v", ap.Addr(), got)
		}
		if got := p.AllowsPeer(ap); got != tc.peer {
			t.Errorf("AllowsPeer(%s) = %v", ap, got)
		}
	}
	got, err := ParsePrefixes([]string{"127.0.0.0/8", " ::1 ", "10.1.2.3"})
	if err != nil || len(got) != 3 || got[1].String() != "::1/128" || got[2].String() != "10.1.2.3/32" {
		t.Errorf("ParsePrefixes = %v, %v", got, err)
	}
	if _, err := ParsePrefixes([]string{"nope"}); err == nil {
		t.Error("ParsePrefixes accepted nonsense")
	}
}

func TestListenRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"short secret": {Secret: []byte("short"), PublicIP: net.ParseIP("127.0.0.1")},
		"no public IP": {Secret: testSecret},
		"bad range":    {Secret: testSecret, PublicIP: net.ParseIP("127.0.0.1"), RelayPortMin: 5000},
	} {
		if s, err := Listen(cfg); err == nil {
			s.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// atomicTime is a clock the test moves.
type atomicTime struct{ ns atomic.Int64 }

func (a *atomicTime) Store(t time.Time) { a.ns.Store(t.UnixNano()) }
func (a *atomicTime) Load() time.Time   { return time.Unix(0, a.ns.Load()) }
