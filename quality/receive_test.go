package quality

import (
	"math"
	"testing"
	"time"
)

// pkt is one arrival: a sequence number at a time in milliseconds.
type pkt struct {
	seq uint16
	ms  int
}

// seqs returns packets first..first+n-1 (mod 2^16), one every 10 ms from ms.
func seqs(first uint16, n int, ms int) []pkt {
	out := make([]pkt, n)
	for i := range out {
		out[i] = pkt{first + uint16(i), ms + 10*i}
	}
	return out
}

func cat(parts ...[]pkt) []pkt {
	var out []pkt
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestReceiveStatsCounts(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		packets []pkt
		at      int // snapshot time, ms
		want    ReceiveSnapshot
	}{
		{
			name:    "in order",
			packets: seqs(100, 10, 0),
			at:      100,
			want:    ReceiveSnapshot{Packets: 10, Expected: 10},
		},
		{
			name:    "wrap-around",
			packets: seqs(65533, 7, 0),
			at:      100,
			want:    ReceiveSnapshot{Packets: 7, Expected: 7},
		},
		{
			name:    "gap across the wrap is lost after the window",
			packets: []pkt{{65534, 0}, {65535, 10}, {1, 20}, {2, 30}},
			at:      2000,
			want:    ReceiveSnapshot{Packets: 4, Expected: 5, Lost: 1},
		},
		{
			name:    "gap is pending inside the window",
			packets: []pkt{{1, 0}, {2, 10}, {4, 20}, {5, 30}},
			at:      500,
			want:    ReceiveSnapshot{Packets: 4, Expected: 5, Pending: 1},
		},
		{
			name:    "reordering fills the gap",
			packets: []pkt{{1, 0}, {3, 10}, {2, 11}, {4, 20}},
			at:      2000,
			want:    ReceiveSnapshot{Packets: 4, Expected: 4, Recovered: 1},
		},
		{
			name:    "retransmission inside the window is not lost",
			packets: cat([]pkt{{1, 0}, {2, 10}}, seqs(4, 50, 20), []pkt{{3, 900}}),
			at:      3000,
			want:    ReceiveSnapshot{Packets: 53, Expected: 53, Recovered: 1},
		},
		{
			name:    "retransmission after the window is late and lost",
			packets: cat([]pkt{{1, 0}, {2, 10}}, seqs(4, 150, 20), []pkt{{3, 1600}}),
			at:      3000,
			want:    ReceiveSnapshot{Packets: 152, Expected: 153, Lost: 1, Late: 1},
		},
		{
			name:    "duplicates count once",
			packets: []pkt{{1, 0}, {2, 10}, {2, 11}, {3, 20}, {3, 21}, {3, 22}},
			at:      100,
			want:    ReceiveSnapshot{Packets: 3, Expected: 3, Duplicates: 3},
		},
		{
			name:    "duplicate of a recovered packet",
			packets: []pkt{{1, 0}, {3, 10}, {2, 20}, {2, 30}},
			at:      100,
			want:    ReceiveSnapshot{Packets: 3, Expected: 3, Recovered: 1, Duplicates: 1},
		},
		{
			name:    "duplicate of a settled packet is not late",
			packets: cat(seqs(1, 200, 0), []pkt{{2, 2100}}),
			at:      2200,
			want:    ReceiveSnapshot{Packets: 200, Expected: 200, Duplicates: 1},
		},
		{
			name:    "reordered before the first packet",
			packets: []pkt{{10, 0}, {8, 5}, {11, 10}, {9, 12}},
			at:      2000,
			want:    ReceiveSnapshot{Packets: 4, Expected: 4, Recovered: 1},
		},
		{
			name:    "reordered before the first packet across the wrap",
			packets: []pkt{{0, 0}, {65535, 5}, {1, 10}},
			at:      2000,
			want:    ReceiveSnapshot{Packets: 3, Expected: 3},
		},
		{
			name:    "huge gap",
			packets: []pkt{{1, 0}, {3001, 10}},
			at:      2000,
			want:    ReceiveSnapshot{Packets: 2, Expected: 3001, Lost: 2999},
		},
		{
			name:    "history overflow settles before the window",
			packets: cat([]pkt{{1, 0}}, seqs(3, 1100, 1)),
			// 1100 packets in 11 s, but the snapshot is taken at the
			// last arrival: only the overflow can have settled seq 2.
			at:   11000,
			want: ReceiveSnapshot{Packets: 1101, Expected: 1102, Lost: 1},
		},
		{
			name: "many gaps, some recovered",
			packets: []pkt{
				{1, 0}, {2, 10}, {5, 20}, {6, 30}, {9, 40}, // 3, 4, 7, 8 missing
				{4, 300}, {7, 400}, // recovered
				{10, 2000}, // closes the windows of 3 and 8
			},
			at:   2000,
			want: ReceiveSnapshot{Packets: 8, Expected: 10, Lost: 2, Recovered: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewReceiveStats(90000, time.Second)
			for _, p := range tt.packets {
				s.Update(p.seq, 0, 100, base.Add(time.Duration(p.ms)*time.Millisecond))
			}
			got := s.Snapshot(base.Add(time.Duration(tt.at) * time.Millisecond))
			tt.want.Bytes = 100 * tt.want.Packets
			got.Jitter, got.Duration, got.Bitrate = 0, 0, 0
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReceiveStatsLossFraction(t *testing.T) {
	base := time.Now()
	s := NewReceiveStats(48000, 200*time.Millisecond)
	for i := range 100 {
		if i%10 == 5 {
			continue // 10% loss
		}
		s.Update(uint16(i), uint32(i*960), 80, base.Add(time.Duration(i)*20*time.Millisecond))
	}
	r := s.Snapshot(base.Add(5 * time.Second))
	if r.Lost != 10 || r.Pending != 0 {
		t.Fatalf("lost %d pending %d, want 10 and 0", r.Lost, r.Pending)
	}
	if got := r.LossFraction(); math.Abs(got-0.1) > 1e-9 {
		t.Errorf("loss fraction %v, want 0.1", got)
	}
}

// TestReceiveStatsLossSince: the loss of each interval counts only the
// packets settled in it, across the sequence number wrap, and a
// retransmission that fills a gap or a duplicate never makes it negative.
func TestReceiveStatsLossSince(t *testing.T) {
	base := time.Now()
	s := NewReceiveStats(48000, 200*time.Millisecond)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * 20 * time.Millisecond) }
	seq := func(i int) uint16 { return uint16(65000 + i) } // wraps at i = 536
	var prev ReceiveSnapshot
	for k, lossEvery := range []int{0, 4, 20, 0} {
		for i := k * 500; i < (k+1)*500; i++ {
			if lossEvery > 0 && i%lossEvery == 1 {
				continue
			}
			s.Update(seq(i), uint32(i*960), 80, at(i))
			if i%50 == 7 { // a duplicate, and a late retransmission
				s.Update(seq(i), uint32(i*960), 80, at(i))
				s.Update(seq(i-40), uint32((i-40)*960), 80, at(i))
			}
		}
		r := s.Snapshot(at((k + 1) * 500))
		loss, settled := r.LossSince(prev)
		want := 0.0
		if lossEvery > 0 {
			want = 1 / float64(lossEvery)
		}
		if math.Abs(loss-want) > 0.015 || settled < 480 || settled > 520 {
			t.Errorf("interval %d: loss %.3f of %d settled; want %.3f of about 500", k, loss, settled, want)
		}
		prev = r
	}
	if loss, settled := prev.LossSince(prev); loss != 0 || settled != 0 {
		t.Errorf("empty interval: loss %v of %d; want 0 of 0", loss, settled)
	}
	if loss, _ := (ReceiveSnapshot{Expected: 10, Lost: 1}).LossSince(prev); loss != 0.1 {
		t.Errorf("after a restart: loss %v; want 0.1 counted from zero", loss)
	}
}

// TestReceiveStatsPaddingIsNotJitter: probe padding sent between frames
// with the previous frame's timestamp fills the sequence and counts, but
// does not look like jitter.
func TestReceiveStatsPaddingIsNotJitter(t *testing.T) {
	base := time.Now()
	s := NewReceiveStats(90000, 0)
	seq := uint16(0)
	for i := range 200 {
		at := base.Add(time.Duration(i) * 33 * time.Millisecond)
		s.Update(seq, uint32(i*2970), 1000, at)
		seq++
		for k := range 3 { // probes 5, 10, 15 ms after the frame
			s.UpdatePadding(seq, uint32(i*2970), 256, at.Add(time.Duration(k+1)*5*time.Millisecond))
			seq++
		}
	}
	r := s.Snapshot(base.Add(10 * time.Second))
	if r.Packets != 800 || r.Lost != 0 || r.Jitter > 100*time.Microsecond {
		t.Fatalf("%d packets, %d lost, jitter %v; want 800, 0 and none", r.Packets, r.Lost, r.Jitter)
	}
}

func TestReceiveStatsJitter(t *testing.T) {
	base := time.Now()
	tests := []struct {
		name    string
		firstTS uint32
		offset  func(i int) time.Duration // arrival offset from the ideal time
		want    time.Duration
		tol     time.Duration
	}{
		{"steady", 1000, func(int) time.Duration { return 0 }, 0, 10 * time.Microsecond},
		{"steady across the timestamp wrap", math.MaxUint32 - 960*50, func(int) time.Duration { return 0 }, 0, 10 * time.Microsecond},
		{
			// Every other packet 5 ms late: |D| is 5 ms every time, so
			// J converges to 5 ms.
			"alternating 5 ms", 0,
			func(i int) time.Duration { return time.Duration(i%2) * 5 * time.Millisecond },
			5 * time.Millisecond, 100 * time.Microsecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewReceiveStats(48000, 0)
			ts := tt.firstTS
			for i := range 500 {
				at := base.Add(time.Duration(i)*20*time.Millisecond + tt.offset(i))
				s.Update(uint16(i), ts, 100, at)
				ts += 960
			}
			got := s.Snapshot(base.Add(20 * time.Second)).Jitter
			if d := got - tt.want; d < -tt.tol || d > tt.tol {
				t.Errorf("jitter %v, want %v ± %v", got, tt.want, tt.tol)
			}
		})
	}
}

func TestReceiveStatsJitterIgnoresRetransmissions(t *testing.T) {
	base := time.Now()
	s := NewReceiveStats(90000, 0)
	for i := range 100 {
		if i == 59 {
			// The retransmission of 50 arrives 300 ms late with its
			// old timestamp.
			s.Update(50, 50*3000, 1000, base.Add(50*time.Second/30+300*time.Millisecond))
		}
		if i == 50 {
			continue
		}
		s.Update(uint16(i), uint32(i*3000), 1000, base.Add(time.Duration(i)*time.Second/30))
	}
	r := s.Snapshot(base.Add(10 * time.Second))
	if r.Jitter > time.Millisecond {
		t.Errorf("jitter %v after a retransmission, want about 0", r.Jitter)
	}
	if r.Recovered != 1 || r.Lost != 0 {
		t.Errorf("recovered %d lost %d, want 1 and 0", r.Recovered, r.Lost)
	}
}

func TestReceiveStatsBitrate(t *testing.T) {
	base := time.Now()
	s := NewReceiveStats(90000, 0)
	for i := range 101 { // 100 intervals of 10 ms: 1 s
		s.Update(uint16(i), uint32(i*900), 1250, base.Add(time.Duration(i)*10*time.Millisecond))
	}
	r := s.Snapshot(base.Add(2 * time.Second))
	if r.Duration != time.Second {
		t.Errorf("duration %v, want 1s", r.Duration)
	}
	if want := 101 * 1250 * 8.0; math.Abs(r.Bitrate-want) > 1 {
		t.Errorf("bitrate %v, want %v", r.Bitrate, want)
	}
}

func TestReceiveStatsZeroValueSnapshot(t *testing.T) {
	s := NewReceiveStats(90000, 0)
	if r := s.Snapshot(time.Now()); r != (ReceiveSnapshot{}) || r.LossFraction() != 0 {
		t.Errorf("empty stats: %+v", r)
	}
}

func TestReceiveStatsUpdateDoesNotAllocate(t *testing.T) {
	s := NewReceiveStats(90000, 0)
	now := time.Now()
	var seq uint16
	allocs := testing.AllocsPerRun(10000, func() {
		seq++
		if seq%7 != 0 { // some loss, so gaps open and settle
			s.Update(seq, uint32(seq)*3000, 1200, now)
		}
		now = now.Add(time.Millisecond)
	})
	if allocs != 0 {
		t.Errorf("Update allocates %v times per packet", allocs)
	}
}

func BenchmarkReceiveStatsUpdate(b *testing.B) {
	s := NewReceiveStats(90000, 0)
	now := time.Now()
	var seq uint16
	b.ReportAllocs()
	for b.Loop() {
		seq++
		s.Update(seq, uint32(seq)*3000, 1200, now)
		now = now.Add(time.Millisecond)
	}
}
