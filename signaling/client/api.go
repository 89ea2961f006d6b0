package client

import (
	"fmt"
	"net"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// URIAbsCaptureTime is the header extension in which publishers put their
// send time and subscribers read it back to measure forwarding latency.
const URIAbsCaptureTime = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"

// APIOptions configures the Pion API a client builds its PeerConnections
// with.
type APIOptions struct {
	// LoopbackOnly gathers candidates on loopback interfaces only and
	// ignores remote candidates that are not loopback: for tests and for
	// bots that run next to the server.
	LoopbackOnly bool
	// Configure, when set, adjusts the SettingEngine last.
	Configure func(*webrtc.SettingEngine)
	// Interceptors are added before the default ones: they see outgoing
	// packets last, nearest the wire (tests use one to lose packets).
	Interceptors []interceptor.Factory
}

// NewAPI returns a Pion API with the default codecs (Opus, VP8, VP9,
// H.264), the default interceptors (NACK generator and responder, RTCP
// reports, stats, TWCC feedback) plus transport-wide sequence numbers on
// what it sends, and abs-capture-time negotiated for audio and video.
// Candidates include loopback; mDNS is off; UDP over IPv4 only.
//
// One API may serve many clients: its interceptors are built per
// PeerConnection.
func NewAPI(o APIOptions) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("client: register codecs: %w", err)
	}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: URIAbsCaptureTime}, kind); err != nil {
			return nil, fmt.Errorf("client: register abs-capture-time for %s: %w", kind, err)
		}
	}
	reg := &interceptor.Registry{}
	for _, f := range o.Interceptors {
		reg.Add(f)
	}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, fmt.Errorf("client: register interceptors: %w", err)
	}
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(m, reg); err != nil {
		return nil, fmt.Errorf("client: register twcc sender: %w", err)
	}

	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	if o.LoopbackOnly {
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetRemoteIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	if o.Configure != nil {
		o.Configure(&se)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// ExtensionID returns the id negotiated for the header extension uri in
// exts (from RTPSender.GetParameters or RTPReceiver.GetParameters), or 0
// when it was not negotiated.
func ExtensionID(exts []webrtc.RTPHeaderExtensionParameter, uri string) uint8 {
	for _, e := range exts {
		if e.URI == uri && e.ID > 0 && e.ID < 256 {
			return uint8(e.ID)
		}
	}
	return 0
}
