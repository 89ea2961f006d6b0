package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

var flagRef = regexp.MustCompile(`--[a-z][a-z0-9-]+`)

func commands() []*cobra.Command {
	return []*cobra.Command{newServeCmd(), newBotsCmd(), newTokenCmd(), newTurnCmd()}
}

// TestHelpNamesOwnFlags: the help of each command (its description and
// every flag's usage) names only flags that command has, so a user who
// follows `huddle <cmd> --help` is never told of a flag it refuses.
func TestHelpNamesOwnFlags(t *testing.T) {
	for _, cmd := range commands() {
		texts := []string{cmd.Long}
		cmd.Flags().VisitAll(func(f *pflag.Flag) { texts = append(texts, f.Usage) })
		for _, ref := range flagRef.FindAllString(strings.Join(texts, "\n"), -1) {
			if cmd.Flags().Lookup(ref[2:]) == nil {
				t.Errorf("huddle %s --help names %s, which it does not have", cmd.Name(), ref)
			}
		}
	}
}

// TestREADMENamesRealFlags: every --flag README.md names is a flag of
// some command (--test is node's, in `node --test web/`).
func TestREADMENamesRealFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range flagRef.FindAllString(string(readme), -1) {
		found := ref == "--test"
		for _, cmd := range commands() {
			found = found || cmd.Flags().Lookup(ref[2:]) != nil
		}
		if !found {
			t.Errorf("README.md names %s, which no command has", ref)
		}
	}
}
