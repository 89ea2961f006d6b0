package bots

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progress holds the run's live counters, updated by the bots and shown on
// one line while the run goes on.
type progress struct {
	joined      atomic.Int64
	failed      atomic.Int64
	media       atomic.Int64 // subscribers that got their first packet
	sentPackets atomic.Int64
	recvPackets atomic.Int64
	recvBytes   atomic.Int64
}

// start prints the progress line to w twice a second until the returned
// function is called, which ends the line and waits for the printer. A nil
// w prints nothing.
func (p *progress) start(w io.Writer, total, subscribers int) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		begin := time.Now()
		var lastBytes int64
		last := begin
		for {
			select {
			case <-done:
				fmt.Fprintln(w)
				return
			case now := <-t.C:
				b := p.recvBytes.Load()
				kbps := float64(b-lastBytes) * 8 / 1000 / now.Sub(last).Seconds()
				lastBytes, last = b, now
				fmt.Fprintf(w, "\r%5.1fs  joined %d/%d  failed %d  media %d/%d  sent %d pkts  recv %d pkts  %.0f kbit/s   ",
					now.Sub(begin).Seconds(), p.joined.Load(), total, p.failed.Load(),
					p.media.Load(), subscribers, p.sentPackets.Load(), p.recvPackets.Load(), kbps)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
