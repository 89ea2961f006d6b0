package sfu

// nackWindow is how many sequence numbers, up to the newest asked for, a
// nackLog remembers: more than a receiver goes on asking for one packet
// (Pion's NACK generator: as long as the packet is in its 512-packet
// receive log; Chrome: 10 tries about an RTT apart).
const nackWindow = 4096

// nackLog remembers which sequence numbers of a down-track its
// subscriber asked to be resent, so that a packet asked for again is
// counted once: a receiver repeats a NACK until the packet arrives (Pion
// every 100 ms), and for a packet the SFU cannot resend (gone from the
// history, or sent before a layer switch more than switchNACKWindow ago)
// until it gives up. The zero value is ready; it is owned by the
// down-track's RTCP reader.
type nackLog struct {
	asked   [nackWindow / 64]uint64
	newest  uint16
	started bool
}

// add records that seq was asked for and reports whether it is the first
// time. A sequence number older than the window counts as asked before.
func (n *nackLog) add(seq uint16) bool {
	switch ahead := seq - n.newest; {
	case !n.started:
		n.started, n.newest = true, seq
	case ahead != 0 && ahead < 1<<15: // newer: the window moves on
		if ahead >= nackWindow {
			clear(n.asked[:])
		} else {
			for s := n.newest + 1; ; s++ {
				n.asked[s%nackWindow/64] &^= 1 << (s % 64)
				if s == seq {
					break
				}
			}
		}
		n.newest = seq
	case n.newest-seq >= nackWindow:
		return false
	}
	i, bit := seq%nackWindow/64, uint64(1)<<(seq%64)
	if n.asked[i]&bit != 0 {
		return false
	}
	n.asked[i] |= bit
	return true
}
