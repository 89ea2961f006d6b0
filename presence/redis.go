package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Backend shared by the nodes that use one Redis server: every
// node sees every person, and the sessions of a node that dies are reaped by
// the others once their deadline passes. The key layout is in the package
// documentation.
type Redis struct {
	client *redis.Client
	node   string
	prefix string
	retain time.Duration

	put, remove, reap *redis.Script
}

// NewRedis returns a backend on client for the node named nodeID, which is
// recorded in the sessions it stores. WithPrefix and WithRetain apply.
func NewRedis(client *redis.Client, nodeID string, opts ...Option) (*Redis, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalid)
	}
	if err := checkName("node id", nodeID); err != nil {
		return nil, err
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	return &Redis{
		client: client,
		node:   nodeID,
		prefix: o.prefix,
		retain: o.retain,
		put:    redis.NewScript(luaPut),
		remove: redis.NewScript(luaDrop + luaRemove),
		reap:   redis.NewScript(luaDrop + luaReap),
	}, nil
}

// luaPut stores a session. ARGV: prefix, identity, session id, JSON record,
// deadline (Unix ms), how long to keep the session keys (ms), last seen
// (Unix ms), retention (ms), then the session's rooms.
const luaPut = `
local p, identity, sid, rec, deadline, keep, lastseen, retain =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local skey = p .. 'sessions:' .. identity
local pkey = p .. 'person:' .. identity
local member = identity .. '\0' .. sid
local function extend(k)
  if redis.call('PTTL', k) < tonumber(keep) then redis.call('PEXPIRE', k, keep) end
end
local rooms = {}
for i = 9, #ARGV do rooms[ARGV[i]] = true end
local old = redis.call('HGET', skey, sid)
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' and type(o.rooms) == 'table' then
    for _, r in ipairs(o.rooms) do
      if not rooms[r] then redis.call('ZREM', p .. 'room:' .. r, member) end
    end
  end
end
redis.call('HSET', skey, sid, rec)
extend(skey)
redis.call('ZADD', p .. 'deadlines', deadline, member)
for i = 9, #ARGV do
  local rk = p .. 'room:' .. ARGV[i]
  redis.call('ZADD', rk, deadline, member)
  extend(rk)
end
local ls = redis.call('HGET', pkey, 'last_seen')
if not ls or tonumber(ls) < tonumber(lastseen) then redis.call('HSET', pkey, 'last_seen', lastseen) end
redis.call('HINCRBY', pkey, 'version', 1)
redis.call('PEXPIRE', pkey, retain)
return 1
`

// luaDrop defines drop(prefix, identity, session id, retention): it removes
// one session everywhere and returns its JSON record (an empty string if it was lost),
// or false if there was nothing to remove.
const luaDrop = `
local function drop(p, identity, sid, retain)
  local skey = p .. 'sessions:' .. identity
  local member = identity .. '\0' .. sid
  local indexed = redis.call('ZREM', p .. 'deadlines', member)
  local old = redis.call('HGET', skey, sid)
  if old then
    local ok, o = pcall(cjson.decode, old)
    if ok and type(o) == 'table' and type(o.rooms) == 'table' then
      for _, r in ipairs(o.rooms) do redis.call('ZREM', p .. 'room:' .. r, member) end
    end
    redis.call('HDEL', skey, sid)
  end
  if indexed == 0 and not old then return false end
  local pkey = p .. 'person:' .. identity
  redis.call('HINCRBY', pkey, 'version', 1)
  redis.call('PEXPIRE', pkey, retain)
  return old or ''
end
`

// luaRemove: ARGV prefix, identity, session id, retention (ms).
const luaRemove = `
drop(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
`

// luaReap: ARGV prefix, now (Unix ms), batch size, retention (ms). Returns
// member, record, member, record, ...
const luaReap = `
local p, now, limit, retain = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local due = redis.call('ZRANGEBYSCORE', p .. 'deadlines', '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, m in ipairs(due) do
  local i = string.find(m, '\0', 1, true)
  if i then
    local old = drop(p, string.sub(m, 1, i - 1), string.sub(m, i + 1), retain)
    if old then
      table.insert(out, m)
      table.insert(out, old)
    end
  else
    redis.call('ZREM', p .. 'deadlines', m)
  end
end
return out
`

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func durMS(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

func (r *Redis) key(parts ...string) string { return r.prefix + strings.Join(parts, "") }

func member(identity, id string) string { return identity + "\x00" + id }

// PutSession implements Backend; it records this node in s.Node.
func (r *Redis) PutSession(ctx context.Context, s SessionInfo, ttl time.Duration) error {
	s.Node = r.node
	rec, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("presence: encode session %q of %q: %w", s.ID, s.Identity, err)
	}
	if ttl < time.Millisecond {
		ttl = time.Millisecond
	}
	args := []any{r.prefix, s.Identity, s.ID, rec, ms(s.Deadline), durMS(ttl + keyGrace), ms(s.LastSeen), durMS(r.retain)}
	for _, room := range s.Rooms {
		args = append(args, room)
	}
	if err := r.put.Run(ctx, r.client, nil, args...).Err(); err != nil {
		return fmt.Errorf("presence: redis: store session %q of %q: %w", s.ID, s.Identity, err)
	}
	return nil
}

// RemoveSession implements Backend.
func (r *Redis) RemoveSession(ctx context.Context, identity, id string) error {
	if err := r.remove.Run(ctx, r.client, nil, r.prefix, identity, id, durMS(r.retain)).Err(); err != nil {
		return fmt.Errorf("presence: redis: remove session %q of %q: %w", id, identity, err)
	}
	return nil
}

// SetStatus implements Backend.
func (r *Redis) SetStatus(ctx context.Context, identity string, st Status) error {
	pkey := r.key("person:", identity)
	_, err := r.client.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.HSet(ctx, pkey, "state", string(st.State), "text", st.Text)
		tx.HIncrBy(ctx, pkey, "version", 1)
		tx.PExpire(ctx, pkey, r.retain)
		return nil
	})
	if err != nil {
		return fmt.Errorf("presence: redis: set status of %q: %w", identity, err)
	}
	return nil
}

// Load implements Backend; each person is read in one transaction.
func (r *Redis) Load(ctx context.Context, identities ...string) ([]Record, error) {
	if len(identities) == 0 {
		return nil, nil
	}
	sessions := make([]*redis.MapStringStringCmd, len(identities))
	people := make([]*redis.MapStringStringCmd, len(identities))
	_, err := r.client.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		for i, id := range identities {
			sessions[i] = tx.HGetAll(ctx, r.key("sessions:", id))
			people[i] = tx.HGetAll(ctx, r.key("person:", id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence: redis: load %d people: %w", len(identities), err)
	}
	out := make([]Record, len(identities))
	for i, id := range identities {
		rec := Record{Identity: id}
		p := people[i].Val()
		rec.Status = Status{State: State(p["state"]), Text: p["text"]}
		if v, err := strconv.ParseInt(p["last_seen"], 10, 64); err == nil {
			rec.LastSeen = time.UnixMilli(v)
		}
		if v, err := strconv.ParseUint(p["version"], 10, 64); err == nil {
			rec.Version = v
		}
		for sid, raw := range sessions[i].Val() {
			var s SessionInfo
			if err := json.Unmarshal([]byte(raw), &s); err != nil {
				return nil, fmt.Errorf("presence: redis: decode session %q of %q: %w", sid, id, err)
			}
			rec.Sessions = append(rec.Sessions, s)
		}
		slices.SortFunc(rec.Sessions, func(a, b SessionInfo) int { return strings.Compare(a.ID, b.ID) })
		out[i] = rec
	}
	return out, nil
}

// RoomMembers implements Backend.
func (r *Redis) RoomMembers(ctx context.Context, room string, now time.Time) ([]string, error) {
	members, err := r.client.ZRangeByScore(ctx, r.key("room:", room), &redis.ZRangeBy{
		Min: "(" + ms(now),
		Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("presence: redis: members of room %q: %w", room, err)
	}
	ids := make([]string, 0, len(members))
	for _, m := range members {
		if identity, _, ok := strings.Cut(m, "\x00"); ok {
			ids = append(ids, identity)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Reap implements Backend; one call removes at most 1000 sessions.
func (r *Redis) Reap(ctx context.Context, now time.Time) ([]SessionInfo, error) {
	res, err := r.reap.Run(ctx, r.client, nil, r.prefix, ms(now), reapBatch, durMS(r.retain)).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("presence: redis: reap: %w", err)
	}
	var out []SessionInfo
	for i := 0; i+1 < len(res); i += 2 {
		identity, id, _ := strings.Cut(res[i], "\x00")
		s := SessionInfo{Identity: identity, ID: id}
		if res[i+1] != "" {
			if err := json.Unmarshal([]byte(res[i+1]), &s); err != nil || s.Identity != identity || s.ID != id {
				s = SessionInfo{Identity: identity, ID: id}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// Publish implements Backend.
func (r *Redis) Publish(ctx context.Context, e Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("presence: encode event for %q: %w", e.Presence.Identity, err)
	}
	if err := r.client.Publish(ctx, r.key("events"), data).Err(); err != nil {
		return fmt.Errorf("presence: redis: publish event for %q: %w", e.Presence.Identity, err)
	}
	return nil
}

// Subscribe implements Backend. Events published while the connection to
// Redis is down are lost; go-redis reconnects by itself.
func (r *Redis) Subscribe(ctx context.Context, deliver func(Event)) (func(), error) {
	channel := r.key("events")
	ps := r.client.Subscribe(ctx, channel)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("presence: redis: subscribe to %s: %w", channel, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	msgs := ps.Channel(redis.WithChannelSize(1024))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				var e Event
				if json.Unmarshal([]byte(m.Payload), &e) != nil || e.Presence.Identity == "" {
					continue
				}
				deliver(e)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			_ = ps.Close()
		})
	}, nil
}
