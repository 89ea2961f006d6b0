package sfu

// H.264 RTP payloads (RFC 6184): what the SFU reads of them is whether a
// packet starts a key frame and, from the sequence parameter set sent
// with each, the picture size.

// NAL unit types the SFU looks at (ITU-T H.264 table 7-1, RFC 6184 §5.2).
const (
	h264IDR   = 5
	h264SPS   = 7
	h264STAPA = 24
	h264FUA   = 28
)

// isH264Keyframe reports whether an H.264 RTP payload (RFC 6184) starts
// an IDR picture or carries a sequence parameter set.
func isH264Keyframe(b []byte) bool {
	if len(b) < 1 {
		return false
	}
	switch nal := b[0] & 0x1f; nal {
	case h264IDR, h264SPS:
		return true
	case h264STAPA: //: NAL units with 16-bit sizes
		for i := 1; i+2 < len(b); {
			size := int(b[i])<<8 | int(b[i+1])
			i += 2
			if i >= len(b) {
				return false
			}
			if t := b[i] & 0x1f; t == h264IDR || t == h264SPS {
				return true
			}
			i += size
		}
	case h264FUA: // FU-A: start bit and the fragmented type
		return len(b) > 1 && b[1]&0x80 != 0 && b[1]&0x1f == h264IDR
	}
	return false
}

// h264FrameSize returns the picture size declared by a sequence parameter
// set in an H.264 RTP payload: a single SPS NAL unit, one inside a STAP-A
// (where browsers put it, before the PPS and the IDR slice), or the first
// fragment of a fragmented one when the fields it needs are in it.
func h264FrameSize(b []byte) (w, h int, ok bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	switch b[0] & 0x1f {
	case h264SPS:
		return h264SPSSize(b[1:])
	case h264STAPA:
		for i := 1; i+2 < len(b); {
			size := int(b[i])<<8 | int(b[i+1])
			i += 2
			if size == 0 || i+size > len(b) {
				return 0, 0, false
			}
			if b[i]&0x1f == h264SPS {
				return h264SPSSize(b[i+1 : i+size])
			}
			i += size
		}
	case h264FUA:
		if b[1]&0x80 != 0 && b[1]&0x1f == h264SPS {
			return h264SPSSize(b[2:])
		}
	}
	return 0, 0, false
}

// h264SPSSize returns the cropped picture size a sequence parameter set
// declares (ITU-T H.264 §7.3.2.1.1 and, for the cropping, §7.4.2.1.1);
// sps is the NAL unit after its header byte, emulation prevention bytes
// included. It reports false for a truncated or implausible one.
func h264SPSSize(sps []byte) (w, h int, ok bool) {
	r := bitReader{b: sps}
	profile := r.bits(8)
	r.bits(16) // constraint flags, level_idc
	r.ue()     // seq_parameter_set_id
	chroma, separatePlanes := uint32(1), uint32(0)
	switch profile {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135:
		// High profiles and their scalable and multiview kin.
		chroma = r.ue()
		if chroma == 3 {
			separatePlanes = r.bits(1)
		}
		r.ue()              // bit_depth_luma_minus8
		r.ue()              // bit_depth_chroma_minus8
		r.bits(1)           // qpprime_y_zero_transform_bypass_flag
		if r.bits(1) == 1 { // seq_scaling_matrix_present_flag
			lists := 8
			if chroma == 3 {
				lists = 12
			}
			for i := range lists {
				if r.bits(1) == 0 { // seq_scaling_list_present_flag
					continue
				}
				if i < 6 {
					r.skipScalingList(16) // 4x4
				} else {
					r.skipScalingList(64) // 8x8
				}
			}
		}
	}
	r.ue()          // log2_max_frame_num_minus4
	switch r.ue() { // pic_order_cnt_type
	case 0:
		r.ue() // log2_max_pic_order_cnt_lsb_minus4
	case 1:
		r.bits(1) // delta_pic_order_always_zero_flag
		r.ue()    // offset_for_non_ref_pic (se)
		r.ue()    // offset_for_top_to_bottom_field (se)
		n := r.ue()
		if n > 255 {
			return 0, 0, false
		}
		for range n {
			r.ue() // offset_for_ref_frame[i] (se)
		}
	}
	r.ue()    // max_num_ref_frames
	r.bits(1) // gaps_in_frame_num_value_allowed_flag
	widthMBs := r.ue() + 1
	heightMapUnits := r.ue() + 1
	frameMBsOnly := r.bits(1)
	if frameMBsOnly == 0 {
		r.bits(1) // mb_adaptive_frame_field_flag
	}
	r.bits(1) // direct_8x8_inference_flag
	var cropL, cropR, cropT, cropB uint32
	if r.bits(1) == 1 { // frame_cropping_flag
		cropL, cropR, cropT, cropB = r.ue(), r.ue(), r.ue(), r.ue()
	}
	if r.err || chroma > 3 || widthMBs > 1<<12 || heightMapUnits > 1<<12 {
		return 0, 0, false
	}
	// The crop offsets count chroma samples (or, without chroma, luma
	// ones), in field pairs when the frame may be coded as fields.
	unitX, unitY := uint32(1), 2-frameMBsOnly
	if separatePlanes == 0 && chroma != 0 {
		if chroma < 3 {
			unitX = 2
		}
		if chroma == 1 {
			unitY *= 2
		}
	}
	width := int(widthMBs*16) - int(unitX)*int(min(cropL+cropR, 1<<16))
	height := int((2-frameMBsOnly)*heightMapUnits*16) - int(unitY)*int(min(cropT+cropB, 1<<16))
	if width <= 0 || height <= 0 || width > 0xffff || height > 0xffff {
		return 0, 0, false
	}
	return width, height, true
}

// bitReader reads the bits of an H.264 NAL unit payload, skipping the
// emulation prevention bytes (00 00 03) as it goes, so that nothing needs
// to be copied. Reading past the end sets err and yields zeros.
type bitReader struct {
	b     []byte
	pos   int   // the next byte to load
	zeros int   // zero bytes loaded in a row
	cur   uint8 // the byte being read
	left  uint  // its bits not read yet
	err   bool
}

func (r *bitReader) bit() uint32 {
	if r.left == 0 {
		if r.zeros >= 2 && r.pos < len(r.b) && r.b[r.pos] == 3 {
			r.pos++
			r.zeros = 0
		}
		if r.pos >= len(r.b) {
			r.err = true
			return 0
		}
		r.cur = r.b[r.pos]
		r.pos++
		if r.cur == 0 {
			r.zeros++
		} else {
			r.zeros = 0
		}
		r.left = 8
	}
	r.left--
	return uint32(r.cur>>r.left) & 1
}

// bits reads n (at most 32) bits, most significant first.
func (r *bitReader) bits(n int) uint32 {
	var v uint32
	for range n {
		v = v<<1 | r.bit()
	}
	return v
}

// ue reads an unsigned exp-Golomb code (§9.1). A signed one (se) has the
// same length; the SFU only skips those.
func (r *bitReader) ue() uint32 {
	zeros := 0
	for r.bit() == 0 {
		if zeros++; zeros > 31 || r.err {
			r.err = true
			return 0
		}
	}
	return 1<<zeros - 1 + r.bits(zeros)
}

// skipScalingList reads past a scaling_list() of size entries (§7.3.2.1.1.1):
// delta-coded values that end early when the next value is 0.
func (r *bitReader) skipScalingList(size int) {
	last, next := int32(8), int32(8)
	for range size {
		if next != 0 {
			v := r.ue() // delta_scale, se(v): positive k is 2k-1, negative 2k
			delta := int32((v + 1) / 2)
			if v%2 == 0 {
				delta = -delta
			}
			next = (last + delta + 256) % 256
		}
		if next != 0 {
			last = next
		}
		if r.err {
			return
		}
	}
}
