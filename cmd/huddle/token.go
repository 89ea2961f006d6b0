package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// newTokenCmd is `huddle token`: mint an access token.
func newTokenCmd() *cobra.Command {
	var t auth.Token
	var key, secret string
	cmd := &cobra.Command{
		Use:          "token",
		Short:        "Print an access token for a room",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, g := range t.Grants {
				known := false
				for _, k := range protocol.AllGrants {
					known = known || g == k
				}
				if !known {
					return fmt.Errorf("unknown grant %q (known: %v)", g, protocol.AllGrants)
				}
			}
			s, err := auth.Mint(key, secret, t, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&t.Room, "room", "", "room the token admits to (required)")
	f.StringVar(&t.Identity, "identity", "", "user identity (required)")
	f.StringVar(&t.Name, "name", "", "display name (default: the identity)")
	f.StringSliceVar(&t.Grants, "grant", []string{protocol.GrantPublish, protocol.GrantSubscribe, protocol.GrantData, protocol.GrantEdit}, "grants: "+strings.Join(protocol.AllGrants, ", "))
	f.DurationVar(&t.TTL, "ttl", time.Hour, "lifetime")
	f.StringVar(&key, "api-key", auth.DevAPIKey, "API key (env HUDDLE_API_KEY)")
	f.StringVar(&secret, "api-secret", auth.DevAPISecret, "API secret (env HUDDLE_API_SECRET)")
	_ = cmd.MarkFlagRequired("room")
	_ = cmd.MarkFlagRequired("identity")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error { return applyEnvAndConfig(cmd, "") }
	return cmd
}
