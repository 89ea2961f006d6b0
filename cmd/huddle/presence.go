package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huddle-rtc/huddle/presence"
)

// startPresence returns the presence tracker of serve, in process or on
// the Redis of --redis (shared with every node that uses it), and the
// function that stops it: call it after the signaling server has shut
// down, so that the sessions it closes reach the backend.
func startPresence(ctx context.Context, f serveFlags, log *slog.Logger) (*presence.Tracker, func(), error) {
	cfg := presence.Config{AwayAfter: f.presenceAway, OfflineAfter: f.presenceOffline, Logger: log}
	closeRedis := func() {}
	if f.redis != "" {
		opts, err := redis.ParseURL(f.redis)
		if err != nil {
			return nil, nil, fmt.Errorf("--redis %q: %w", f.redis, err)
		}
		client := redis.NewClient(opts)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = client.Ping(pctx).Err()
		cancel()
		if err != nil {
			_ = client.Close()
			return nil, nil, fmt.Errorf("--redis %s: %w", opts.Addr, err)
		}
		backend, err := presence.NewRedis(client, nodeID())
		if err != nil {
			_ = client.Close()
			return nil, nil, err
		}
		cfg.Backend = backend
		closeRedis = func() { _ = client.Close() }
		log.Info("presence on redis", "addr", opts.Addr)
	}
	// Not ctx: the tracker outlives the signal that starts the shutdown.
	t, err := presence.New(context.WithoutCancel(ctx), cfg)
	if err != nil {
		closeRedis()
		return nil, nil, fmt.Errorf("presence: %w", err)
	}
	return t, func() { _ = t.Close(); closeRedis() }, nil
}

// nodeID names this process among the nodes sharing Redis.
func nodeID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
