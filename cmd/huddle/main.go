// Command huddle is the Huddle server and its tools: `serve` runs the
// server, `bots` measures it, `token` mints access tokens, `turn` runs
// the TURN server alone, `version` prints the version. This package only
// wires flags, environment and configuration files to the other packages.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	root := &cobra.Command{
		Use:           "huddle",
		Short:         "Huddle: video calls, shared documents and presence in one binary",
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newBotsCmd(), newTokenCmd(), newTurnCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "huddle", version) },
	})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "huddle:", err)
		os.Exit(1)
	}
}
