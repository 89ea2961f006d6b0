package bots

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// TimelineEntry is one line of the timeline: what one subscriber received
// on one video track in one second.
type TimelineEntry struct {
	T       float64 `json:"t"`       // seconds since the run started
	UnixMS  int64   `json:"unix_ms"` // wall clock of the line
	Bot     string  `json:"bot"`
	Track   string  `json:"track"`
	Layer   string  `json:"layer"` // q, h, f; "" before a keyframe
	Packets uint64  `json:"packets"`
	Lost    uint64  `json:"lost"`
	EstKbps int     `json:"est_kbps"` // the server's latest estimate
	NACKs   uint64  `json:"nacks"`
	PLIs    uint64  `json:"plis"`
	Score   float64 `json:"score"` // the server's latest quality score of this subscriber
}

// timeline writes the subscribers' per-second lines to w.
type timeline struct {
	w     io.Writer
	start time.Time
	mu    sync.Mutex
}

// follow writes a line per second for the subscriber's video tracks until
// the returned function is called. A nil timeline does nothing.
func (tl *timeline) follow(bot string, st *subscriberStats) (stop func()) {
	if tl == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		type last struct{ packets, lost uint64 }
		prev := map[*trackReader]last{}
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				st.mu.Lock()
				readers := append([]*trackReader(nil), st.live...)
				est := 0
				if n := len(st.estKbps); n > 0 {
					est = st.estKbps[n-1]
				}
				nacks, plis, score := st.nacks, st.plis, st.score
				st.mu.Unlock()
				for _, r := range readers {
					p, l := r.pubPackets.Load(), r.pubLost.Load()
					e := TimelineEntry{
						T: now.Sub(tl.start).Seconds(), UnixMS: now.UnixMilli(), Bot: bot, Track: r.sid,
						Layer: layerName(int(r.layer.Load())), Packets: p - prev[r].packets, Lost: l - prev[r].lost,
						EstKbps: est, NACKs: nacks, PLIs: plis, Score: score,
					}
					prev[r] = last{p, l}
					b, _ := json.Marshal(e)
					tl.mu.Lock()
					_, _ = tl.w.Write(append(b, '\n'))
					tl.mu.Unlock()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
