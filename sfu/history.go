package sfu

// packetHistory is the retransmission history of one published RTP
// stream, shared by all its subscribers: the reader reads every packet
// straight into the next slot, so a packet is stored once however many
// subscribers may ask for it again.
//
// It is owned by one goroutine (the track's reader), which both stores
// packets and serves NACKs, so it needs no lock.
type packetHistory struct {
	slots [][]byte // each of cap maxPacketSize
	lens  []int
	seqs  []uint16
	// bySeq maps seq % len(bySeq) to the slot holding it.
	bySeq []int32
	next  int
}

// maxPacketSize is the largest RTP packet the SFU reads (a common MTU).
const maxPacketSize = 1500

func newPacketHistory(size int) *packetHistory {
	h := &packetHistory{
		slots: make([][]byte, size),
		lens:  make([]int, size),
		seqs:  make([]uint16, size),
		bySeq: make([]int32, size),
	}
	backing := make([]byte, size*maxPacketSize)
	for i := range h.slots {
		h.slots[i] = backing[i*maxPacketSize : (i+1)*maxPacketSize : (i+1)*maxPacketSize]
		h.bySeq[i] = -1
	}
	return h
}

// buffer returns the slot the next packet should be read into.
func (h *packetHistory) buffer() []byte { return h.slots[h.next] }

// commit records that the buffer returned by buffer now holds an n-byte
// packet with sequence number seq, and advances.
func (h *packetHistory) commit(seq uint16, n int) {
	i := h.next
	// The slot may have held an older packet; unlink it.
	if old := h.bySeq[int(h.seqs[i])%len(h.bySeq)]; old == int32(i) {
		h.bySeq[int(h.seqs[i])%len(h.bySeq)] = -1
	}
	h.lens[i] = n
	h.seqs[i] = seq
	h.bySeq[int(seq)%len(h.bySeq)] = int32(i)
	h.next++
	if h.next == len(h.slots) {
		h.next = 0
	}
}

// get returns the stored packet with sequence number seq, or nil.
func (h *packetHistory) get(seq uint16) []byte {
	i := h.bySeq[int(seq)%len(h.bySeq)]
	if i < 0 || h.seqs[i] != seq || h.lens[i] == 0 {
		return nil
	}
	return h.slots[i][:h.lens[i]]
}
