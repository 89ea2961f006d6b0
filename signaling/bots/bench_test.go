package bots

import (
	"context"
	"testing"
	"time"
)

// BenchmarkEditorsEndToEnd runs editor bots against the real server
// (`huddle serve --dev`, documents in bbolt under a temp dir): every
// operation goes bot → data channel → Document → fsync → ack and
// broadcast. One iteration is a 5 s run; it reports the edits made per
// second and the worst ack latency percentiles of the runs.
func BenchmarkEditorsEndToEnd(b *testing.B) {
	base := startServer(b)
	for _, c := range []struct {
		name    string
		editors int
		rate    float64
	}{
		{"20x10", 20, 10},
		{"20x100", 20, 100},
	} {
		b.Run(c.name, func(b *testing.B) {
			var ops uint64
			var secs, p50, p99 float64
			for i := range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				r, err := Run(ctx, Config{URL: base, Room: c.name + "-" + string(rune('a'+i%26)), Editors: c.editors, EditRate: c.rate,
					Duration: 5 * time.Second, Seed: uint64(i + 1)})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Err(); err != nil {
					b.Fatal(err)
				}
				ops += r.EditOps
				secs += r.DurationS
				p50, p99 = max(p50, r.EditAckMS.P50), max(p99, r.EditAckMS.P99)
			}
			b.ReportMetric(float64(ops)/secs, "edits/s")
			b.ReportMetric(p50, "ack-p50-ms")
			b.ReportMetric(p99, "ack-p99-ms")
		})
	}
}
