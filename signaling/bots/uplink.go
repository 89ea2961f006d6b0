package bots

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// uplinkStats records what the server says of a publisher's uplink in the
// publisher's own quality messages.
type uplinkStats struct {
	mu      sync.Mutex
	samples []uplinkSample
	audio   map[string]bool // the publisher's audio track SIDs
}

// uplinkSample is one reported uplink, valid from at until the next one.
// A message without an uplink (nothing arrived) ends the previous sample.
type uplinkSample struct {
	at      time.Time
	present bool
	score   float64
	loss    float64 // the worst track's, percent
	// videoLoss and audioLoss are the worst track of each kind; -1 when
	// the publisher has none of that kind.
	videoLoss, audioLoss float64
}

func newUplinkStats() *uplinkStats { return &uplinkStats{audio: map[string]bool{}} }

// setAudio tells which published tracks are audio, for the split by kind.
func (u *uplinkStats) setAudio(sids ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, sid := range sids {
		u.audio[sid] = true
	}
}

// onQuality records the participant's own messages (the ones with Stats).
func (u *uplinkStats) onQuality(q *protocol.Quality) {
	if q.Stats == nil {
		return // the room's copy about someone else
	}
	s := uplinkSample{at: time.Now(), videoLoss: -1, audioLoss: -1}
	u.mu.Lock()
	defer u.mu.Unlock()
	if up := q.Uplink; up != nil {
		s.present, s.score, s.loss = true, up.Score, up.LossPct
		for sid, t := range up.Tracks {
			if u.audio[sid] {
				s.audioLoss = max(s.audioLoss, t.LossPct)
			} else {
				s.videoLoss = max(s.videoLoss, t.LossPct)
			}
		}
	}
	u.samples = append(u.samples, s)
}

// UplinkSummary sums up the publishers' uplinks as the server reported
// them to each publisher (quality messages, sent when the figures move).
// Loss is after the server's retransmission requests (NACK), so a video
// track recovers most of what the network dropped while audio (the server
// negotiates no NACK for Opus) keeps it. The medians weigh each reported value by how
// long it stood (until the next message or the end of the run); Max and
// Min are over every message.
type UplinkSummary struct {
	LossPctP50 float64 `json:"loss_pct_p50"` // the worst track's
	LossPctMax float64 `json:"loss_pct_max"`
	// VideoLossPctP50 and AudioLossPctP50 are the worst video and audio
	// track's; absent when no publisher sent that kind.
	VideoLossPctP50 *float64 `json:"video_loss_pct_p50,omitempty"`
	AudioLossPctP50 *float64 `json:"audio_loss_pct_p50,omitempty"`
	ScoreP50        float64  `json:"score_p50"`
	ScoreMin        float64  `json:"score_min"`
	// Reports is how many uplink reports there were in all; 0 means the
	// other figures are empty.
	Reports int `json:"reports"`
}

// String gives the figures on one line, for people.
func (u UplinkSummary) String() string {
	pct := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", *p)
	}
	return fmt.Sprintf("loss p50 %.1f%%, max %.1f%% (video p50 %s, audio p50 %s); score p50 %.1f, min %.1f; %d reports",
		u.LossPctP50, u.LossPctMax, pct(u.VideoLossPctP50), pct(u.AudioLossPctP50), u.ScoreP50, u.ScoreMin, u.Reports)
}

// weighted is a value that stood for a while.
type weighted struct {
	v float64
	w time.Duration
}

// medianOf returns the time-weighted median of ws; nil when empty.
func medianOf(ws []weighted) *float64 {
	var total time.Duration
	for _, x := range ws {
		total += x.w
	}
	if len(ws) == 0 || total <= 0 {
		return nil
	}
	slices.SortFunc(ws, func(a, b weighted) int { return cmp.Compare(a.v, b.v) })
	var seen time.Duration
	for _, x := range ws {
		seen += x.w
		if 2*seen >= total {
			return &x.v
		}
	}
	return &ws[len(ws)-1].v
}

// summarizeUplinks sums up the publishers' uplink reports up to end.
func summarizeUplinks(ups []*uplinkStats, end time.Time) UplinkSummary {
	var sum UplinkSummary
	var loss, video, audio, score []weighted
	sum.ScoreMin = 5
	for _, u := range ups {
		u.mu.Lock()
		for i, s := range u.samples {
			if !s.present {
				continue
			}
			until := end
			if i+1 < len(u.samples) {
				until = u.samples[i+1].at
			}
			w := max(until.Sub(s.at), 0)
			sum.Reports++
			sum.LossPctMax = max(sum.LossPctMax, s.loss)
			sum.ScoreMin = min(sum.ScoreMin, s.score)
			loss = append(loss, weighted{s.loss, w})
			score = append(score, weighted{s.score, w})
			if s.videoLoss >= 0 {
				video = append(video, weighted{s.videoLoss, w})
			}
			if s.audioLoss >= 0 {
				audio = append(audio, weighted{s.audioLoss, w})
			}
		}
		u.mu.Unlock()
	}
	if sum.Reports == 0 {
		return UplinkSummary{}
	}
	deref := func(p *float64) float64 {
		if p == nil {
			return 0
		}
		return *p
	}
	sum.LossPctP50 = deref(medianOf(loss))
	sum.ScoreP50 = deref(medianOf(score))
	sum.VideoLossPctP50 = medianOf(video)
	sum.AudioLossPctP50 = medianOf(audio)
	return sum
}

// stop ends the last report when the publisher stops sending.
func (u *uplinkStats) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.samples = append(u.samples, uplinkSample{at: time.Now()})
}
