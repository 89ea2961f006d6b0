package sfu

// vp8Descriptor locates the fields of a VP8 payload descriptor (RFC 7741
// §4.2) that a layer switch rewrites.
type vp8Descriptor struct {
	size     int  // bytes of descriptor before the VP8 payload header
	picIDOff int  // offset of the picture id; 0 when absent
	picIDLen int  // 1 (7-bit) or 2 (15-bit) bytes; 0 when absent
	tl0Off   int  // offset of TL0PICIDX; 0 when absent
	start    bool // S bit with partition index 0: the first packet of a frame
	keyframe bool // the first packet of a key frame
}

// parseVP8 parses the descriptor at the start of a VP8 RTP payload. It
// reports false when the payload is too short for what the descriptor
// announces.
func parseVP8(b []byte, d *vp8Descriptor) bool {
	*d = vp8Descriptor{}
	if len(b) < 1 {
		return false
	}
	i := 1
	if b[0]&0x80 != 0 { // X: extended control bits
		if len(b) < 2 {
			return false
		}
		x := b[1]
		i = 2
		if x&0x80 != 0 { // I: picture id
			if len(b) <= i {
				return false
			}
			d.picIDOff = i
			d.picIDLen = 1
			if b[i]&0x80 != 0 {
				d.picIDLen = 2
			}
			i += d.picIDLen
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			if len(b) <= i {
				return false
			}
			d.tl0Off = i
			i++
		}
		if x&0x30 != 0 { // T or K: TID/Y/KEYIDX
			i++
		}
	}
	if len(b) < i {
		return false
	}
	d.size = i
	d.start = b[0]&0x10 != 0 && b[0]&0x07 == 0
	// The P bit of the VP8 payload header is 0 for key frames.
	d.keyframe = d.start && len(b) > i && b[i]&0x01 == 0
	return true
}

// vp8PictureID returns the picture id and its modulus (128 or 32768).
func vp8PictureID(b []byte, d *vp8Descriptor) (id, mod int) {
	if d.picIDLen == 1 {
		return int(b[d.picIDOff] & 0x7f), 1 << 7
	}
	return int(b[d.picIDOff]&0x7f)<<8 | int(b[d.picIDOff+1]), 1 << 15
}

// vp8FrameSize returns the width and height a VP8 key frame's header
// (RFC 6386 §9.1) declares, from the first packet of the frame: after
// the payload descriptor come the 3-byte frame tag, the start code
// 9d 01 2a, then 14-bit width and height, little-endian, each with a
// 2-bit scale above it.
func vp8FrameSize(b []byte, d *vp8Descriptor) (w, h int, ok bool) {
	i := d.size
	if !d.keyframe || len(b) < i+10 || b[i+3] != 0x9d || b[i+4] != 0x01 || b[i+5] != 0x2a {
		return 0, 0, false
	}
	w = int(b[i+6]) | int(b[i+7]&0x3f)<<8
	h = int(b[i+8]) | int(b[i+9]&0x3f)<<8
	return w, h, w > 0 && h > 0
}
