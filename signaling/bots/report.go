package bots

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// botResult is what one bot measured.
type botResult struct {
	spec       botSpec
	joined     bool
	joinTime   time.Duration
	err        error
	reconnects int

	// Publishers.
	sentPackets uint64
	sentBytes   uint64
	rembKbps    []int // every REMB the server sent, kbit/s
	uplink      *uplinkStats

	// Subscribers.
	sub *subscriberStats

	// Editors.
	editor *editorStats
}

// Quantiles are two percentiles of a distribution, in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// Report sums up a run. Rates are over the run's wall time.
type Report struct {
	Participants int     `json:"participants"`
	Publishers   int     `json:"publishers"`
	Subscribers  int     `json:"subscribers"`
	Rooms        int     `json:"rooms"`
	DurationS    float64 `json:"duration_s"`

	// Joined counts bots that joined; Failed those that failed to join,
	// or joined and then failed (a publisher whose publish was refused).
	Joined int `json:"joined"`
	Failed int `json:"failed"`
	// Reconnects counts the bots' attempts to join again (--reconnect),
	// failed ones included.
	Reconnects int `json:"reconnects,omitempty"`
	// NoMedia counts joined subscribers that received no RTP at all.
	NoMedia int `json:"no_media"`

	JoinMS       Quantiles `json:"join_ms"`
	FirstMediaMS Quantiles `json:"first_media_ms"`

	SentPackets uint64  `json:"sent_packets"`
	SentKbps    float64 `json:"sent_kbps"`

	// Tracks is how many tracks the subscribers received in all.
	Tracks      int    `json:"tracks"`
	RecvPackets uint64 `json:"recv_packets"`
	RecvBytes   uint64 `json:"recv_bytes"`
	// LostPackets were still missing after the recovery window (a NACK
	// retransmission that arrives in time is not lost); LossPct is their
	// share of the packets expected.
	LostPackets uint64  `json:"lost_packets"`
	LossPct     float64 `json:"loss_pct"`
	LatePackets uint64  `json:"late_packets"`
	Duplicates  uint64  `json:"duplicate_packets"`
	// RecvKbps is the subscribers' aggregate receive rate.
	RecvKbps float64 `json:"recv_kbps"`
	// JitterMS is over tracks (each track's RFC 3550 jitter at its end).
	JitterMS Quantiles `json:"jitter_ms"`
	// LatencyMS is the forwarding latency of every packet, publisher's
	// send to subscriber's receive (abs-capture-time).
	LatencyMS Quantiles `json:"latency_ms"`

	// Editors (only with editors): EditOps counts the edits they made,
	// EditAckMS the time from a submit to its ack, Converged is true only
	// if every editor ended with exactly the server's text.
	Editors   int        `json:"editors,omitempty"`
	EditOps   uint64     `json:"edit_ops,omitempty"`
	EditAckMS *Quantiles `json:"edit_ack_ms,omitempty"`
	Converged *bool      `json:"converged,omitempty"`
	// Layers is the time the subscribers spent receiving each simulcast
	// layer, summed over subscribers and video tracks, in seconds (told
	// by the size of the keyframes received).
	Layers LayerSeconds `json:"layers"`
	// NACKs and PLIs are the packets (each once, however often asked)
	// and keyframes the subscribers asked for, as the server counted them.
	NACKs uint64 `json:"nacks"`
	PLIs  uint64 `json:"plis"`
	// EstKbps is over every bandwidth estimate the server reported to the
	// subscribers.
	EstKbps EstimateKbps `json:"est_kbps"`
	// REMBKbps is over every REMB the server sent the publishers (tracks
	// without simulcast are capped at what their subscribers take).
	REMBKbps EstimateKbps `json:"remb_kbps"`
	// Uplink is what the server reported of the publishers' uplinks.
	Uplink UplinkSummary `json:"uplink"`
	// PerSubscriber is one line per subscriber (text report only).
	PerSubscriber []SubscriberSummary `json:"-"`

	// Errors lists the distinct failures, with how many bots had each.
	Errors []string `json:"errors,omitempty"`
}

// LayerSeconds is time per simulcast layer, in seconds.
type LayerSeconds struct {
	Q float64 `json:"q"`
	H float64 `json:"h"`
	F float64 `json:"f"`
}

// EstimateKbps sums up bandwidth estimates, in kbit/s.
type EstimateKbps struct {
	P50 float64 `json:"p50"`
	Min float64 `json:"min"`
}

// SubscriberSummary is what one subscriber received.
type SubscriberSummary struct {
	Bot     string
	Asked   string // the highest layer it asked for; "" for no limit
	Size    string // the video size it said it shows; "" for any
	Layers  LayerSeconds
	Last    string // the layer of its last keyframe; "" if none
	NACKs   uint64
	PLIs    uint64
	EstKbps EstimateKbps
}

// Err is non-nil when any bot failed to join or any subscriber received
// nothing: the run's exit status.
func (r *Report) Err() error {
	var parts []string
	if r.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d bots failed", r.Failed, r.Participants))
	}
	if r.NoMedia > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d subscribers received nothing", r.NoMedia, r.Subscribers))
	}
	if r.Converged != nil && !*r.Converged {
		parts = append(parts, "the editors' texts did not converge")
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("bots: %s", strings.Join(parts, ", "))
}

// WriteJSON writes the report as one line of JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("bots: encode report: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "bots: %d publishers, %d subscribers in %d room(s) for %.1fs\n",
		r.Publishers, r.Subscribers, r.Rooms, r.DurationS)
	fmt.Fprintf(&b, "  joined       %d of %d (%d failed); join p50 %.1f ms, p99 %.1f ms\n",
		r.Joined, r.Participants, r.Failed, r.JoinMS.P50, r.JoinMS.P99)
	if r.Reconnects > 0 {
		fmt.Fprintf(&b, "  reconnects   %d\n", r.Reconnects)
	}
	if r.Subscribers > 0 {
		fmt.Fprintf(&b, "  first media  p50 %.1f ms, p99 %.1f ms; %d subscriber(s) got nothing\n",
			r.FirstMediaMS.P50, r.FirstMediaMS.P99, r.NoMedia)
		fmt.Fprintf(&b, "  received     %d packets on %d tracks, %.0f kbit/s; lost %d (%.2f%%), late %d, duplicates %d\n",
			r.RecvPackets, r.Tracks, r.RecvKbps, r.LostPackets, r.LossPct, r.LatePackets, r.Duplicates)
		fmt.Fprintf(&b, "  latency      p50 %.2f ms, p99 %.2f ms; jitter p50 %.2f ms, p99 %.2f ms\n",
			r.LatencyMS.P50, r.LatencyMS.P99, r.JitterMS.P50, r.JitterMS.P99)
	}
	if r.Subscribers > 0 {
		fmt.Fprintf(&b, "  layers       q %.1fs, h %.1fs, f %.1fs; nacks %d, plis %d; estimate p50 %.0f kbit/s, min %.0f\n",
			r.Layers.Q, r.Layers.H, r.Layers.F, r.NACKs, r.PLIs, r.EstKbps.P50, r.EstKbps.Min)
		for _, s := range r.PerSubscriber {
			asked := ""
			if s.Asked != "" {
				asked = " (max " + s.Asked + ")"
			}
			if s.Size != "" {
				asked += " (shown at " + s.Size + ")"
			}
			fmt.Fprintf(&b, "    %-12s on %s%s: q %.1fs, h %.1fs, f %.1fs; nacks %d, plis %d; estimate p50 %.0f kbit/s, min %.0f\n",
				s.Bot, orDash(s.Last), asked, s.Layers.Q, s.Layers.H, s.Layers.F, s.NACKs, s.PLIs, s.EstKbps.P50, s.EstKbps.Min)
		}
	}
	if r.Publishers > 0 {
		fmt.Fprintf(&b, "  sent         %d packets, %.0f kbit/s; REMB p50 %.0f kbit/s, min %.0f\n", r.SentPackets, r.SentKbps, r.REMBKbps.P50, r.REMBKbps.Min)
		if u := r.Uplink; u.Reports > 0 {
			fmt.Fprintf(&b, "  uplink       %s\n", u)
		}
	}
	if r.Editors > 0 {
		fmt.Fprintf(&b, "  edits        %d by %d editors (%.0f/s); ack p50 %.2f ms, p99 %.2f ms; converged %v\n",
			r.EditOps, r.Editors, float64(r.EditOps)/max(r.DurationS, 1e-9), r.EditAckMS.P50, r.EditAckMS.P99, *r.Converged)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "  error        %s\n", e)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// aggregate sums the bots' results.
func aggregate(cfg *Config, results []*botResult, elapsed time.Duration) *Report {
	r := &Report{
		Participants: len(results),
		Publishers:   cfg.Publishers,
		Subscribers:  cfg.Subscribers,
		Rooms:        cfg.Rooms,
		DurationS:    elapsed.Seconds(),
	}
	var joins, firsts, jitters []time.Duration
	var latency, acks histogram
	converged := true
	var allEst, allREMB []int
	var ups []*uplinkStats
	var sentBytes uint64
	errCount := map[string]int{}
	for _, b := range results {
		r.Reconnects += b.reconnects
		if b.err != nil {
			r.Failed++
			errCount[fmt.Sprintf("%s %s: %v", b.spec.role, b.spec.room, b.err)]++
		}
		if b.editor != nil && !b.editor.converged() {
			converged = false
		}
		if !b.joined {
			continue
		}
		r.Joined++
		joins = append(joins, b.joinTime)
		r.SentPackets += b.sentPackets
		sentBytes += b.sentBytes
		if b.editor != nil {
			r.EditOps += b.editor.ops
			acks.merge(b.editor.acks)
		}
		allREMB = append(allREMB, b.rembKbps...)
		if b.uplink != nil {
			ups = append(ups, b.uplink)
		}
		if b.sub == nil {
			continue
		}
		if f := b.sub.firstMedia.Load(); f > 0 {
			firsts = append(firsts, time.Duration(f))
		} else {
			r.NoMedia++
		}
		b.sub.mu.Lock()
		sum := SubscriberSummary{Bot: b.spec.identity, Asked: maxLayerOf(cfg.MaxLayer, b.spec.index), Size: maxLayerOf(cfg.MaxSize, b.spec.index), NACKs: b.sub.nacks, PLIs: b.sub.plis, EstKbps: estimates(b.sub.estKbps)}
		allEst = append(allEst, b.sub.estKbps...)
		r.NACKs += b.sub.nacks
		r.PLIs += b.sub.plis
		for _, t := range b.sub.tracks {
			sum.Layers.Q += t.layers[0].Seconds()
			sum.Layers.H += t.layers[1].Seconds()
			sum.Layers.F += t.layers[2].Seconds()
			if t.lastLayer >= 0 {
				sum.Last = layerName(t.lastLayer)
			}
			r.Tracks++
			r.RecvPackets += t.stats.Packets
			r.RecvBytes += t.stats.Bytes
			r.LostPackets += t.stats.Lost
			r.LatePackets += t.stats.Late
			r.Duplicates += t.stats.Duplicates
			jitters = append(jitters, t.stats.Jitter)
			latency.merge(t.latency)
		}
		b.sub.mu.Unlock()
		r.Layers.Q += sum.Layers.Q
		r.Layers.H += sum.Layers.H
		r.Layers.F += sum.Layers.F
		r.PerSubscriber = append(r.PerSubscriber, sum)
	}
	r.EstKbps = estimates(allEst)
	r.REMBKbps = estimates(allREMB)
	r.Uplink = summarizeUplinks(ups, time.Now())
	r.Layers = LayerSeconds{round(r.Layers.Q, 2), round(r.Layers.H, 2), round(r.Layers.F, 2)}
	r.JoinMS = quantiles(joins)
	r.FirstMediaMS = quantiles(firsts)
	r.JitterMS = quantiles(jitters)
	r.LatencyMS = Quantiles{P50: ms(latency.quantile(0.50)), P99: ms(latency.quantile(0.99))}
	if cfg.Editors > 0 {
		r.Editors = cfg.Editors
		r.EditAckMS = &Quantiles{P50: ms(acks.quantile(0.50)), P99: ms(acks.quantile(0.99))}
		r.Converged = &converged
	}
	if expected := r.RecvPackets + r.LostPackets; expected > 0 {
		r.LossPct = round(100*float64(r.LostPackets)/float64(expected), 3)
	}
	if s := elapsed.Seconds(); s > 0 {
		r.RecvKbps = round(float64(r.RecvBytes)*8/1000/s, 1)
		r.SentKbps = round(float64(sentBytes)*8/1000/s, 1)
	}
	for e, n := range errCount {
		r.Errors = append(r.Errors, fmt.Sprintf("%d× %s", n, e))
	}
	slices.Sort(r.Errors)
	return r
}

// quantiles returns the 50th and 99th percentiles (nearest rank) of ds.
func quantiles(ds []time.Duration) Quantiles {
	if len(ds) == 0 {
		return Quantiles{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(ds)))) - 1
		return ms(ds[max(i, 0)])
	}
	return Quantiles{P50: at(0.50), P99: at(0.99)}
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// histogram counts durations in logarithmic buckets 5% wide, from 10 µs to
// about 100 s, so that per-packet latencies cost no allocation and
// percentiles stay within 2.5%.
type histogram struct {
	counts [histBuckets]uint32
	n      uint64
}

const (
	histMin     = 10 * time.Microsecond
	histGrowth  = 1.05
	histBuckets = 332 // 1 + ln(1e7)/ln(1.05)
	// histLogGrowth is ln(histGrowth).
	histLogGrowth = 0.048790164169432
)

// add counts d; durations below 10 µs (or negative: clocks that disagree)
// fall in the first bucket.
func (h *histogram) add(d time.Duration) {
	i := 0
	if d > histMin {
		i = min(int(math.Log(float64(d)/float64(histMin))/histLogGrowth)+1, histBuckets-1)
	}
	h.counts[i]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	if o == nil {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q ≤ 1), as the geometric middle of
// its bucket; 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= max(rank, 1) {
			if i == 0 {
				return histMin
			}
			return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)-0.5))
		}
	}
	return time.Duration(float64(histMin) * math.Pow(histGrowth, histBuckets))
}

// estimates returns the median and the least of kbps.
func estimates(kbps []int) EstimateKbps {
	if len(kbps) == 0 {
		return EstimateKbps{}
	}
	s := slices.Clone(kbps)
	slices.Sort(s)
	return EstimateKbps{P50: float64(s[(len(s)-1)/2]), Min: float64(s[0])}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
