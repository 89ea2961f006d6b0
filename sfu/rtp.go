package sfu

import (
	"encoding/binary"
	"errors"
)

// maxExtensions bounds the header extensions a packetView records; more
// are ignored (and so not forwarded).
const maxExtensions = 8

// errShortPacket and friends are returned by parseRTP.
var (
	errShortPacket = errors.New("rtp: packet too short")
	errBadVersion  = errors.New("rtp: version is not 2")
	errBadPadding  = errors.New("rtp: bad padding")
)

// extension locates one RTP header extension element inside a packet.
type extension struct {
	id       uint8
	off, len uint16
}

// packetView is a parsed RTP packet that points into the buffer it was
// parsed from: parsing copies nothing and allocates nothing.
type packetView struct {
	buf          []byte
	marker       bool
	payloadType  uint8
	seq          uint16
	timestamp    uint32
	ssrc         uint32
	extProfile   uint16
	exts         [maxExtensions]extension
	nExts        int
	payloadStart int
	payloadEnd   int // excludes padding
	paddingSize  uint8
	arrival      int64 // Unix ns, set by the reader
}

// payload returns the media payload without padding.
func (p *packetView) payload() []byte { return p.buf[p.payloadStart:p.payloadEnd] }

// extensionByID returns the payload of extension id, or nil.
func (p *packetView) extensionByID(id uint8) []byte {
	for i := 0; i < p.nExts; i++ {
		if e := p.exts[i]; e.id == id {
			return p.buf[e.off : e.off+e.len]
		}
	}
	return nil
}

// parseRTP parses the RTP packet in b into p. It validates lengths so
// that no slice of p can go out of range.
func parseRTP(b []byte, p *packetView) error {
	if len(b) < 12 {
		return errShortPacket
	}
	if b[0]>>6 != 2 {
		return errBadVersion
	}
	p.buf = b
	hasPadding := b[0]&0x20 != 0
	hasExt := b[0]&0x10 != 0
	cc := int(b[0] & 0x0f)
	p.marker = b[1]&0x80 != 0
	p.payloadType = b[1] & 0x7f
	p.seq = binary.BigEndian.Uint16(b[2:])
	p.timestamp = binary.BigEndian.Uint32(b[4:])
	p.ssrc = binary.BigEndian.Uint32(b[8:])
	p.nExts = 0
	p.extProfile = 0
	off := 12 + 4*cc
	if len(b) < off {
		return errShortPacket
	}
	if hasExt {
		if len(b) < off+4 {
			return errShortPacket
		}
		p.extProfile = binary.BigEndian.Uint16(b[off:])
		extLen := 4 * int(binary.BigEndian.Uint16(b[off+2:]))
		off += 4
		end := off + extLen
		if len(b) < end {
			return errShortPacket
		}
		p.parseExtensions(off, end)
		off = end
	}
	p.payloadStart = off
	p.payloadEnd = len(b)
	p.paddingSize = 0
	if hasPadding {
		pad := int(b[len(b)-1])
		if pad == 0 || len(b)-pad < off {
			return errBadPadding
		}
		p.paddingSize = uint8(pad)
		p.payloadEnd = len(b) - pad
	}
	return nil
}

// parseExtensions records the one-byte (RFC 8285 §4.2) or two-byte (§4.3)
// extension elements in b[off:end]. Other profiles are ignored.
func (p *packetView) parseExtensions(off, end int) {
	b := p.buf
	switch {
	case p.extProfile == 0xBEDE:
		for off < end && p.nExts < maxExtensions {
			if b[off] == 0 { // padding
				off++
				continue
			}
			id := b[off] >> 4
			l := int(b[off]&0x0f) + 1
			if id == 15 { // reserved: stop parsing
				return
			}
			off++
			if off+l > end {
				return
			}
			p.exts[p.nExts] = extension{id: id, off: uint16(off), len: uint16(l)}
			p.nExts++
			off += l
		}
	case p.extProfile&0xfff0 == 0x1000:
		for off < end && p.nExts < maxExtensions {
			if b[off] == 0 {
				off++
				continue
			}
			if off+2 > end {
				return
			}
			id := b[off]
			l := int(b[off+1])
			off += 2
			if off+l > end {
				return
			}
			p.exts[p.nExts] = extension{id: id, off: uint16(off), len: uint16(l)}
			p.nExts++
			off += l
		}
	}
}
