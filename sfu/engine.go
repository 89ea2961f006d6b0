// Package sfu owns the media path: Pion API setup (codecs, interceptors,
// one UDP port for all peers, ICE-TCP), one participant's two transports
// (publish and subscribe), the forwarding of RTP from each published track
// to its subscribers, retransmission from a shared history, keyframe
// requests, and the data-channel plumbing. It knows nothing of rooms or
// signaling: those talk to it through Peer and PeerEvents.
package sfu

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/quality"
)

// Header extension URIs the SFU negotiates.
const (
	URIAudioLevel       = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
	URIAbsCaptureTime   = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
	URIVideoOrientation = "urn:3gpp:video-orientation"
)

// Config sets up the media engine.
type Config struct {
	// UDPPort is the one UDP port for all peers (ICE UDP mux); 0 picks a
	// free port. ICE-TCP listens on the same port number when ICETCP is set.
	UDPPort int
	ICETCP  bool
	// ListenIP restricts the ICE sockets to one local address; empty
	// means all interfaces.
	ListenIP string
	// PublicIPs are announced instead of the host addresses (NAT 1:1).
	PublicIPs []string
	// IncludeLoopback gathers loopback candidates (for a server and
	// clients on one machine, and for tests).
	IncludeLoopback bool
	// IPFilter, when set, keeps only the local addresses it accepts.
	IPFilter func(net.IP) bool
	Logger   *slog.Logger
	// InitialEstimate is the bandwidth estimate a subscriber starts with,
	// in bits/s (default 2.5 Mbit/s): it picks the first simulcast layer.
	InitialEstimate int
	// VideoFloor, in bits/s, is the least bandwidth estimate at which a
	// subscriber still receives video without simulcast; below it the
	// subscriber gets audio only (default 0: no floor). Publishers without
	// simulcast are capped by REMB at what their subscribers take, never
	// below this floor.
	VideoFloor int
	// VideoMax, in bits/s, is the most a video track without simulcast
	// is asked (REMB) to send, whatever its subscribers could take
	// (default 0: no cap). The floor wins over it.
	VideoMax int
}

// Engine holds the Pion APIs and the shared ICE sockets. One per server.
type Engine struct {
	publishAPI   *webrtc.API
	subscribeAPI *webrtc.API
	udpMux       ice.UDPMux
	tcpListener  net.Listener
	tcpMux       ice.TCPMux
	log          *slog.Logger
	udpAddrs     []net.Addr
	alloc        quality.AllocatorConfig
	floor        int
	videoMax     int

	bweMu sync.Mutex
	bwes  map[string]cc.BandwidthEstimator // by PeerConnection id, until taken
}

// NewEngine opens the ICE sockets and builds the Pion APIs.
func NewEngine(cfg Config) (*Engine, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{log: log, bwes: map[string]cc.BandwidthEstimator{}, floor: cfg.VideoFloor, videoMax: cfg.VideoMax}
	e.alloc = quality.AllocatorConfig{Floor: cfg.VideoFloor}
	initial := cfg.InitialEstimate
	if initial <= 0 {
		initial = 2_500_000
	}

	ipFilter := cfg.IPFilter
	if cfg.ListenIP != "" {
		want := net.ParseIP(cfg.ListenIP)
		if want == nil {
			return nil, fmt.Errorf("sfu: bad listen IP %q", cfg.ListenIP)
		}
		prev := ipFilter
		ipFilter = func(ip net.IP) bool { return ip.Equal(want) && (prev == nil || prev(ip)) }
	}
	opts := []ice.UDPMuxFromPortOption{ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4)}
	if cfg.IncludeLoopback {
		opts = append(opts, ice.UDPMuxFromPortWithLoopback())
	}
	if ipFilter != nil {
		opts = append(opts, ice.UDPMuxFromPortWithIPFilter(ipFilter))
	}
	mux, err := ice.NewMultiUDPMuxFromPort(cfg.UDPPort, opts...)
	if err != nil {
		return nil, fmt.Errorf("sfu: open ICE UDP port %d: %w", cfg.UDPPort, err)
	}
	e.udpMux = mux
	e.udpAddrs = mux.GetListenAddresses()

	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(mux)
	networks := []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
	if cfg.ICETCP {
		port := cfg.UDPPort
		if port == 0 && len(e.udpAddrs) > 0 {
			if ua, ok := e.udpAddrs[0].(*net.UDPAddr); ok {
				port = ua.Port
			}
		}
		ln, err := net.Listen("tcp4", net.JoinHostPort(cfg.ListenIP, strconv.Itoa(port)))
		if err != nil {
			_ = mux.Close()
			return nil, fmt.Errorf("sfu: open ICE TCP port %d: %w", port, err)
		}
		e.tcpListener = ln
		e.tcpMux = webrtc.NewICETCPMux(nil, ln, 64)
		se.SetICETCPMux(e.tcpMux)
		networks = append(networks, webrtc.NetworkTypeTCP4)
	}
	se.SetNetworkTypes(networks)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if ipFilter != nil {
		se.SetIPFilter(ipFilter)
	}
	if len(cfg.PublicIPs) > 0 {
		se.SetNAT1To1IPs(cfg.PublicIPs, webrtc.ICECandidateTypeHost)
	}
	se.SetICETimeouts(5*time.Second, 10*time.Second, 2*time.Second)
	// AES-128-GCM first: measured here at about a sixth of the cost of
	// AES-CM with HMAC-SHA1 per packet; the mandatory profile stays last.
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AEAD_AES_256_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)

	if e.publishAPI, err = newAPI(se, true, nil); err != nil {
		_ = e.Close()
		return nil, err
	}
	bwe, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
		// No pacer: the SFU forwards as packets come (a pacer would
		// queue and copy every packet).
		return gcc.NewSendSideBWE(gcc.SendSideBWEInitialBitrate(initial), gcc.SendSideBWEPacer(gcc.NewNoOpPacer()))
	})
	if err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("sfu: bandwidth estimator: %w", err)
	}
	bwe.OnNewPeerConnection(func(id string, est cc.BandwidthEstimator) {
		e.bweMu.Lock()
		defer e.bweMu.Unlock()
		e.bwes[id] = est
	})
	if e.subscribeAPI, err = newAPI(se, false, bwe); err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

// newAPI builds the Pion API of one side. The publish side receives: it
// generates NACKs, receiver reports and TWCC feedback. The subscribe side
// sends: sender reports and transport-wide sequence numbers; NACKs from
// subscribers are answered by the SFU itself from the shared history,
// so Pion's per-sender NACK responder (a packet copy per subscriber) is
// not installed.
func newAPI(se webrtc.SettingEngine, publish bool, bwe interceptor.Factory) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	register := m.RegisterDefaultCodecs
	if publish {
		register = func() error { return registerCodecsWithoutRTX(m) }
	}
	if err := register(); err != nil {
		return nil, fmt.Errorf("sfu: register codecs: %w", err)
	}
	for _, ext := range []struct {
		uri   string
		kinds []webrtc.RTPCodecType
	}{
		{URIAudioLevel, []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio}},
		{URIAbsCaptureTime, []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo}},
		{URIVideoOrientation, []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo}},
	} {
		for _, k := range ext.kinds {
			if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: ext.uri}, k); err != nil {
				return nil, fmt.Errorf("sfu: register %s: %w", ext.uri, err)
			}
		}
	}
	reg := &interceptor.Registry{}
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "ccm", Parameter: "fir"}, webrtc.RTPCodecTypeVideo)
	if publish {
		// Publishers without simulcast are capped with REMB at what their
		// subscribers take.
		m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBGoogREMB}, webrtc.RTPCodecTypeVideo)
		gen, err := nack.NewGeneratorInterceptor()
		if err != nil {
			return nil, fmt.Errorf("sfu: nack generator: %w", err)
		}
		reg.Add(gen)
		rr, err := report.NewReceiverInterceptor()
		if err != nil {
			return nil, fmt.Errorf("sfu: receiver reports: %w", err)
		}
		reg.Add(rr)
		if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
			return nil, fmt.Errorf("sfu: simulcast extensions: %w", err)
		}
		if err := webrtc.ConfigureTWCCSender(m, reg); err != nil {
			return nil, fmt.Errorf("sfu: twcc feedback: %w", err)
		}
	} else {
		sr, err := report.NewSenderInterceptor()
		if err != nil {
			return nil, fmt.Errorf("sfu: sender reports: %w", err)
		}
		reg.Add(sr)
		// The estimator sees each packet after the transport-wide
		// sequence number is set (the later factory's writer runs first).
		if bwe != nil {
			reg.Add(bwe)
		}
		for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, k)
			if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, k); err != nil {
				return nil, fmt.Errorf("sfu: register transport-cc: %w", err)
			}
		}
		tw, err := twcc.NewHeaderExtensionInterceptor()
		if err != nil {
			return nil, fmt.Errorf("sfu: twcc header extension: %w", err)
		}
		reg.Add(tw)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(reg)), nil
}

// takeEstimator returns (and forgets) the bandwidth estimator of the
// subscribe PeerConnection id, or nil.
func (e *Engine) takeEstimator(id string) cc.BandwidthEstimator {
	e.bweMu.Lock()
	defer e.bweMu.Unlock()
	est := e.bwes[id]
	delete(e.bwes, id)
	return est
}

// UDPAddrs returns the local addresses of the ICE UDP sockets.
func (e *Engine) UDPAddrs() []net.Addr { return e.udpAddrs }

// Close closes the shared ICE sockets. Close every Peer first.
func (e *Engine) Close() error {
	var errs []error
	if e.udpMux != nil {
		errs = append(errs, e.udpMux.Close())
	}
	if e.tcpMux != nil {
		errs = append(errs, e.tcpMux.Close())
	}
	if e.tcpListener != nil {
		if err := e.tcpListener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// registerCodecsWithoutRTX registers Pion's default codecs (same payload
// types) but no RTX, for the publish side. The SFU answers NACKs from its
// own history and never unwraps RTX; and with RTX negotiated, a simulcast
// publisher that puts the rid instead of the repair rid on its RTX packets
// (Pion's NACK responder copies the header of the original packet) makes
// Pion take the RTX stream for a new stream of that rid: the layer's real
// packets are then no longer read and its video stops for every
// subscriber. Without RTX, retransmissions come on the layer's own SSRC.
func registerCodecsWithoutRTX(m *webrtc.MediaEngine) error {
	videoFB := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	audio := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeG722, ClockRate: 8000}, PayloadType: 9},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000}, PayloadType: 8},
	}
	for _, c := range audio {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return err
		}
	}
	h264 := func(mode int, profile string) string {
		return fmt.Sprintf("level-asymmetry-allowed=1;packetization-mode=%d;profile-level-id=%s", mode, profile)
	}
	video := []struct {
		mime string
		fmtp string
		pt   webrtc.PayloadType
	}{
		{webrtc.MimeTypeVP8, "", 96},
		{webrtc.MimeTypeH264, h264(1, "42001f"), 102},
		{webrtc.MimeTypeH264, h264(0, "42001f"), 104},
		{webrtc.MimeTypeH264, h264(1, "42e01f"), 106},
		{webrtc.MimeTypeH264, h264(0, "42e01f"), 108},
		{webrtc.MimeTypeH264, h264(1, "4d001f"), 127},
		{webrtc.MimeTypeH264, h264(0, "4d001f"), 39},
		{webrtc.MimeTypeH265, "", 116},
		{webrtc.MimeTypeAV1, "", 45},
		{webrtc.MimeTypeVP9, "profile-id=0", 98},
		{webrtc.MimeTypeVP9, "profile-id=2", 100},
		{webrtc.MimeTypeH264, h264(1, "64001f"), 112},
	}
	for _, v := range video {
		c := webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: v.mime, ClockRate: 90000, SDPFmtpLine: v.fmtp, RTCPFeedback: videoFB}, PayloadType: v.pt}
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return err
		}
	}
	return nil
}
