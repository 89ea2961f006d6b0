package sfu

// vp9FrameSize returns the picture size in the scalability structure (SS)
// of a VP9 RTP payload descriptor (RFC 9628 §4.2, §4.2.1), which senders
// put in the first packet of each key frame: with spatial layers, the
// largest one's size, the one a subscriber of this stream decodes.
func vp9FrameSize(b []byte) (w, h int, ok bool) {
	if len(b) < 1 || b[0]&0x02 == 0 { // V: no scalability structure
		return 0, 0, false
	}
	flags := b[0]
	i := 1
	if flags&0x80 != 0 { // I: picture id, 7 or 15 bits
		if len(b) <= i {
			return 0, 0, false
		}
		i++
		if b[i-1]&0x80 != 0 {
			i++
		}
	}
	if flags&0x20 != 0 { // L: layer indices, and TL0PICIDX in non-flexible mode
		i++
		if flags&0x10 == 0 {
			i++
		}
	}
	if flags&0x50 == 0x50 { // P and F: up to 3 reference indices, N bit to go on
		for k := 0; k < 3; k++ {
			if len(b) <= i {
				return 0, 0, false
			}
			i++
			if b[i-1]&0x01 == 0 {
				break
			}
		}
	}
	if len(b) <= i {
		return 0, 0, false
	}
	ss := b[i]
	if ss&0x10 == 0 { // Y: no resolutions
		return 0, 0, false
	}
	layers := int(ss>>5) + 1 // N_S + 1
	i++
	if len(b) < i+4*layers {
		return 0, 0, false
	}
	for l := range layers {
		o := i + 4*l
		lw, lh := int(b[o])<<8|int(b[o+1]), int(b[o+2])<<8|int(b[o+3])
		if lw*lh > w*h {
			w, h = lw, lh
		}
	}
	return w, h, w > 0 && h > 0
}
