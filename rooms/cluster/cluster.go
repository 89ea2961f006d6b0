// Package cluster places rooms on the nodes of a Huddle cluster through
// Redis: each node registers itself with its load under a TTL it renews;
// a room is owned by one node at a time through a lease (a Redis key with
// a TTL) that the owner renews; every claim takes a fencing token from a
// per-room counter, so that writes made under an older lease can be told
// from the current owner's. A node that cannot renew a lease within its
// TTL, or finds it taken, stops serving the room (OnLost).
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of Config.
const (
	DefaultLeaseTTL = 10 * time.Second
	DefaultPrefix   = "huddle:"
	// roomWeight is how many participants one owned room counts as when
	// nodes are compared, so that empty rooms spread too.
	roomWeight = 10
)

// ErrNoNode is returned by Place when no live node can take a room, or
// when the room's owner is gone but its lease has not expired yet.
var ErrNoNode = errors.New("cluster: no live node can serve the room now")

// Load is what a node reports about itself.
type Load struct {
	Participants int     `json:"participants"`
	Tracks       int     `json:"tracks"`
	CPU          float64 `json:"cpu"`             // cores busy, averaged since the last report
	Cores        int     `json:"cores,omitempty"` // cores the process may use (GOMAXPROCS)
}

// busyShare is the share of its cores a node may be busy with and still
// take new rooms while some node is less busy: a node that forwards media
// at its limit would degrade every room it holds.
const busyShare = 0.85

// busy reports whether the node's CPU is near its limit.
func (l Load) busy() bool { return l.Cores > 0 && l.CPU >= busyShare*float64(l.Cores) }

// Node is one registered node.
type Node struct {
	ID       string `json:"id"`
	URL      string `json:"url"`
	Load     Load   `json:"load"`
	Rooms    int    `json:"rooms"`
	Draining bool   `json:"draining,omitempty"`
	// Silent is how long ago the node's last heartbeat was (by Redis's
	// clock); filled by Nodes.
	Silent time.Duration `json:"-"`
}

// Config sets up a Cluster.
type Config struct {
	Redis redis.UniversalClient
	// NodeID names this node; empty picks a random one.
	NodeID string
	// URL is the base URL clients reach this node at (http://host:port).
	URL string
	// LeaseTTL is the lifetime of room leases and of the node's
	// registration; 0 means DefaultLeaseTTL. A dead node's rooms move after
	// at most this long.
	LeaseTTL time.Duration
	// Prefix starts every key; empty means DefaultPrefix.
	Prefix string
	// Load reports this node's load (nil: zero).
	Load func() Load
	// Active reports whether this node still has anyone in room; a lease
	// on a room that is not active is released (nil: always active).
	Active func(room string) bool
	// OnLost is called, on the cluster's goroutine, when this node lost a
	// room's lease: it must stop serving the room (its clients reconnect
	// and are placed again).
	OnLost func(room string)
	Logger *slog.Logger
}

type lease struct {
	value   string // "<node> <token>", the key's value while we own it
	token   int64
	renewed time.Time // when Redis last confirmed it
	idle    int       // renewals since the room was last active
}

// Cluster is this node's membership.
type Cluster struct {
	cfg Config
	rdb redis.UniversalClient
	log *slog.Logger

	mu       sync.Mutex
	leases   map[string]*lease
	draining bool

	cpuAt   time.Time
	cpuUsed time.Duration
	cpu     float64 // cores busy over the last measured second or more

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// claimScript returns the room's owner, making ARGV[1] the owner with a
// new fencing token when there is none.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
local tok = redis.call('INCR', KEYS[2])
local v = ARGV[1] .. ' ' .. tok
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return v`)

// renewScript extends the lease if it is still ARGV[1].
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`)

// releaseScript deletes the lease if it is still ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Join registers the node and starts renewing; Close ends it.
func Join(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Redis == nil {
		return nil, errors.New("cluster: no Redis client")
	}
	if cfg.URL == "" {
		return nil, errors.New("cluster: this node's URL is required")
	}
	if cfg.NodeID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.NodeID = "node-" + hex.EncodeToString(b[:])
	}
	if strings.ContainsAny(cfg.NodeID, " ") {
		return nil, fmt.Errorf("cluster: node id %q has a space", cfg.NodeID)
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.LeaseTTL < 300*time.Millisecond {
		return nil, fmt.Errorf("cluster: lease TTL %v is too short", cfg.LeaseTTL)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	c := &Cluster{
		cfg: cfg, rdb: cfg.Redis, log: cfg.Logger, leases: map[string]*lease{},
		stop: make(chan struct{}), done: make(chan struct{}), cpuAt: time.Now(), cpuUsed: cpuTime(),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("component", "cluster", "node", cfg.NodeID)
	if err := c.heartbeat(ctx); err != nil {
		return nil, fmt.Errorf("cluster: register node: %w", err)
	}
	go c.loop()
	c.log.Info("joined the cluster", "url", cfg.URL, "lease_ttl", cfg.LeaseTTL)
	return c, nil
}

// ID is this node's id.
func (c *Cluster) ID() string { return c.cfg.NodeID }

func (c *Cluster) nodeKey(id string) string { return c.cfg.Prefix + "node:" + id }
func (c *Cluster) nodesKey() string         { return c.cfg.Prefix + "nodes" }
func (c *Cluster) assignedKey() string      { return c.cfg.Prefix + "assigned" }

// RoomKey is the Redis key of room's lease; its value is "<node>
// <fencing token>".
func (c *Cluster) RoomKey(room string) string  { return c.cfg.Prefix + "room:" + room }
func (c *Cluster) fenceKey(room string) string { return c.cfg.Prefix + "fence:" + room }

// heartbeat writes this node's record with its load.
func (c *Cluster) heartbeat(ctx context.Context) error {
	c.mu.Lock()
	n := Node{ID: c.cfg.NodeID, URL: c.cfg.URL, Rooms: len(c.leases), Draining: c.draining}
	c.mu.Unlock()
	if c.cfg.Load != nil {
		n.Load = c.cfg.Load()
	}
	now := time.Now()
	used := cpuTime()
	c.mu.Lock()
	// Over a second at least: a node's first moments (start-up, or the
	// race detector's) would otherwise read as busy and get no room.
	if d := now.Sub(c.cpuAt); d >= time.Second {
		c.cpu = float64(used-c.cpuUsed) / float64(d)
		c.cpuAt, c.cpuUsed = now, used
	}
	n.Load.CPU = c.cpu
	n.Load.Cores = runtime.GOMAXPROCS(0)
	c.mu.Unlock()
	b, _ := json.Marshal(n)
	exp := now.Add(c.cfg.LeaseTTL).UnixMilli()
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, c.nodeKey(n.ID), b, c.cfg.LeaseTTL)
		p.ZAdd(ctx, c.nodesKey(), redis.Z{Score: float64(exp), Member: n.ID})
		p.ZRemRangeByScore(ctx, c.nodesKey(), "-inf", strconv.FormatInt(now.Add(-10*c.cfg.LeaseTTL).UnixMilli(), 10))
		p.HSet(ctx, c.assignedKey(), n.ID, n.Rooms)
		return nil
	})
	return err
}

// Nodes lists the live nodes.
func (c *Cluster) Nodes(ctx context.Context) ([]Node, error) {
	// Liveness is the node key's TTL, kept by Redis's clock; the set only
	// lists candidates (and forgets long-dead ones at heartbeats).
	ids, err := c.rdb.ZRange(ctx, c.nodesKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: list nodes: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = c.nodeKey(id)
	}
	vals, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: read nodes: %w", err)
	}
	// How long each node has been silent: its key's TTL counts down from
	// LeaseTTL at every heartbeat.
	ttls := make([]*redis.DurationCmd, len(keys))
	if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			ttls[i] = p.PTTL(ctx, k)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("cluster: read node TTLs: %w", err)
	}
	assigned, err := c.rdb.HGetAll(ctx, c.assignedKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: read assignments: %w", err)
	}
	var out []Node
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired between the two reads
		}
		var n Node
		if json.Unmarshal([]byte(s), &n) != nil {
			continue
		}
		if ttl := ttls[i].Val(); ttl > 0 {
			n.Silent = max(c.cfg.LeaseTTL-ttl, 0)
		}
		if a, err := strconv.Atoi(assigned[n.ID]); err == nil && a > n.Rooms {
			n.Rooms = a // claims made for it since its last heartbeat
		}
		out = append(out, n)
	}
	return out, nil
}

// NodeURLs lists the base URLs of the live nodes that are not draining
// (sorted): where a client can join again when its node dies.
func (c *Cluster) NodeURLs(ctx context.Context) ([]string, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, n := range nodes {
		if n.Draining || n.URL == "" || (n.ID == c.cfg.NodeID && c.isDraining()) || c.stale(n) {
			continue
		}
		urls = append(urls, n.URL)
	}
	slices.Sort(urls)
	return slices.Compact(urls), nil
}

// Owner returns the node id and fencing token of room's lease, or "" when
// nobody holds it.
func (c *Cluster) Owner(ctx context.Context, room string) (string, int64, error) {
	v, err := c.rdb.Get(ctx, c.RoomKey(room)).Result()
	if errors.Is(err, redis.Nil) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("cluster: owner of %q: %w", room, err)
	}
	id, tok, _ := parseValue(v)
	return id, tok, nil
}

func parseValue(v string) (string, int64, bool) {
	id, t, ok := strings.Cut(v, " ")
	if !ok {
		return "", 0, false
	}
	tok, err := strconv.ParseInt(t, 10, 64)
	return id, tok, err == nil
}

// Place decides where room is served: "" when this node serves it (it
// holds the lease), or the URL of the node that does. A room nobody owns
// goes to the least-loaded live node that is not draining, by an atomic
// claim made on its behalf.
func (c *Cluster) Place(ctx context.Context, room string) (string, error) {
	if c.holds(room) {
		return "", nil
	}
	v, err := c.rdb.Get(ctx, c.RoomKey(room)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return "", err
		}
		pick := c.pick(nodes)
		if pick == "" {
			return "", ErrNoNode
		}
		v, err = claimScript.Run(ctx, c.rdb, []string{c.RoomKey(room), c.fenceKey(room), c.assignedKey()},
			pick, c.cfg.LeaseTTL.Milliseconds()).Text()
		if err != nil {
			return "", fmt.Errorf("cluster: claim %q: %w", room, err)
		}
	case err != nil:
		return "", fmt.Errorf("cluster: owner of %q: %w", room, err)
	}
	owner, tok, ok := parseValue(v)
	if !ok {
		return "", fmt.Errorf("cluster: lease of %q holds %q", room, v)
	}
	if owner == c.cfg.NodeID {
		if err := c.adopt(ctx, room, v, tok); err != nil {
			return "", err
		}
		return "", nil
	}
	raw, err := c.rdb.Get(ctx, c.nodeKey(owner)).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("%w: its owner %s is gone; its lease expires within %v", ErrNoNode, owner, c.cfg.LeaseTTL)
	}
	if err != nil {
		return "", fmt.Errorf("cluster: node %s: %w", owner, err)
	}
	var n Node
	if err := json.Unmarshal([]byte(raw), &n); err != nil || n.URL == "" {
		return "", fmt.Errorf("cluster: node %s has a bad record", owner)
	}
	return n.URL, nil
}

// stale reports whether node n missed two heartbeats (sent every third
// of LeaseTTL): it is most likely dead although its record has not
// expired yet. Rooms are not placed there (a dead node's rooms would be
// placed on it again otherwise: its record outlives its leases by up to a
// heartbeat), nor clients sent there. This node is never stale to itself.
func (c *Cluster) stale(n Node) bool {
	return n.ID != c.cfg.NodeID && n.Silent > 2*c.cfg.LeaseTTL/3+c.cfg.LeaseTTL/10
}

// pick is the least-loaded live node that is not draining (ties broken
// at random), preferring nodes that are not stale and whose CPU is not
// near its limit; "" when there is none.
func (c *Cluster) pick(nodes []Node) string {
	usable := func(n Node) bool { return !n.Draining && !(n.ID == c.cfg.NodeID && c.isDraining()) }
	allStale, allBusy := true, true
	for _, n := range nodes {
		if usable(n) && !c.stale(n) {
			allStale = false
			if !n.Load.busy() {
				allBusy = false
			}
		}
	}
	best, bestScore, ties := "", math.MaxInt, 0
	for _, n := range nodes {
		if !usable(n) || (c.stale(n) && !allStale) || (n.Load.busy() && !allBusy) {
			continue
		}
		score := n.Load.Participants + roomWeight*n.Rooms
		switch {
		case score < bestScore:
			best, bestScore, ties = n.ID, score, 1
		case score == bestScore:
			ties++
			if mrand.IntN(ties) == 0 {
				best = n.ID
			}
		}
	}
	return best
}

// adopt makes a lease claimed for this node ours: renewed now, then by
// the loop.
func (c *Cluster) adopt(ctx context.Context, room, value string, tok int64) error {
	ok, err := renewScript.Run(ctx, c.rdb, []string{c.RoomKey(room)}, value, c.cfg.LeaseTTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("cluster: renew %q: %w", room, err)
	}
	if ok != 1 {
		return fmt.Errorf("%w: the lease of %q changed hands", ErrNoNode, room)
	}
	c.mu.Lock()
	c.leases[room] = &lease{value: value, token: tok, renewed: time.Now()}
	c.mu.Unlock()
	c.log.Info("room placed here", "room", room, "token", tok)
	return nil
}

// holds reports whether this node holds a lease on room that has not
// expired by its own clock.
func (c *Cluster) holds(room string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.leases[room]
	return l != nil && time.Since(l.renewed) < c.cfg.LeaseTTL
}

// Token returns the fencing token of this node's lease on room.
func (c *Cluster) Token(room string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.leases[room]
	if l == nil || time.Since(l.renewed) >= c.cfg.LeaseTTL {
		return 0, false
	}
	return l.token, true
}

// LeaseValue returns the value room's lease key holds while this node
// owns it ("<node> <token>"): a write fenced by it succeeds only while the
// lease is this node's.
func (c *Cluster) LeaseValue(room string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.leases[room]
	if l == nil || time.Since(l.renewed) >= c.cfg.LeaseTTL {
		return "", false
	}
	return l.value, true
}

// Rooms lists the rooms this node holds.
func (c *Cluster) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.leases))
	for r := range c.leases {
		out = append(out, r)
	}
	return out
}

func (c *Cluster) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// Drain stops this node from taking rooms: it is skipped by placement
// from now on (other nodes see it at its next heartbeat, written now).
func (c *Cluster) Drain(ctx context.Context) error {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	return c.heartbeat(ctx)
}

// Release gives up room's lease (the room moved or ended here).
func (c *Cluster) Release(ctx context.Context, room string) error {
	c.mu.Lock()
	l := c.leases[room]
	delete(c.leases, room)
	c.mu.Unlock()
	if l == nil {
		return nil
	}
	if err := releaseScript.Run(ctx, c.rdb, []string{c.RoomKey(room)}, l.value).Err(); err != nil {
		return fmt.Errorf("cluster: release %q: %w", room, err)
	}
	return nil
}

// loop renews the registration and the leases every third of the TTL.
func (c *Cluster) loop() {
	defer close(c.done)
	tick := time.NewTicker(c.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.LeaseTTL/3)
		if err := c.heartbeat(ctx); err != nil {
			c.log.Warn("heartbeat", "err", err)
		}
		c.renewAll(ctx)
		cancel()
	}
}

// renewAll renews every lease; a lease Redis no longer confirms, or that
// could not be confirmed within its TTL, is lost.
func (c *Cluster) renewAll(ctx context.Context) {
	c.mu.Lock()
	rooms := make(map[string]*lease, len(c.leases))
	for r, l := range c.leases {
		rooms[r] = l
	}
	c.mu.Unlock()
	for room, l := range rooms {
		if c.cfg.Active != nil && !c.cfg.Active(room) {
			l.idle++
			if l.idle >= 2 {
				c.log.Info("room ended here: lease released", "room", room)
				if err := c.Release(ctx, room); err != nil {
					c.log.Warn("release", "room", room, "err", err)
				}
			}
			continue
		}
		l.idle = 0
		ok, err := renewScript.Run(ctx, c.rdb, []string{c.RoomKey(room)}, l.value, c.cfg.LeaseTTL.Milliseconds()).Int()
		now := time.Now()
		switch {
		case err == nil && ok == 1:
			c.mu.Lock()
			if c.leases[room] == l {
				l.renewed = now
			}
			c.mu.Unlock()
			continue
		case err == nil:
			c.log.Warn("lease lost: taken or expired", "room", room, "token", l.token)
		case now.Sub(l.renewed) >= c.cfg.LeaseTTL:
			c.log.Warn("lease lost: not renewed within its TTL", "room", room, "token", l.token, "err", err)
		default:
			c.log.Warn("lease renewal failed; will retry", "room", room, "err", err)
			continue
		}
		c.mu.Lock()
		if c.leases[room] == l {
			delete(c.leases, room)
		}
		c.mu.Unlock()
		if c.cfg.OnLost != nil {
			c.cfg.OnLost(room)
		}
	}
}

// Close stops renewing, releases every lease and removes the node's
// record, so its rooms can be placed again at once.
func (c *Cluster) Close(ctx context.Context) error {
	c.once.Do(func() { close(c.stop) })
	<-c.done
	var errs []error
	for _, r := range c.Rooms() {
		errs = append(errs, c.Release(ctx, r))
	}
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, c.nodeKey(c.cfg.NodeID))
		p.ZRem(ctx, c.nodesKey(), c.cfg.NodeID)
		p.HDel(ctx, c.assignedKey(), c.cfg.NodeID)
		return nil
	})
	errs = append(errs, err)
	return errors.Join(errs...)
}

// cpuTime is the CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
