package signaling

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/huddle-rtc/huddle/rooms"
)

// qualityCollector exports each participant's latest connection quality
// and downlink statistics (from the rooms' 2-second measurements).
type qualityCollector struct{ reg *rooms.Registry }

var (
	qualityLabels  = []string{"room", "participant", "identity"}
	descScore      = prometheus.NewDesc("huddle_participant_quality_score", "Connection quality, a MOS-like score from 1 to 5, by kind (all, audio, video).", append(qualityLabels, "kind"), nil)
	descEstimate   = prometheus.NewDesc("huddle_participant_estimate_bps", "Bandwidth estimate towards the participant (GCC from TWCC feedback), bits per second.", qualityLabels, nil)
	descNACKs      = prometheus.NewDesc("huddle_participant_nacks_total", "Packets the participant asked to be resent.", qualityLabels, nil)
	descPLIs       = prometheus.NewDesc("huddle_participant_plis_total", "Keyframes the participant asked for (PLI and FIR).", qualityLabels, nil)
	descLoss       = prometheus.NewDesc("huddle_participant_loss_ratio", "Worst fraction lost in the participant's latest receiver reports, net of the publisher's uplink loss.", qualityLabels, nil)
	descRTT        = prometheus.NewDesc("huddle_participant_rtt_seconds", "Worst round-trip time from the participant's receiver reports.", qualityLabels, nil)
	descJitter     = prometheus.NewDesc("huddle_participant_jitter_seconds", "Worst interarrival jitter in the participant's receiver reports.", qualityLabels, nil)
	descLayer      = prometheus.NewDesc("huddle_participant_layer", "Simulcast layer received per video track: 0 q, 1 h, 2 f, -1 none.", append(qualityLabels, "track"), nil)
	layerIndex     = map[string]float64{"q": 0, "h": 1, "f": 2}
	trackLabels    = []string{"room", "track", "participant", "kind"}
	descTrackRate  = prometheus.NewDesc("huddle_track_bitrate_bps", "Bitrate received from the publisher per simulcast layer (q, h, f; a track without simulcast is q), bits per second.", append(trackLabels, "layer"), nil)
	descTrackREMB  = prometheus.NewDesc("huddle_track_remb_bps", "Latest REMB cap sent to the publisher of a track without simulcast, bits per second.", trackLabels, nil)
	descTrackPLIs  = prometheus.NewDesc("huddle_track_keyframe_requests_total", "Keyframe requests (PLI) sent to the publisher.", trackLabels, nil)
	descTrackSubs  = prometheus.NewDesc("huddle_track_subscribers", "Subscribers of the track.", trackLabels, nil)
	descClientREMB = prometheus.NewDesc("huddle_participant_remb_bps", "Latest REMB the participant sent about what it receives (its own estimate), bits per second.", qualityLabels, nil)
	// The uplink: what the server receives of each published track.
	descTrackPackets = prometheus.NewDesc("huddle_track_uplink_packets_total", "Packets received from the publisher per simulcast layer (q, h, f; a track without simulcast is q), duplicates excluded.", append(trackLabels, "layer"), nil)
	descTrackLost    = prometheus.NewDesc("huddle_track_uplink_lost_total", "Packets the publisher sent that never arrived, after retransmissions, per simulcast layer.", append(trackLabels, "layer"), nil)
	descTrackRecov   = prometheus.NewDesc("huddle_track_uplink_recovered_total", "Packets that arrived after a later one and filled their gap in time (retransmissions, reordering), per simulcast layer.", append(trackLabels, "layer"), nil)
	descTrackLoss    = prometheus.NewDesc("huddle_track_uplink_loss_ratio", "Fraction of the publisher's packets lost in the latest quality interval, after retransmissions.", trackLabels, nil)
	descTrackJitter  = prometheus.NewDesc("huddle_track_uplink_jitter_seconds", "Interarrival jitter of the publisher's packets (RFC 3550) per simulcast layer.", append(trackLabels, "layer"), nil)
	descTrackScore   = prometheus.NewDesc("huddle_track_uplink_score", "Uplink quality of the track, a MOS-like score from 1 to 5.", trackLabels, nil)
	descUplinkScore  = prometheus.NewDesc("huddle_participant_uplink_score", "Uplink quality of the participant's published media (the lowest of its tracks), 1 to 5.", qualityLabels, nil)
	descUplinkRTT    = prometheus.NewDesc("huddle_participant_uplink_rtt_seconds", "Round-trip time to the participant on its publish transport (ICE consent checks).", qualityLabels, nil)
	qualityMetrics   = []*prometheus.Desc{descScore, descEstimate, descNACKs, descPLIs, descLoss, descRTT, descJitter, descLayer,
		descTrackRate, descTrackREMB, descTrackPLIs, descTrackSubs, descClientREMB,
		descTrackPackets, descTrackLost, descTrackRecov, descTrackLoss, descTrackJitter, descTrackScore, descUplinkScore, descUplinkRTT}
)

func (c qualityCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range qualityMetrics {
		ch <- d
	}
}

func (c qualityCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.reg.TrackQualities() {
		l := []string{t.Room, t.SID, t.Participant, t.Kind}
		for i, name := range []string{"q", "h", "f"} {
			if t.LayerBitrates[i] > 0 {
				ch <- prometheus.MustNewConstMetric(descTrackRate, prometheus.GaugeValue, float64(t.LayerBitrates[i]), append(l, name)...)
			}
		}
		ch <- prometheus.MustNewConstMetric(descTrackREMB, prometheus.GaugeValue, float64(t.REMB), l...)
		ch <- prometheus.MustNewConstMetric(descTrackPLIs, prometheus.CounterValue, float64(t.KeyframeRequests), l...)
		ch <- prometheus.MustNewConstMetric(descTrackSubs, prometheus.GaugeValue, float64(t.Subscribers), l...)
		for i, name := range []string{"q", "h", "f"} {
			if !t.HasLayer[i] {
				continue
			}
			u, ll := t.Uplink[i], append(l, name)
			ch <- prometheus.MustNewConstMetric(descTrackPackets, prometheus.CounterValue, float64(u.Packets), ll...)
			ch <- prometheus.MustNewConstMetric(descTrackLost, prometheus.CounterValue, float64(u.Lost), ll...)
			ch <- prometheus.MustNewConstMetric(descTrackRecov, prometheus.CounterValue, float64(u.Recovered), ll...)
			ch <- prometheus.MustNewConstMetric(descTrackJitter, prometheus.GaugeValue, u.Jitter.Seconds(), ll...)
		}
		if t.Score != nil {
			ch <- prometheus.MustNewConstMetric(descTrackLoss, prometheus.GaugeValue, t.Score.LossPct/100, l...)
			ch <- prometheus.MustNewConstMetric(descTrackScore, prometheus.GaugeValue, t.Score.Score, l...)
		}
	}
	for _, rq := range c.reg.Quality() {
		for sid, q := range rq.Participants {
			l := []string{rq.Room, sid, q.Identity}
			ch <- prometheus.MustNewConstMetric(descScore, prometheus.GaugeValue, q.Score, append(l, "all")...)
			if q.Audio != nil {
				ch <- prometheus.MustNewConstMetric(descScore, prometheus.GaugeValue, q.Audio.Score, append(l, "audio")...)
			}
			if q.Video != nil {
				ch <- prometheus.MustNewConstMetric(descScore, prometheus.GaugeValue, q.Video.Score, append(l, "video")...)
			}
			if up := q.Uplink; up != nil {
				ch <- prometheus.MustNewConstMetric(descUplinkScore, prometheus.GaugeValue, up.Score, l...)
				ch <- prometheus.MustNewConstMetric(descUplinkRTT, prometheus.GaugeValue, up.RTTMs/1000, l...)
			}
			st := q.Stats
			if st == nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descClientREMB, prometheus.GaugeValue, float64(st.REMBKbps)*1000, l...)
			ch <- prometheus.MustNewConstMetric(descEstimate, prometheus.GaugeValue, float64(st.EstimateKbps)*1000, l...)
			ch <- prometheus.MustNewConstMetric(descNACKs, prometheus.CounterValue, float64(st.NACKs), l...)
			ch <- prometheus.MustNewConstMetric(descPLIs, prometheus.CounterValue, float64(st.PLIs), l...)
			ch <- prometheus.MustNewConstMetric(descLoss, prometheus.GaugeValue, st.LossPct/100, l...)
			ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, st.RTTMs/1000, l...)
			ch <- prometheus.MustNewConstMetric(descJitter, prometheus.GaugeValue, st.JitterMs/1000, l...)
			for track, layer := range st.Layers {
				v := -1.0
				switch layer {
				case "q":
					v = 0
				case "h":
					v = 1
				case "f":
					v = 2
				}
				ch <- prometheus.MustNewConstMetric(descLayer, prometheus.GaugeValue, v, append(l, track)...)
			}
		}
	}
}
