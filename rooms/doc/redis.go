package doc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrFenced: a RedisStore refused a commit because the room's lease is no
// longer this node's (another node serves the document now).
const ErrFenced ErrorKind = "fenced"

// RedisStore is a Store in Redis, shared by the nodes of a cluster: each
// document is a list of JSON entries (<prefix>doc:<id>:log) and a sorted
// set of JSON snapshots by version (<prefix>doc:<id>:snaps). A commit is
// one Lua script, so it is atomic; with Fence set it also checks, in the
// same script, that the room's lease still holds this node's value, so a
// node that lost its lease cannot append after the new owner did.
//
// A commit is acknowledged once Redis applied it; how durable that is
// follows the Redis server's persistence (appendonly yes with appendfsync
// always or everysec for documents that must survive a Redis restart).
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
	fence  func(id string) (key, value string, ok bool)
	commit *redis.Script
}

// NewRedisStore returns a store on rdb with keys under prefix (for
// example "huddle:"). fence, when not nil, gives for document id the
// lease key and the value it must hold for a commit to be accepted; ok
// false refuses the commit (ErrFenced).
func NewRedisStore(rdb redis.UniversalClient, prefix string, fence func(id string) (key, value string, ok bool)) *RedisStore {
	return &RedisStore{rdb: rdb, prefix: prefix, fence: fence, commit: redis.NewScript(commitScript)}
}

// KEYS: log, snaps, lease (may be unused). ARGV: fence value ("" none),
// creates (1/0), n entries, first version, the n entries, m snapshots,
// then m pairs of version and JSON.
const commitScript = `
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'fenced' end
local exists = redis.call('EXISTS', KEYS[2]) == 1
if not exists and ARGV[2] ~= '1' then return 'not_found' end
if exists and ARGV[2] == '1' then return 'exists' end
local last = redis.call('LLEN', KEYS[1])
local n = tonumber(ARGV[3])
if n > 0 and tonumber(ARGV[4]) ~= last + 1 then return 'conflict ' .. last end
local top = last + n
local base = 5 + n
local m = tonumber(ARGV[base])
for j = 0, m - 1 do
  if tonumber(ARGV[base + 1 + 2*j]) > top then return 'beyond ' .. top end
end
for j = 0, n - 1 do redis.call('RPUSH', KEYS[1], ARGV[5 + j]) end
for j = 0, m - 1 do
  local v = ARGV[base + 1 + 2*j]
  if redis.call('ZCOUNT', KEYS[2], v, v) == 0 then
    redis.call('ZADD', KEYS[2], v, ARGV[base + 2 + 2*j])
  end
end
return 'ok'`

func (s *RedisStore) logKey(id string) string   { return s.prefix + "doc:" + id + ":log" }
func (s *RedisStore) snapsKey(id string) string { return s.prefix + "doc:" + id + ":snaps" }

// Commit implements Store.
func (s *RedisStore) Commit(ctx context.Context, id string, b Batch) error {
	for i := 1; i < len(b.Entries); i++ {
		if b.Entries[i].Version != b.Entries[i-1].Version+1 {
			return errf(ErrVersionConflict, "document %q: entry version %d does not follow %d", id, b.Entries[i].Version, b.Entries[i-1].Version)
		}
	}
	keys := []string{s.logKey(id), s.snapsKey(id), s.logKey(id)}
	fenceValue := ""
	if s.fence != nil {
		k, v, ok := s.fence(id)
		if !ok {
			return errf(ErrFenced, "document %q: this node does not hold the room's lease", id)
		}
		keys[2], fenceValue = k, v
	}
	creates := "0"
	if len(b.Snapshots) > 0 && b.Snapshots[0].Version == 0 {
		creates = "1"
	}
	args := make([]any, 0, 5+len(b.Entries)+1+2*len(b.Snapshots))
	first := uint64(0)
	if len(b.Entries) > 0 {
		first = b.Entries[0].Version
	}
	args = append(args, fenceValue, creates, len(b.Entries), first)
	for _, e := range b.Entries {
		j, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("doc: encode entry %d of %q: %w", e.Version, id, err)
		}
		args = append(args, j)
	}
	args = append(args, len(b.Snapshots))
	for _, sn := range b.Snapshots {
		j, err := json.Marshal(sn)
		if err != nil {
			return fmt.Errorf("doc: encode snapshot %d of %q: %w", sn.Version, id, err)
		}
		args = append(args, sn.Version, j)
	}
	res, err := s.commit.Run(ctx, s.rdb, keys, args...).Text()
	if err != nil {
		return errf(ErrClosed, "document %q: redis commit: %v", id, err)
	}
	switch {
	case res == "ok":
		return nil
	case res == "fenced":
		return errf(ErrFenced, "document %q: the room's lease changed hands", id)
	case res == "not_found":
		return errf(ErrNotFound, "document %q: the first commit must hold its version 0 snapshot", id)
	case res == "exists":
		return errf(ErrVersionConflict, "document %q already exists", id)
	case strings.HasPrefix(res, "conflict "):
		return errf(ErrVersionConflict, "document %q: entry version %d does not follow %s", id, first, strings.TrimPrefix(res, "conflict "))
	case strings.HasPrefix(res, "beyond "):
		return errf(ErrVersionConflict, "document %q: a snapshot beyond the log's %s", id, strings.TrimPrefix(res, "beyond "))
	}
	return fmt.Errorf("doc: redis commit of %q: unexpected reply %q", id, res)
}

func scoreArg(v uint64) string {
	if v >= 1<<53 {
		return "+inf"
	}
	return strconv.FormatUint(v, 10)
}

// Snapshot implements Store.
func (s *RedisStore) Snapshot(ctx context.Context, id string, atOrBefore uint64) (Snapshot, error) {
	vals, err := s.rdb.ZRevRangeByScore(ctx, s.snapsKey(id), &redis.ZRangeBy{Max: scoreArg(atOrBefore), Min: "-inf", Count: 1}).Result()
	if err != nil {
		return Snapshot{}, errf(ErrClosed, "document %q: redis: %v", id, err)
	}
	if len(vals) == 0 {
		return Snapshot{}, errf(ErrNotFound, "document %q has no snapshot at or before version %d", id, atOrBefore)
	}
	var sn Snapshot
	if err := json.Unmarshal([]byte(vals[0]), &sn); err != nil {
		return Snapshot{}, fmt.Errorf("doc: decode snapshot of %q: %w", id, err)
	}
	return sn, nil
}

// Entries implements Store.
func (s *RedisStore) Entries(ctx context.Context, id string, from, to uint64) ([]Entry, error) {
	n, err := s.rdb.Exists(ctx, s.snapsKey(id)).Result()
	if err != nil {
		return nil, errf(ErrClosed, "document %q: redis: %v", id, err)
	}
	if n == 0 {
		return nil, errf(ErrNotFound, "document %q", id)
	}
	from = max(from, 1)
	to = min(to, math.MaxInt64)
	if from > to {
		return nil, nil
	}
	vals, err := s.rdb.LRange(ctx, s.logKey(id), int64(from-1), int64(to-1)).Result()
	if err != nil {
		return nil, errf(ErrClosed, "document %q: redis: %v", id, err)
	}
	out := make([]Entry, len(vals))
	for i, v := range vals {
		if err := json.Unmarshal([]byte(v), &out[i]); err != nil {
			return nil, fmt.Errorf("doc: decode entry %d of %q: %w", from+uint64(i), id, err)
		}
	}
	return out, nil
}

var _ Store = (*RedisStore)(nil)

// IsFenced reports whether err is a commit refused because the lease moved.
func IsFenced(err error) bool { return errors.Is(err, ErrFenced) }
