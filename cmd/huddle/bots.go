package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/bots"
)

// newBotsCmd is `huddle bots`: flag wiring for bots.Run.
func newBotsCmd() *cobra.Command {
	var cfg bots.Config
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "bots",
		Short: "Join rooms with publisher and subscriber bots and measure what they get",
		Long: `Publisher bots loop sample video (VP8) and audio (Opus) into rooms; subscriber
bots receive everything and measure time to join, time to first media, loss,
bitrate, jitter and forwarding latency. Editor bots (--editors) type into the
room's document at --edit-rate operations per second each, measure the ack
latency and check at the end that every editor's text is the server's. The
exit status is non-zero when a bot failed to join, a subscriber received
nothing or the editors did not converge.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if len(cfg.URLs) > 0 {
				cfg.URL = cfg.URLs[0]
			}
			cfg.Progress = cmd.ErrOrStderr()
			if cmd.Flags().Changed("editors") {
				for _, name := range []string{"publishers", "subscribers"} {
					if !cmd.Flags().Changed(name) {
						_ = cmd.Flags().Set(name, "0")
					}
				}
			}
			report, err := bots.Run(ctx, cfg)
			if err != nil {
				return err
			}
			if jsonOut {
				err = report.WriteJSON(cmd.OutOrStdout())
			} else {
				err = report.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			return report.Err()
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.URLs, "url", []string{"http://127.0.0.1:7800"}, "server URL (http(s):// or ws(s)://); several (comma-separated or repeated) spread the bots over a cluster's nodes")
	f.BoolVar(&cfg.Reconnect, "reconnect", false, "a bot whose session ends early (node died, drained) joins again with backoff")
	f.StringVar(&cfg.Room, "room", "bots", "room name")
	f.IntVar(&cfg.Rooms, "rooms", 1, "spread the bots over this many rooms: <room>-1 … <room>-K")
	f.IntVar(&cfg.Publishers, "publishers", 1, "publisher bots")
	f.IntVar(&cfg.Subscribers, "subscribers", 1, "subscriber bots")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the run")
	f.BoolVar(&cfg.AudioOnly, "audio-only", false, "publishers send audio only")
	f.StringVar(&cfg.Video, "video", bots.DefaultVideo, "sample video publishers send (vp8_180p.ivf, vp8_360p.ivf, vp8_720p.ivf)")
	f.BoolVar(&jsonOut, "json", false, "print the summary as one JSON object on the last line of stdout")
	f.StringVar(&cfg.APIKey, "api-key", auth.DevAPIKey, "API key that signs the bots' tokens")
	f.StringVar(&cfg.APISecret, "api-secret", auth.DevAPISecret, "secret of --api-key")
	f.Uint64Var(&cfg.Seed, "seed", 1, "random seed (start offsets in the sample media, start jitter)")
	f.DurationVar(&cfg.Stagger, "stagger", 20*time.Millisecond, "pause between two bots' starts")
	f.IntVar(&cfg.Editors, "editors", 0, "editor bots: type into the room's document (then --publishers and --subscribers default to 0)")
	f.Float64Var(&cfg.EditRate, "edit-rate", 10, "operations per second per editor (cursor moves: 10/s)")
	f.BoolVar(&cfg.Simulcast, "simulcast", false, "publishers send three video layers, rids q/h/f (180p, 360p, 720p)")
	f.StringVar(&cfg.MaxLayer, "max-layer", "", "highest simulcast layer subscribers ask for: q, h or f, or a list such as q,h,f dealt out to the subscribers in turn (default: the server's choice up to f)")
	f.StringVar(&cfg.MaxSize, "max-size", "", "video size subscribers say they show video at, such as 320x180 (the server sends the smallest simulcast layer that covers it), or a list dealt out in turn")
	return cmd
}
