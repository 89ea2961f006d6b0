package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/rooms/cluster"
	"github.com/huddle-rtc/huddle/rooms/doc"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// clusterFlags configure cluster mode (with --redis).
type clusterFlags struct {
	nodeID     string
	nodeURL    string
	leaseTTL   time.Duration
	drainGrace time.Duration
}

func addClusterFlags(fl *pflag.FlagSet, c *clusterFlags) {
	fl.StringVar(&c.nodeID, "node-id", "", "this node's id in the cluster (default: random)")
	fl.StringVar(&c.nodeURL, "node-url", "", "URL clients reach this node at, for redirects (default: http://<--listen>)")
	fl.DurationVar(&c.leaseTTL, "lease-ttl", cluster.DefaultLeaseTTL, "room lease and node registration lifetime: a dead node's rooms move after this long")
	fl.DurationVar(&c.drainGrace, "drain-grace", 30*time.Second, "on SIGTERM in cluster mode, how long to wait for the rooms to move")
}

// keyPrefix starts every Redis key of Huddle.
const keyPrefix = "huddle:"

// openRedis connects to the Redis of --redis and checks it answers.
func openRedis(ctx context.Context, rawURL string) (*redis.Client, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--redis %q: %w", rawURL, err)
	}
	rdb := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", opts.Addr, err)
	}
	return rdb, nil
}

// fencedDocs is the documents' Redis store, fenced by the room leases of
// *cl (set once the node joined the cluster).
func fencedDocs(rdb *redis.Client, cl **cluster.Cluster) *doc.RedisStore {
	return doc.NewRedisStore(rdb, keyPrefix, func(room string) (string, string, bool) {
		c := *cl
		if c == nil {
			return "", "", false
		}
		v, ok := c.LeaseValue(room)
		return c.RoomKey(room), v, ok
	})
}

// joinCluster registers this node; a lost lease evicts the room's
// clients with a redirect to this node, which places them again.
func joinCluster(ctx context.Context, f serveFlags, rdb *redis.Client, reg *rooms.Registry, log *slog.Logger) (*cluster.Cluster, string, error) {
	url := f.cluster.nodeURL
	if url == "" {
		host, _, _ := net.SplitHostPort(f.listen)
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return nil, "", fmt.Errorf("cluster mode: --listen %s is not an address clients can reach; set --node-url", f.listen)
		}
		url = "http://" + f.listen
	}
	cl, err := cluster.Join(ctx, cluster.Config{
		Redis: rdb, NodeID: f.cluster.nodeID, URL: url, LeaseTTL: f.cluster.leaseTTL, Prefix: keyPrefix, Logger: log,
		Load: func() cluster.Load {
			s := reg.Stats()
			return cluster.Load{Participants: s.Participants, Tracks: s.Tracks}
		},
		Active: reg.Active,
		OnLost: func(room string) {
			n := reg.Evict(room, &protocol.Redirect{Envelope: protocol.Envelope{Type: protocol.TypeRedirect}, URL: url, Room: room, Reason: "moved"}, "moved")
			log.Warn("lease lost: the room's clients were sent to be placed again", "room", room, "clients", n)
		},
	})
	if err != nil {
		return nil, "", err
	}
	return cl, url, nil
}

// drain moves every room away: the node takes no new room, each room's
// lease is released and claimed for another node, and its clients get a
// redirect there. It returns when no room is left or grace ends.
func drain(cl *cluster.Cluster, reg *rooms.Registry, grace time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := cl.Drain(ctx); err != nil {
		log.Warn("drain: announce", "err", err)
	}
	for ctx.Err() == nil {
		var names []string
		for _, n := range reg.Names() {
			if reg.Active(n) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			log.Info("drained: no room left")
			return
		}
		for _, room := range names {
			if err := cl.Release(ctx, room); err != nil {
				log.Warn("drain: release", "room", room, "err", err)
			}
			url, err := cl.Place(ctx, room)
			if errors.Is(err, cluster.ErrNoNode) || (err == nil && url == "") {
				n := reg.Evict(room, &protocol.Bye{Envelope: protocol.Envelope{Type: protocol.TypeBye}, Reason: "shutdown"}, "shutdown")
				log.Warn("drain: no other node takes the room; its sessions end", "room", room, "clients", n)
				continue
			}
			if err != nil {
				log.Warn("drain: placement failed; will retry", "room", room, "err", err)
				continue
			}
			n := reg.Evict(room, &protocol.Redirect{Envelope: protocol.Envelope{Type: protocol.TypeRedirect}, URL: url, Room: room, Reason: "drain"}, "drain")
			log.Info("drain: room moved", "room", room, "to", url, "clients", n)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	log.Warn("drain: grace period over; the remaining sessions end")
}
