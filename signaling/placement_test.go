package signaling_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/sfu"
	"github.com/huddle-rtc/huddle/signaling"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// placeFunc is a Placement from a function.
type placeFunc func(room string) (string, error)

func (f placeFunc) Place(_ context.Context, room string) (string, error) { return f(room) }

// startPlacedServer runs a server whose joins go through pl.
func startPlacedServer(t *testing.T, pl signaling.Placement) string {
	t.Helper()
	discard := slog.New(slog.DiscardHandler)
	eng, err := sfu.NewEngine(sfu.Config{IncludeLoopback: true, IPFilter: func(ip net.IP) bool { return ip.IsLoopback() }, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	reg := rooms.NewRegistry(rooms.Config{Engine: eng, Logger: discard, Version: "test"})
	verifier, err := auth.NewVerifier(map[string]string{auth.DevAPIKey: auth.DevAPISecret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := signaling.New(signaling.Config{Registry: reg, Verifier: verifier, Logger: discard, Placement: pl})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
		_ = eng.Close()
	})
	return hs.URL
}

// TestPlacementRedirect: a node that does not serve the room answers the
// join with a redirect, which the Go client follows to the node that does;
// a room that cannot be placed is refused with "unavailable".
func TestPlacementRedirect(t *testing.T) {
	owner := startPlacedServer(t, placeFunc(func(string) (string, error) { return "", nil }))
	entry := startPlacedServer(t, placeFunc(func(room string) (string, error) {
		if room == "nowhere" {
			return "", errors.New("no live node")
		}
		return owner, nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, entry, token(t, "standup", "ada", protocol.GrantSubscribe), client.Options{LoopbackOnly: true})
	if err != nil {
		t.Fatalf("dial through the entry node: %v", err)
	}
	if c.URL() != owner || c.Joined().Room != "standup" {
		t.Errorf("joined %q at %s; want standup at %s", c.Joined().Room, c.URL(), owner)
	}
	_ = c.Close()

	_, err = client.Dial(ctx, entry, token(t, "nowhere", "ada", protocol.GrantSubscribe), client.Options{LoopbackOnly: true})
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeUnavailable {
		t.Fatalf("join of an unplaceable room: %v; want %s", err, protocol.CodeUnavailable)
	}

	// A node that keeps redirecting is given up after a few hops.
	var loop string
	loop = startPlacedServer(t, placeFunc(func(string) (string, error) { return loop, nil }))
	_, err = client.Dial(ctx, loop, token(t, "standup", "ada", protocol.GrantSubscribe), client.Options{LoopbackOnly: true})
	if err == nil {
		t.Fatal("a redirect loop ended in a join")
	}
}

// listingPlacement serves every room here and lists fixed nodes.
type listingPlacement []string

func (listingPlacement) Place(context.Context, string) (string, error) { return "", nil }

func (l listingPlacement) NodeURLs(context.Context) ([]string, error) { return l, nil }

// TestJoinedNodes: in cluster mode joined lists the live nodes (where a
// client can join again when its node dies); outside it, nothing.
func TestJoinedNodes(t *testing.T) {
	nodes := listingPlacement{"http://10.0.0.1:7800", "http://10.0.0.2:7800"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		pl   signaling.Placement
		want string
	}{
		{nodes, "[http://10.0.0.1:7800 http://10.0.0.2:7800]"},
		{placeFunc(func(string) (string, error) { return "", nil }), "[]"},
	} {
		base := startPlacedServer(t, tc.pl)
		c, err := client.Dial(ctx, base, token(t, "standup", "ada", protocol.GrantSubscribe), client.Options{LoopbackOnly: true})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if got := fmt.Sprint(c.Joined().Nodes); got != tc.want {
			t.Errorf("joined nodes = %s; want %s", got, tc.want)
		}
		_ = c.Close()
	}
}
