package turn

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// DefaultDeny returns the peer ranges a relay refuses unless a Policy
// allows them: this host, private networks, carrier-grade NAT, link-local,
// multicast and reserved ranges. Relaying there would let anyone with a
// credential reach services behind the server's firewall.
func DefaultDeny() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.0.0.0/24"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("224.0.0.0/4"),
		netip.MustParsePrefix("240.0.0.0/4"),
		netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("64:ff9b::/96"),
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("ff00::/8"),
	}
}

// Policy decides which peers a relay may talk to. A peer is allowed when
// its address is in AllowNets, or it is exactly one of AllowPeers, or it
// is in none of the Deny ranges (DefaultDeny when Deny is nil; a
// Policy used directly, not through a Server, must have Deny set).
type Policy struct {
	// AllowNets are ranges allowed even though Deny covers them (the
	// tests allow loopback this way).
	AllowNets []netip.Prefix
	// AllowPeers are single transport addresses allowed even though Deny
	// covers their address: the SFU's own media ports, so that a relay on
	// the same host reaches the SFU and nothing else there.
	AllowPeers []netip.AddrPort
	// Deny are the refused ranges; nil means DefaultDeny.
	Deny []netip.Prefix
}

// withDefaults returns a copy of p with Deny filled in.
func (p Policy) withDefaults() Policy {
	if p.Deny == nil {
		p.Deny = DefaultDeny()
	}
	return p
}

func (p *Policy) openIP(ip netip.Addr) bool {
	for _, n := range p.AllowNets {
		if n.Contains(ip) {
			return true
		}
	}
	for _, n := range p.Deny {
		if n.Contains(ip) {
			return false
		}
	}
	return true
}

// AllowsIP reports whether a permission for ip may be installed: the
// address is open, or some allowed peer has it (its port is then checked
// on every packet by AllowsPeer).
func (p *Policy) AllowsIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return false
	}
	if p.openIP(ip) {
		return true
	}
	for _, ap := range p.AllowPeers {
		if ap.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

// AllowsPeer reports whether the relay may send to ap.
func (p *Policy) AllowsPeer(ap netip.AddrPort) bool {
	ip := ap.Addr().Unmap()
	if !ip.IsValid() {
		return false
	}
	if p.openIP(ip) {
		return true
	}
	for _, a := range p.AllowPeers {
		if a.Addr().Unmap() == ip && a.Port() == ap.Port() {
			return true
		}
	}
	return false
}

// ParsePrefixes parses CIDR ranges or single addresses ("127.0.0.0/8",
// "::1") as given to --turn-allow-peer.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("turn: allowed peer range %q: %w", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("turn: allowed peer address %q: %w", s, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// addrPortOf converts a net.Addr of a UDP or TCP peer.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort(), true
	case *net.TCPAddr:
		return v.AddrPort(), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}
