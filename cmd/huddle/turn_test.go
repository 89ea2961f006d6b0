package main

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
	"github.com/huddle-rtc/huddle/turn"
)

// runServe runs `huddle serve` in process with f on free loopback ports
// and returns its base URL; it stops when the test ends.
func runServe(t *testing.T, f serveFlags) string {
	t.Helper()
	f.listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, false)))
	f.udpPort = freePort(t, true)
	f.dev = true
	f.logLevel = "warn"
	f.maxData = 16 << 10
	f.dataDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, f) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("serve did not return within 15 s")
		}
	})
	base := "http://" + f.listen
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(15 * time.Second); ; {
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v", err)
		default:
		}
		if res, err := hc.Get(base + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func devToken(t *testing.T, room, identity string) string {
	t.Helper()
	tok, err := auth.Mint(auth.DevAPIKey, auth.DevAPISecret, auth.Token{Room: room, Identity: identity, TTL: time.Hour,
		Grants: []string{protocol.GrantPublish, protocol.GrantSubscribe, protocol.GrantData}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestRelayOnlyThroughEmbeddedTURN runs `serve` with its TURN server and
// two Pion clients whose ICE policy is relay: they must connect through
// the TURN server only (the selected pairs are relay candidates on the
// TURN server's relay address) and media must flow from one to the other.
// The relay reaches the SFU because the SFU's own media port is allowed,
// although the default policy denies loopback.
func TestRelayOnlyThroughEmbeddedTURN(t *testing.T) {
	f := serveFlags{turn: turnFlags{enabled: true, portSet: true, port: 0, quota: 10, ttl: time.Hour}}
	base := runServe(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	var got atomic.Int64
	dial := func(identity string, onTrack func(*webrtc.TrackRemote)) *client.Client {
		c, err := client.Dial(ctx, base, devToken(t, "relay room", identity), client.Options{
			LoopbackOnly:       true,
			ICETransportPolicy: webrtc.ICETransportPolicyRelay,
			OnTrack: func(_ protocol.Track, tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
				if onTrack != nil {
					onTrack(tr)
				}
				for {
					if _, _, err := tr.ReadRTP(); err != nil {
						return
					}
				}
			},
		})
		if err != nil {
			t.Fatalf("%s: dial: %v", identity, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	sub := dial("sub", func(tr *webrtc.TrackRemote) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			got.Add(1)
		}
	})
	pub := dial("pub", nil)

	// joined carries this participant's own TURN credential and URLs.
	ice := pub.Joined().ICEServers
	if len(ice) != 1 || len(ice[0].URLs) != 2 || !strings.HasPrefix(ice[0].URLs[0], "turn:127.0.0.1:") ||
		!strings.HasSuffix(ice[0].Username, ":pub") || ice[0].Credential == "" {
		t.Fatalf("joined ice_servers = %+v; want one TURN server with a credential for pub", ice)
	}
	exp, _, _ := strings.Cut(ice[0].Username, ":")
	if sec, err := strconv.ParseInt(exp, 10, 64); err != nil || time.Until(time.Unix(sec, 0)) > time.Hour+time.Minute {
		t.Errorf("credential expiry %q: want within the hour", exp)
	}
	if id, err := turn.Check(ice[0].Username, time.Now()); err != nil || id != "pub" {
		t.Errorf("turn.Check(%q) = %q, %v", ice[0].Username, id, err)
	}

	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "cam", "pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, client.PublishTrack{Track: track}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		frame := append([]byte{0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00}, make([]byte, 300)...)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = track.WriteSample(media.Sample{Data: frame, Duration: 20 * time.Millisecond})
			}
		}
	}()
	defer func() { close(stop); <-writerDone }()

	for _, c := range []struct {
		who  *client.Client
		name string
	}{{pub, protocol.TransportPublish}, {sub, protocol.TransportSubscribe}} {
		if err := c.who.WaitConnected(ctx, c.name); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		pair, err := c.who.SelectedPair(c.name)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if pair.Local.Typ != webrtc.ICECandidateTypeRelay {
			t.Errorf("%s: selected pair %s; want a relay local candidate", c.name, pair)
		}
		t.Logf("%s transport: %s", c.name, pair)
	}
	deadline := time.Now().Add(15 * time.Second)
	for got.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := got.Load(); n < 100 {
		t.Fatalf("the subscriber got %d RTP packets through the relay; want 100", n)
	}
	t.Logf("the subscriber got %d RTP packets through the relay", got.Load())
	// The server's side: both transports hold allocations and the relays
	// carried the media.
	hc := &http.Client{Timeout: time.Second}
	allocs, relayed := scrapeGauge(hc, base, "huddle_turn_allocations"), scrapeGauge(hc, base, "huddle_turn_relayed_packets_total")
	if allocs < 2 || relayed < 100 {
		t.Errorf("/metrics: %d TURN allocations, %d relayed packets; want at least 2 and 100", allocs, relayed)
	}
	t.Logf("/metrics: %d TURN allocations, %d relayed packets", allocs, relayed)
}

// TestTurnFlags covers the choice of the public address and the parsing
// of the flags.
func TestTurnFlags(t *testing.T) {
	ip, err := turnPublicIP(turnFlags{}, nil, "127.0.0.1")
	if err != nil || ip.String() != "127.0.0.1" {
		t.Errorf("loopback listen: %v, %v", ip, err)
	}
	ip, err = turnPublicIP(turnFlags{publicIP: "203.0.113.7"}, []string{"198.51.100.1"}, "0.0.0.0")
	if err != nil || ip.String() != "203.0.113.7" {
		t.Errorf("--turn-public-ip: %v, %v", ip, err)
	}
	ip, err = turnPublicIP(turnFlags{}, []string{"198.51.100.1"}, "0.0.0.0")
	if err != nil || ip.String() != "198.51.100.1" {
		t.Errorf("--public-ip: %v, %v", ip, err)
	}
	if _, err := turnPublicIP(turnFlags{publicIP: "nope"}, nil, ""); err == nil {
		t.Error("a bad --turn-public-ip was accepted")
	}
	if _, err := turnConfig(turnFlags{relayPorts: "9-"}, []byte("0123456789abcdef"), ip, nil, nil); err == nil {
		t.Error("a bad --turn-relay-ports was accepted")
	}
	if _, err := turnConfig(turnFlags{certFile: "x.pem"}, []byte("0123456789abcdef"), ip, nil, nil); err == nil {
		t.Error("--turn-cert without --turn-key was accepted")
	}
	a, b := turnSecret(turnFlags{}, "s1"), turnSecret(turnFlags{}, "s2")
	if string(a) == string(b) || len(a) != 32 || string(turnSecret(turnFlags{secret: "given"}, "s1")) != "given" {
		t.Error("turnSecret")
	}
}
