package rooms

import (
	"maps"
	"math"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/quality"
	"github.com/huddle-rtc/huddle/sfu"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// QualityInterval is how often connection quality is measured; a quality
// message goes out only when it changed.
const QualityInterval = 2 * time.Second

// startQuality starts the room's quality reports; stopQuality (when the
// room ends) stops them. The registry waits for the goroutine.
func (rm *Room) startQuality() {
	rm.qualityQuit = make(chan struct{})
	rm.reg.wg.Add(1)
	go func() {
		defer rm.reg.wg.Done()
		rm.runQuality(rm.qualityQuit)
	}()
}

func (rm *Room) stopQuality() {
	if rm.qualityQuit != nil {
		close(rm.qualityQuit)
	}
}

// partQuality is what the quality loop remembers of one participant.
type partQuality struct {
	prev     map[*sfu.DownTrack][2]uint64                // packets and bytes at the last tick
	downlink map[*sfu.DownTrack]downlinkLoss             // loss from cumulative report counts
	prevUp   map[*sfu.UpTrack][3]quality.ReceiveSnapshot // uplink counters by layer at the last tick
	sentRoom protocol.Quality                            // the last message to the room
	sentSelf protocol.Quality                            // the last message to the participant
	selfStat protocol.ConnectionStats
	// sendingSince is when the server began to send media to the
	// participant without a pause (zero: it sends nothing now).
	sendingSince time.Time
}

// silentAfter is how long media may go to a participant with nothing
// heard back before its downlink counts as lost. A receiver sends
// transport-wide feedback about every 100 ms while media reaches it (the
// server negotiates transport-cc for audio and video); the ICE agent
// gives up on the path only after 10 s.
const silentAfter = 3 * time.Second

func (rm *Room) runQuality(quit <-chan struct{}) {
	t := time.NewTicker(QualityInterval)
	defer t.Stop()
	state := map[*Participant]*partQuality{}
	last := time.Now()
	for {
		select {
		case <-quit:
			return
		case now := <-t.C:
			rm.reportQuality(now, now.Sub(last), state)
			last = now
		}
	}
}

// Quality returns the latest quality measured of every participant of the
// room, by SID, with each one's own stats (for the dashboard and /metrics).
func (rm *Room) Quality() map[string]protocol.Quality {
	rm.qualityMu.Lock()
	defer rm.qualityMu.Unlock()
	return maps.Clone(rm.latest)
}

// RoomQuality is the latest quality of the participants of one room.
type RoomQuality struct {
	Room         string
	Participants map[string]protocol.Quality // by SID
}

// Quality returns the latest quality of every participant, room by room.
func (r *Registry) Quality() []RoomQuality {
	r.mu.Lock()
	rms := make([]*Room, 0, len(r.rooms))
	for _, rm := range r.rooms {
		rms = append(rms, rm)
	}
	r.mu.Unlock()
	out := make([]RoomQuality, 0, len(rms))
	for _, rm := range rms {
		out = append(out, RoomQuality{Room: rm.name, Participants: rm.Quality()})
	}
	return out
}

// reportQuality scores each participant's downlink from what the server
// sent it and what its receiver reports say, and tells the participant
// and the room when it changed.
func (rm *Room) reportQuality(now time.Time, elapsed time.Duration, state map[*Participant]*partQuality) {
	rm.mu.Lock()
	parts := make([]*Participant, 0, len(rm.participants))
	for _, p := range rm.participants {
		parts = append(parts, p)
	}
	rm.mu.Unlock()
	latest := make(map[string]protocol.Quality, len(parts))
	live := map[*Participant]bool{}
	// Uplinks first: a subscriber's receiver reports count what the
	// publisher's uplink lost too, and its downlink must not be blamed.
	ups := make(map[*Participant]*protocol.UplinkQuality, len(parts))
	upLoss := map[*sfu.UpTrack][3]float64{}
	for _, p := range parts {
		live[p] = true
		pq := state[p]
		if pq == nil {
			pq = &partQuality{prev: map[*sfu.DownTrack][2]uint64{}, downlink: map[*sfu.DownTrack]downlinkLoss{},
				prevUp: map[*sfu.UpTrack][3]quality.ReceiveSnapshot{}}
			state[p] = pq
		}
		ups[p] = measureUplink(p, pq, now, upLoss)
	}
	for _, p := range parts {
		pq := state[p]
		q, ok := measure(p, pq, now, elapsed, upLoss)
		if up := ups[p]; up != nil {
			q = withUplink(q, ok, p, up)
			ok = true
		}
		if !ok {
			continue
		}
		self := q
		self.Stats = &pq.selfStat
		withStats := self
		st := pq.selfStat
		withStats.Stats = &st
		latest[p.info.SID] = withStats
		if changed(pq.sentRoom, q) {
			pq.sentRoom = q
			// The event feed (dashboard, operators) gets the room's copy,
			// without the participant's own stats.
			rm.reg.PublishQuality(rm.name, p.info.SID, q)
			msg := q
			rm.mu.Lock()
			for _, o := range rm.participants {
				if o != p {
					o.sink.Send(&msg)
				}
			}
			rm.mu.Unlock()
		}
		if changed(pq.sentSelf, q) || !statsEqual(pq.sentSelf.Stats, self.Stats) || uplinkMoved(pq.sentSelf.Uplink, q.Uplink) {
			st := *self.Stats
			st.Layers = maps.Clone(st.Layers)
			self.Stats = &st
			pq.sentSelf = self
			msg := self
			p.sink.Send(&msg)
		}
	}
	for p := range state {
		if !live[p] {
			delete(state, p)
		}
	}
	rm.qualityMu.Lock()
	rm.latest = latest
	rm.qualityMu.Unlock()
}

// measure scores one participant's downlink over the last interval; false
// when it receives nothing. upLoss is the loss of each publisher's uplink
// by layer over the same interval.
func measure(p *Participant, pq *partQuality, now time.Time, elapsed time.Duration, upLoss map[*sfu.UpTrack][3]float64) (protocol.Quality, bool) {
	downs := p.peer.DownTracks()
	var audio, video *quality.Sample
	audioMOS, videoMOS := 5.0, 5.0
	st := protocol.ConnectionStats{EstimateKbps: p.peer.Estimate() / 1000, Layers: map[string]string{}}
	seen := map[*sfu.DownTrack]bool{}
	sending := false
	for _, d := range downs {
		seen[d] = true
		packets, bytes, nacks, plis := d.Stats()
		prev := pq.prev[d]
		pq.prev[d] = [2]uint64{packets, bytes}
		sending = sending || packets > prev[0]
		st.NACKs += nacks
		st.PLIs += plis
		up := d.UpTrack()
		info := up.Info()
		if info.Kind == webrtc.RTPCodecTypeVideo && up.Simulcast() {
			st.Layers[info.SID] = layerName(d.CurrentLayer())
		}
		if info.Kind == webrtc.RTPCodecTypeVideo && !up.Simulcast() && d.TargetLayer() < 0 && d.MaxLayer() >= 0 && !d.Paused() && p.peer.Limited() {
			st.AudioOnly = append(st.AudioOnly, info.SID)
		}
		if up.Muted() || d.Paused() {
			continue
		}
		rates := up.LayerBitrates(now)
		expected := 0
		if info.Kind == webrtc.RTPCodecTypeVideo {
			for l := min(d.MaxLayer(), len(rates)-1); l >= 0; l-- {
				if rates[l] > 0 {
					expected = rates[l]
					break
				}
			}
		} else {
			expected = rates[0]
		}
		if expected == 0 {
			continue // the publisher sends nothing now
		}
		rr := d.ReceiverStats()
		if now.Sub(rr.REMBAt) < 3*QualityInterval {
			st.REMBKbps = max(st.REMBKbps, int(rr.REMB/1000))
		}
		s := quality.Sample{
			ExpectedKbps:  float64(expected) / 1000,
			DeliveredKbps: float64(bytes-prev[1]) * 8 / 1000 / max(elapsed.Seconds(), 0.001),
			Packets:       int(packets - prev[0]),
		}
		if now.Sub(rr.At) < 3*QualityInterval {
			s.LossFraction = pq.downlinkLoss(d, rr, upLoss[up][max(d.CurrentLayer(), 0)])
			s.JitterMS = float64(rr.Jitter) / float64(time.Millisecond)
			s.RTTMS = float64(rr.RTT) / float64(time.Millisecond)
		}
		st.LossPct = math.Max(st.LossPct, round1(100*s.LossFraction))
		st.JitterMs = math.Max(st.JitterMs, round1(s.JitterMS))
		st.RTTMs = math.Max(st.RTTMs, round1(s.RTTMS))
		if info.Kind == webrtc.RTPCodecTypeAudio {
			if m := quality.AudioMOS(s); audio == nil || m < audioMOS {
				audio, audioMOS = &s, m
			}
		} else if m := quality.VideoMOS(s); video == nil || m < videoMOS {
			video, videoMOS = &s, m
		}
	}
	for d := range pq.prev {
		if !seen[d] {
			delete(pq.prev, d)
			delete(pq.downlink, d)
		}
	}
	pq.selfStat = st
	if !sending {
		pq.sendingSince = time.Time{}
	} else if pq.sendingSince.IsZero() {
		pq.sendingSince = now.Add(-elapsed)
	}
	if audio == nil && video == nil {
		return protocol.Quality{}, false
	}
	q := protocol.Quality{
		Envelope:    protocol.Envelope{Type: protocol.TypeQuality},
		Participant: p.info.SID,
		Identity:    p.info.Identity,
		Score:       5,
	}
	if audio != nil {
		q.Audio = &protocol.MediaQuality{Score: round1(audioMOS), Level: string(quality.LevelOf(audioMOS, audio.Packets))}
		q.Score, q.Level = q.Audio.Score, q.Audio.Level
	}
	if video != nil {
		q.Video = &protocol.MediaQuality{Score: round1(videoMOS), Level: string(quality.LevelOf(videoMOS, video.Packets))}
		if q.Video.Score < q.Score || q.Audio == nil {
			q.Score, q.Level = q.Video.Score, q.Video.Level
		}
	}
	if pq.silent(p.peer.SubscriberHeard(), now) {
		// Media went out and nothing came back: the participant's network
		// is gone (or its page froze), whatever was sent.
		lost := protocol.MediaQuality{Score: 1, Level: string(quality.Lost)}
		if q.Audio != nil {
			q.Audio = &lost
		}
		if q.Video != nil {
			l := lost
			q.Video = &l
		}
		q.Score, q.Level = lost.Score, lost.Level
	}
	return q, true
}

// silent reports whether media has gone to the participant for
// silentAfter with no feedback heard since heard.
func (pq *partQuality) silent(heard, now time.Time) bool {
	if pq.sendingSince.IsZero() {
		return false
	}
	from := pq.sendingSince
	if heard.After(from) {
		from = heard
	}
	return now.Sub(from) >= silentAfter
}

// downlinkLoss is what the quality loop keeps to measure one down-track's
// loss from cumulative receiver-report counts.
type downlinkLoss struct {
	counts sfu.ReportCounts // at the report the loss was last measured to
	loss   float64
	have   bool
}

// downlinkLoss returns the loss between the server and the subscriber on
// down-track d: from the cumulative counts of the reports since the last
// measured one, minus the gaps the server forwarded (exact, whatever the
// report interval); until two reports allow that, from the latest
// report's fraction net of the publisher's uplink loss up (an estimate).
func (pq *partQuality) downlinkLoss(d *sfu.DownTrack, rr sfu.ReceiverStats, up float64) float64 {
	dl := pq.downlink[d]
	if l, ok := sfu.DownlinkLoss(dl.counts, rr.Cumulative); ok {
		dl = downlinkLoss{counts: rr.Cumulative, loss: l, have: true}
	} else if !dl.counts.Valid || rr.Cumulative.Expected < dl.counts.Expected {
		dl.counts = rr.Cumulative // the first report, or a new stream
	}
	pq.downlink[d] = dl
	if dl.have {
		return dl.loss
	}
	return netLoss(rr.FractionLost, up)
}

// netLoss returns the loss of the path from the server to a subscriber
// when the subscriber's receiver reports say total and the publisher's
// uplink lost up of the same stream already (the server forwards the
// gaps): the two paths lose independently, so 1-total = (1-up)(1-down).
// The two are measured over different intervals (the report's, about a
// second, and the quality interval), so this is an estimate.
func netLoss(total, up float64) float64 {
	if up <= 0 || up >= 1 {
		return total
	}
	return clamp01(1 - (1-total)/(1-up))
}

func clamp01(v float64) float64 { return math.Max(0, math.Min(1, v)) }

// measureUplink scores what the server received of each track p
// publishes over the last interval, records each track's loss by layer
// in upLoss, and returns nil when nothing arrived.
func measureUplink(p *Participant, pq *partQuality, now time.Time, upLoss map[*sfu.UpTrack][3]float64) *protocol.UplinkQuality {
	tracks := p.peer.UpTracks()
	seen := make(map[*sfu.UpTrack]bool, len(tracks))
	var out *protocol.UplinkQuality
	worst := 0
	rtt := float64(p.peer.PublishRTT()) / float64(time.Millisecond)
	add := func(sid string, t protocol.TrackUplink, packets int) {
		if out == nil {
			out = &protocol.UplinkQuality{Score: t.Score, RTTMs: round1(rtt), Tracks: map[string]protocol.TrackUplink{}}
			worst = packets
		}
		out.Tracks[sid] = t
		out.Kbps += t.Kbps
		out.LossPct = math.Max(out.LossPct, t.LossPct)
		out.JitterMs = math.Max(out.JitterMs, t.JitterMs)
		if t.Score < out.Score {
			out.Score, worst = t.Score, packets
		}
	}
	for _, up := range tracks {
		seen[up] = true
		prev := pq.prevUp[up]
		var cur [3]quality.ReceiveSnapshot
		var gaps [3]float64
		var lost, settled, packets uint64
		for l := range cur {
			st, ok := up.LayerUplink(l, now)
			if !ok {
				continue
			}
			r, was := st.Receive, prev[l]
			cur[l] = r
			f, n := r.LossSince(was)
			settled += n
			lost += uint64(math.Round(f * float64(n))) // f is lost/n
			if r.Packets >= was.Packets && r.Expected >= was.Expected {
				packets += r.Packets - was.Packets
				// The gaps the server forwarded in the interval, before
				// any recovery: what subscribers saw missing when their
				// receiver reports were written.
				if e := r.Expected - was.Expected; e > 0 {
					gaps[l] = clamp01(float64(int64(e)-int64(r.Packets-was.Packets)) / float64(e))
				}
			}
		}
		pq.prevUp[up] = cur
		upLoss[up] = gaps
		if packets == 0 {
			// Nothing arrived. Video may be paused (nobody receives it),
			// but an unmuted audio track sends all the time (with DTX a
			// comfort noise frame every 400 ms): after it has sent, its
			// uplink is lost.
			if info := up.Info(); info.Kind == webrtc.RTPCodecTypeAudio && !up.Muted() && cur[0].Packets > 0 {
				add(info.SID, protocol.TrackUplink{Score: 1, Level: string(quality.Lost)}, 0)
			}
			continue
		}
		all := up.Uplink(now)
		s := quality.Sample{
			JitterMS: float64(all.Receive.Jitter) / float64(time.Millisecond),
			RTTMS:    rtt,
			Packets:  int(packets),
		}
		if settled > 0 {
			s.LossFraction = float64(lost) / float64(settled)
		}
		// No expected bitrate: the server does not know what the
		// publisher's encoder aims at (REMB is a ceiling, not a target),
		// and what the network dropped is counted as loss already.
		info := up.Info()
		mos := quality.VideoMOS(s)
		if info.Kind == webrtc.RTPCodecTypeAudio {
			mos = quality.AudioMOS(s)
		}
		t := protocol.TrackUplink{
			Score: round1(mos), Level: string(quality.LevelOf(mos, s.Packets)),
			LossPct: round1(100 * s.LossFraction), JitterMs: round1(s.JitterMS), Kbps: math.Round(float64(all.Bitrate) / 1000),
		}
		add(info.SID, t, s.Packets)
	}
	for up := range pq.prevUp {
		if !seen[up] {
			delete(pq.prevUp, up)
		}
	}
	if out != nil {
		out.Level = string(quality.LevelOf(out.Score, worst))
	}
	return out
}

// withUplink folds a participant's uplink into its quality message: the
// participant's score is the lowest of its downlink (when hasDown) and
// its uplink.
func withUplink(q protocol.Quality, hasDown bool, p *Participant, up *protocol.UplinkQuality) protocol.Quality {
	if !hasDown {
		q = protocol.Quality{
			Envelope:    protocol.Envelope{Type: protocol.TypeQuality},
			Participant: p.info.SID,
			Identity:    p.info.Identity,
			Score:       up.Score,
			Level:       up.Level,
		}
	} else if up.Score < q.Score {
		q.Score, q.Level = up.Score, up.Level
	}
	q.Uplink = up
	return q
}

// changed reports whether a quality message says something new: another
// level, or a score that moved by at least 0.3.
func changed(old, q protocol.Quality) bool {
	if (old.Uplink == nil) != (q.Uplink == nil) {
		return true
	}
	if old.Uplink != nil && (old.Uplink.Level != q.Uplink.Level || math.Abs(old.Uplink.Score-q.Uplink.Score) >= 0.3) {
		return true
	}
	lv := func(m *protocol.MediaQuality) string {
		if m == nil {
			return ""
		}
		return m.Level
	}
	sc := func(m *protocol.MediaQuality) float64 {
		if m == nil {
			return 0
		}
		return m.Score
	}
	return old.Level != q.Level || lv(old.Audio) != lv(q.Audio) || lv(old.Video) != lv(q.Video) ||
		math.Abs(old.Score-q.Score) >= 0.3 || math.Abs(sc(old.Audio)-sc(q.Audio)) >= 0.3 || math.Abs(sc(old.Video)-sc(q.Video)) >= 0.3
}

func statsEqual(a, b *protocol.ConnectionStats) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.EstimateKbps == b.EstimateKbps && a.NACKs == b.NACKs && a.PLIs == b.PLIs && maps.Equal(a.Layers, b.Layers) &&
		len(a.AudioOnly) == len(b.AudioOnly) && a.LossPct == b.LossPct && a.RTTMs == b.RTTMs && a.JitterMs == b.JitterMs &&
		a.REMBKbps == b.REMBKbps
}

// uplinkMoved reports whether the uplink figures moved enough since a
// to send the participant its own copy again: a level, a score by 0.3, a
// loss by a point, jitter by 5 ms, RTT by 20 ms or the rate by a fifth
// (jitter, RTT and rate move a little every interval).
func uplinkMoved(a, b *protocol.UplinkQuality) bool {
	if a == nil || b == nil {
		return a != b
	}
	if a.Level != b.Level || math.Abs(a.Score-b.Score) >= 0.3 || math.Abs(a.LossPct-b.LossPct) >= 1 ||
		math.Abs(a.JitterMs-b.JitterMs) >= 5 || math.Abs(a.RTTMs-b.RTTMs) >= 20 ||
		math.Abs(a.Kbps-b.Kbps) > 0.2*math.Max(a.Kbps, 1) || len(a.Tracks) != len(b.Tracks) {
		return true
	}
	for sid, t := range b.Tracks {
		o, ok := a.Tracks[sid]
		if !ok || o.Level != t.Level || math.Abs(o.Score-t.Score) >= 0.3 || math.Abs(o.LossPct-t.LossPct) >= 1 {
			return true
		}
	}
	return false
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// layerName returns the rid of a simulcast layer, "" for none.
func layerName(l int) string {
	switch l {
	case sfu.LayerLow:
		return protocol.QualityLow
	case sfu.LayerMedium:
		return protocol.QualityMedium
	case sfu.LayerHigh:
		return protocol.QualityHigh
	}
	return ""
}

// LayersWanted implements sfu.LayerEvents: it tells the publisher which
// simulcast layers of its track anyone receives.
func (p *Participant) LayersWanted(track string, active [3]bool) {
	msg := &protocol.Layers{Envelope: protocol.Envelope{Type: protocol.TypeLayers}, Track: track, Active: []string{}}
	for l, on := range active {
		if on {
			msg.Active = append(msg.Active, layerName(l))
		}
	}
	p.sink.Send(msg)
}

// TrackQuality is what the server measures of one published track for
// adaptation.
type TrackQuality struct {
	Room, SID, Participant, Kind string
	// LayerBitrates is each layer's received bitrate, bits/s (a track
	// without simulcast has only the first).
	LayerBitrates [3]int
	// REMB is the latest cap sent to the publisher, bits/s (0: none).
	REMB             int64
	KeyframeRequests uint64
	Subscribers      int
	// Uplink is the server's receive statistics of each layer
	// (cumulative counters, the latest jitter); HasLayer says which
	// layers exist (a track without simulcast has only the first).
	Uplink   [3]quality.ReceiveSnapshot
	HasLayer [3]bool
	// Score is the track's latest uplink quality (nil before the first
	// interval in which it sent anything).
	Score *protocol.TrackUplink
}

// TrackQualities returns the adaptation figures of every published track.
func (r *Registry) TrackQualities() []TrackQuality {
	r.mu.Lock()
	rms := make([]*Room, 0, len(r.rooms))
	for _, rm := range r.rooms {
		rms = append(rms, rm)
	}
	r.mu.Unlock()
	now := time.Now()
	var out []TrackQuality
	for _, rm := range rms {
		latest := rm.Quality()
		rm.mu.Lock()
		for sid, t := range rm.tracks {
			tq := TrackQuality{
				Room: rm.name, SID: sid, Participant: t.info.Participant, Kind: t.info.Kind,
				LayerBitrates: t.up.LayerBitrates(now), REMB: t.up.REMB(),
				KeyframeRequests: t.up.KeyframeRequests(), Subscribers: t.up.Subscribers(),
			}
			for l := range tq.Uplink {
				st, ok := t.up.LayerUplink(l, now)
				tq.Uplink[l], tq.HasLayer[l] = st.Receive, ok
			}
			if q := latest[t.info.Participant]; q.Uplink != nil {
				if s, ok := q.Uplink.Tracks[sid]; ok {
					tq.Score = &s
				}
			}
			out = append(out, tq)
		}
		rm.mu.Unlock()
	}
	return out
}
