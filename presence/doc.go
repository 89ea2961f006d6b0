// Package presence tracks who is here and in what state, on one node or
// across many nodes that share a Backend.
//
// # Model
//
// A person (an identity) has zero or more sessions: one per connection (a
// browser tab, a phone). A session is opened by the signaling server with
// [Tracker.Open], kept alive by client heartbeats ([Session.Heartbeat], about
// every 15 s) and activity reports ([Session.SetActivity]), joins and leaves
// rooms, and is closed when its connection ends ([Session.Close]).
//
// At any instant a session is
//
//   - active: its last heartbeat or report is younger than Config.AwayAfter
//     (45 s by default) and its activity is not [Idle];
//   - idle: its activity is [Idle] (the client saw no input) or its last
//     heartbeat is older than AwayAfter;
//   - gone: its last heartbeat is older than Config.OfflineAfter (2 minutes
//     by default), or it was closed.
//
// A person's [Presence] merges their sessions ("as present as the most
// present session"):
//
//   - offline when no session is left;
//   - away when every session is idle, whatever status they chose;
//   - otherwise the explicit status they chose with [Session.SetStatus]:
//     busy stays busy, and away ("appear away") stays away, as long as any
//     session is active; with no explicit status, online.
//
// So the order is online > busy > away > offline, except that an explicit
// busy or away is kept while the person is active anywhere. The explicit
// status and the status text belong to the person, not to a session: they
// survive reconnects and going offline, and are forgotten after the backend's
// retention time (24 h by default) without any session. The merged activity
// is the most telling one among the active sessions (screen_sharing >
// in_call > editing > any other > none), idle when every session is idle,
// and empty when offline. LastSeen is the last heartbeat or report of any
// session. Rooms is the union of the sessions' rooms.
//
// # Events
//
// Every change is published through the Backend to every Tracker sharing
// it, as an [Event]: the person's new Presence plus the rooms to tell (the
// rooms they are in, and those they just left). [Tracker.Watch] delivers the
// events of some rooms and some identities (a person's own other sessions
// watch their identity) through a bounded channel. Each Presence carries a
// per-person Version that grows with every stored change; a Tracker drops
// events older than the last one it delivered for that person, and events
// that change nothing a watcher can see.
//
// Timeouts are applied by one sweep goroutine per Tracker (every
// Config.SweepEvery): it turns its own stale sessions away (and publishes
// that), and it reaps sessions of any node whose deadline has passed, so
// that people whose node died turn offline on the surviving nodes. A person
// whose node died between AwayAfter and OfflineAfter already reads as away
// from Get and Room, but the event comes only when they go offline. Nodes
// sharing a backend need the same AwayAfter and OfflineAfter and clocks kept
// in sync (NTP).
//
// # Redis key layout
//
// With the default prefix "huddle:presence:" ({identity}, {session} and
// {room} are the names as given; none may contain control characters, so
// "\x00" separates them inside members):
//
//	huddle:presence:sessions:{identity}  hash, field {session} = JSON SessionInfo
//	    (rooms, activity, last seen, deadline, node); expires OfflineAfter+10s
//	    after the newest heartbeat of any of the person's sessions
//	huddle:presence:room:{room}          sorted set, member {identity}\x00{session},
//	    score = the session's deadline (Unix ms); expires like sessions:*
//	huddle:presence:deadlines            sorted set, member {identity}\x00{session},
//	    score = deadline (Unix ms); every node's sweep reaps the members due,
//	    atomically (a Lua script), so each expired session is reported once
//	huddle:presence:person:{identity}    hash: state, text (the explicit status),
//	    last_seen (Unix ms), version; expires after the retention time
//	huddle:presence:events               pub/sub channel, one JSON Event per message
//
// Writes are Lua scripts or MULTI transactions, so a reader never sees half a
// change. The scripts name keys they build from the prefix, so they need a
// single Redis server (not a cluster).
package presence
