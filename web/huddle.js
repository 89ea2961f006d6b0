// huddle.js is the Huddle browser client: signaling protocol v1
// (signaling/PROTOCOL.md) over a WebSocket, one publish and one subscribe
// RTCPeerConnection, the "data" channel, and the room's state as events.
//
// It is an ES module with no dependencies and no build step. It touches no
// DOM at import time, so Node can import it to test the pure parts (message
// building and parsing, SDP and mid mapping, room state).
//
//   import { connect, devToken } from './huddle.js';
//   const { token } = await devToken({ room: 'standup', name: 'Ada' });
//   const client = await connect({ token, room: 'standup' });
//   client.on('track_subscribed', (t) => { video.srcObject = new MediaStream([t.track]); });
//   const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
//   await client.publishMedia(media);

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/** Transports: every participant has two PeerConnections. */
export const PUBLISH = 'publish';
export const SUBSCRIBE = 'subscribe';

/**
 * SIMULCAST_ENCODINGS are the layers camera video is sent in: rid q (a
 * quarter of the size), h (half) and f (full), lowest first. The server
 * forwards each subscriber one of them.
 */
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', maxBitrate: 1_500_000 }),
]);

/** Track sources, as the protocol names them. */
export const Source = Object.freeze({
  CAMERA: 'camera',
  MICROPHONE: 'microphone',
  SCREEN: 'screen',
  SCREEN_AUDIO: 'screen_audio',
});

// ---------------------------------------------------------------------------
// Events

/**
 * Emitter is a small event emitter: on() returns a function that removes
 * the listener. A listener that throws does not stop the others.
 */
export class Emitter {
  #listeners = new Map();

  on(type, fn) {
    let set = this.#listeners.get(type);
    if (!set) {
      set = new Set();
      this.#listeners.set(type, set);
    }
    set.add(fn);
    return () => this.off(type, fn);
  }

  once(type, fn) {
    const off = this.on(type, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  emit(type, ...args) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`huddle: a "${type}" listener threw`, err);
      }
    }
    if (type !== '*') {
      for (const fn of [...(this.#listeners.get('*') ?? [])]) {
        try {
          fn(type, ...args);
        } catch (err) {
          console.error('huddle: a "*" listener threw', err);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Errors

/**
 * HuddleError is an error with the protocol's stable code (bad_message,
 * token_expired, room_full, …) or one of the client's own: "timeout",
 * "closed", "no_token", "http".
 */
export class HuddleError extends Error {
  constructor(code, message, { ref, id } = {}) {
    super(message || code);
    this.name = 'HuddleError';
    this.code = code;
    if (ref) this.ref = ref;
    if (id) this.id = id;
  }

  /** fromMessage makes an error from an `error` message of the server. */
  static fromMessage(m) {
    return new HuddleError(String(m.code || 'internal'), String(m.message || m.code || 'error'), {
      ref: m.ref,
      id: m.id,
    });
  }
}

const ERROR_TEXT = {
  bad_message: 'The server did not understand a message from this page.',
  unknown_type: 'The server does not know a message this page sent; it may be older than this page.',
  message_too_large: 'A message was too large and was dropped.',
  rate_limited: 'Too many messages; the server dropped one.',
  not_joined: 'The page talked to the server before joining.',
  already_joined: 'This connection has already joined.',
  token_invalid: 'The access token was refused. Ask for a new meeting link.',
  token_expired: 'The access token has expired. Ask for a new meeting link.',
  wrong_room: 'The access token is for another room.',
  permission_denied: 'You are not allowed to do that in this room.',
  unknown_track: 'That track no longer exists.',
  bad_sdp: 'The media negotiation failed.',
  room_full: 'The room is full.',
  shutting_down: 'The server is restarting. Try again in a moment.',
  internal: 'The server hit an internal error.',
  timeout: 'The server did not answer in time.',
  closed: 'The connection to the server was closed.',
  no_token: 'This server needs an access token: open the meeting link you were given.',
  http: 'The server refused the request.',
};

/**
 * describeError returns a sentence for a person, for a HuddleError, an
 * error code, or any other error.
 */
export function describeError(err) {
  const code = typeof err === 'string' ? err : err?.code;
  if (code && ERROR_TEXT[code]) return ERROR_TEXT[code];
  if (err instanceof Error) return err.message;
  return String(err ?? 'Unknown error');
}

/** fatalJoinError reports whether a join error is final (retrying cannot help without a new token). */
export function fatalJoinError(code) {
  return code === 'token_invalid' || code === 'token_expired' || code === 'wrong_room';
}

// ---------------------------------------------------------------------------
// Messages

/**
 * parseMessage decodes one WebSocket frame. It throws a HuddleError with
 * code bad_message when the frame is not a JSON object with a string type.
 */
export function parseMessage(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    throw new HuddleError('bad_message', 'frame is not JSON');
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m) || typeof m.type !== 'string') {
    throw new HuddleError('bad_message', 'frame is not an object with a type');
  }
  return m;
}

/** Builders of client-to-server messages, as plain objects. */
export const msg = {
  join({ id, token, room, autoSubscribe, metadata }) {
    const m = { type: 'join', token };
    if (id) m.id = id;
    if (room) m.room = room;
    if (autoSubscribe === false) m.auto_subscribe = false;
    if (metadata) m.metadata = metadata;
    return m;
  },
  publishOffer({ id, sdp, tracks }) {
    const m = { type: 'offer', transport: PUBLISH, sdp, tracks };
    if (id) m.id = id;
    return m;
  },
  subscribeAnswer(sdp) {
    return { type: 'answer', transport: SUBSCRIBE, sdp };
  },
  candidate(transport, candidate) {
    return { type: 'candidate', transport, candidate: candidateInit(candidate) };
  },
  subscribe(tracks, { quality, paused, maxWidth, maxHeight } = {}) {
    const m = { type: 'subscribe', tracks: [...tracks] };
    if (quality) m.quality = quality;
    if (typeof paused === 'boolean') m.paused = paused;
    if (Number.isFinite(maxWidth) || Number.isFinite(maxHeight)) {
      m.max_width = Math.max(0, Math.round(maxWidth || 0));
      m.max_height = Math.max(0, Math.round(maxHeight || 0));
    }
    return m;
  },
  unsubscribe(tracks) {
    return { type: 'unsubscribe', tracks: [...tracks] };
  },
  mute(track, muted) {
    return { type: 'mute', track, muted: !!muted };
  },
  unpublish(track) {
    return { type: 'unpublish', track };
  },
  update({ name, metadata } = {}) {
    const m = { type: 'update' };
    if (name !== undefined) m.name = name;
    if (metadata !== undefined) m.metadata = metadata;
    return m;
  },
  leave() {
    return { type: 'leave' };
  },
  ping(id, ts) {
    return { type: 'ping', id, ts };
  },
  heartbeat() {
    return { type: 'heartbeat' };
  },
  activity(activity) {
    return { type: 'activity', activity: activity ?? '' };
  },
  status(state, text) {
    const m = { type: 'status' };
    if (state) m.state = state;
    if (text) m.text = text;
    return m;
  },
  presence(id, identities) {
    const m = { type: 'presence', id };
    if (identities?.length) m.identities = [...identities];
    return m;
  },
};

/**
 * candidateInit turns an RTCIceCandidate (or an init dictionary) into the
 * protocol's candidate object; null, undefined and the empty end-of-
 * candidates candidate become null.
 */
export function candidateInit(c) {
  if (!c || !c.candidate) return null;
  const out = { candidate: c.candidate };
  if (c.sdpMid !== null && c.sdpMid !== undefined) out.sdpMid = c.sdpMid;
  if (c.sdpMLineIndex !== null && c.sdpMLineIndex !== undefined) out.sdpMLineIndex = c.sdpMLineIndex;
  if (c.usernameFragment) out.usernameFragment = c.usernameFragment;
  return out;
}

/** trackInfo describes a local track for the `tracks` list of a publish offer. */
export function trackInfo({ track, source, muted }) {
  const info = { cid: track.id, kind: track.kind, source: source || defaultSource(track.kind) };
  if (muted) info.muted = true;
  return info;
}

/** defaultSource is the source of a track of this kind from getUserMedia. */
export function defaultSource(kind) {
  return kind === 'audio' ? Source.MICROPHONE : Source.CAMERA;
}

/** utf8Length returns the length of s in UTF-8 bytes. */
export function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

/**
 * encodeData builds the text of a message for the "data" channel. to lists
 * identities (empty: everyone else). It throws message_too_large when the
 * text is over max bytes.
 */
export function encodeData(data, to, max = 16384) {
  const m = { data };
  if (to && to.length) m.to = [...to];
  const text = JSON.stringify(m);
  const n = utf8Length(text);
  if (max > 0 && n > max) {
    throw new HuddleError('message_too_large', `data message is ${n} bytes; the limit is ${max}`);
  }
  return text;
}

/**
 * decodeData reads a message from the "data" channel: either
 * {type: 'message', from, sid, data} or {type: 'error', code, message}.
 * It returns null for anything else.
 */
export function decodeData(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!m || typeof m !== 'object') return null;
  if (m.type === 'message') return { type: 'message', from: m.from ?? '', sid: m.sid ?? '', data: m.data };
  if (m.type === 'error') return { type: 'error', code: m.code ?? 'internal', message: m.message ?? '' };
  return null;
}

// ---------------------------------------------------------------------------
// SDP and mids

/**
 * parseMediaSections reads the media sections of an SDP and returns, for
 * each one that has a mid, {mid, kind, direction, stream, track}: stream and
 * track come from a=msid (the publisher's participant SID and the track id
 * for a subscribe offer), and are empty when it has none.
 */
export function parseMediaSections(sdp) {
  const out = [];
  let cur = null;
  for (const raw of String(sdp ?? '').split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      cur = { mid: null, kind: line.slice(2).split(' ')[0], direction: 'sendrecv', stream: '', track: '' };
      out.push(cur);
    } else if (cur) {
      if (line.startsWith('a=mid:')) cur.mid = line.slice(6);
      else if (line.startsWith('a=msid:')) {
        const [stream, track] = line.slice(7).split(' ');
        cur.stream = stream === '-' ? '' : stream;
        cur.track = track ?? '';
      } else if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) cur.direction = line.slice(2);
    }
  }
  return out.filter((s) => s.mid !== null);
}

/**
 * resolveMids maps track SIDs to the receivers that carry them. transceivers
 * are RTCRtpTransceivers (or objects shaped like them); mids is the `mids`
 * map of the last subscribe offer (mid → track SID); streams maps mid → the
 * stream id (participant SID) of the section. A transceiver whose mid is not
 * in mids, that is stopped, or whose direction is inactive carries nothing.
 * It returns a Map of track SID → {sid, mid, participant, track, receiver}.
 */
export function resolveMids(transceivers, mids, streams = {}) {
  const out = new Map();
  for (const t of transceivers) {
    const mid = t.mid;
    if (mid === null || mid === undefined) continue;
    const sid = mids?.[mid];
    if (!sid) continue;
    if (t.stopped || t.currentDirection === 'stopped') continue;
    if (t.currentDirection === 'inactive' || t.direction === 'inactive') continue;
    const track = t.receiver?.track;
    if (!track) continue;
    out.set(sid, { sid, mid, participant: streams[mid] || '', track, receiver: t.receiver });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Room state

/**
 * RoomState is the room as the client knows it: who is here and which
 * tracks they publish. apply() takes a server message and returns the
 * events it causes, as [name, payload] pairs, so the logic is testable
 * without a browser.
 */
export class RoomState {
  constructor() {
    this.room = '';
    this.you = null;
    /** @type {Map<string, object>} participant SID → participant (the others) */
    this.participants = new Map();
    /** @type {Map<string, object>} track SID → track (everyone's, one's own too) */
    this.tracks = new Map();
  }

  /** reset loads a `joined` message. */
  reset(joined) {
    this.room = joined.room ?? '';
    this.you = { ...(joined.you ?? {}) };
    this.participants = new Map();
    this.tracks = new Map();
    for (const p of joined.participants ?? []) this.participants.set(p.sid, { ...p });
    for (const t of joined.tracks ?? []) this.tracks.set(t.sid, { ...t });
  }

  /** participant returns a participant by SID, oneself included. */
  participant(sid) {
    if (this.you && this.you.sid === sid) return this.you;
    return this.participants.get(sid);
  }

  /** tracksOf returns the tracks a participant publishes. */
  tracksOf(sid) {
    return [...this.tracks.values()].filter((t) => t.participant === sid);
  }

  /** apply updates the state with one server message and returns the events. */
  apply(m) {
    const ev = [];
    switch (m.type) {
      case 'participant_joined': {
        const p = { ...m.participant };
        if (!p.sid || (this.you && p.sid === this.you.sid)) break;
        this.participants.set(p.sid, p);
        ev.push(['participant_joined', p]);
        break;
      }
      case 'participant_updated': {
        const p = { ...m.participant };
        if (this.you && p.sid === this.you.sid) {
          Object.assign(this.you, p);
          ev.push(['participant_updated', this.you]);
        } else if (p.sid) {
          this.participants.set(p.sid, { ...this.participants.get(p.sid), ...p });
          ev.push(['participant_updated', this.participants.get(p.sid)]);
        }
        break;
      }
      case 'participant_left': {
        for (const t of this.tracksOf(m.sid)) {
          this.tracks.delete(t.sid);
          ev.push(['track_unpublished', t]);
        }
        const p = this.participants.get(m.sid) ?? { sid: m.sid, identity: m.identity ?? '', name: m.identity ?? '' };
        this.participants.delete(m.sid);
        ev.push(['participant_left', { ...p, reason: m.reason ?? 'disconnected' }]);
        break;
      }
      case 'track_published': {
        const t = { ...m.track };
        if (!t.sid) break;
        this.tracks.set(t.sid, t);
        ev.push(['track_published', t]);
        break;
      }
      case 'track_unpublished': {
        const t = this.tracks.get(m.track) ?? { sid: m.track, participant: m.participant };
        this.tracks.delete(m.track);
        ev.push(['track_unpublished', t]);
        break;
      }
      case 'track_muted': {
        const t = this.tracks.get(m.track);
        if (t) t.muted = !!m.muted;
        ev.push(['track_muted', t ?? { sid: m.track, participant: m.participant, muted: !!m.muted }]);
        break;
      }
    }
    return ev;
  }
}

// ---------------------------------------------------------------------------
// Dev tokens and URLs

/**
 * wsURL returns the WebSocket address of the server that serves the page at
 * base (an http(s) URL): ws(s)://host/ws.
 */
export function wsURL(base) {
  const u = new URL('/ws', base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

/**
 * devToken asks a server in dev mode for a token:
 * GET /dev/token?room=R&name=N[&identity=I] → {token, identity, room}.
 * A 404 means the server is not in dev mode (HuddleError "no_token").
 */
export async function devToken({ room, name, identity, base, fetch: fetchFn } = {}) {
  const f = fetchFn ?? globalThis.fetch;
  const u = new URL('/dev/token', base ?? globalThis.location?.href);
  u.searchParams.set('room', room);
  if (name) u.searchParams.set('name', name);
  if (identity) u.searchParams.set('identity', identity);
  const res = await f(u.toString(), { cache: 'no-store' });
  if (res.status === 404) throw new HuddleError('no_token', ERROR_TEXT.no_token);
  if (!res.ok) {
    const body = await res.text().catch(() => '');
    throw new HuddleError('http', `dev token: HTTP ${res.status} ${body.trim()}`.trim());
  }
  const out = await res.json();
  if (!out || typeof out.token !== 'string') throw new HuddleError('http', 'dev token: no token in the reply');
  return out;
}

// ---------------------------------------------------------------------------
// Client

const REQUEST_TIMEOUT = 10000;
const MAX_REDIRECTS = 4;
const PING_INTERVAL = 10000;
const DEAD_AFTER = 30000;
/** HEARTBEAT_INTERVAL is how often the client tells the server it is present. */
const HEARTBEAT_INTERVAL = 15000;

/**
 * connect opens a session: a WebSocket to url (default: /ws of the page's
 * server), join with token, and resolves with the Client once `joined`
 * arrives. It rejects with a HuddleError (token_invalid, room_full, …) when
 * the server refuses.
 */
export async function connect(opts) {
  const c = new Client(opts);
  await c.connect();
  return c;
}

/**
 * Client is one session in a room. Events (client.on(name, fn)):
 *
 *   connection        {state}  connecting, joined, disconnected, closed
 *   ice               {transport, state}  a PeerConnection's connectionState
 *   participant_joined / participant_updated / participant_left   participant
 *   track_published / track_unpublished / track_muted             track info
 *   track_subscribed   {sid, participant, kind, source, track, info}  remote media arrived
 *   track_unsubscribed {sid, participant, kind, track}
 *   local_published    {sid, cid, source, track}   the server's SID for a local track
 *   local_unpublished  {sid, cid, source, track}
 *   local_muted        {sid, track, source, muted}
 *   message            {from, sid, data}           from the "data" channel
 *   datachannel        RTCDataChannel              any channel the server opens
 *   error              HuddleError                 not tied to a request
 *   rtt                milliseconds                from ping/pong
 *   presence           person {identity, state, text, activity, rooms, sessions, last_seen}
 *   quality            {participant, score, level, audio, video, uplink, stats}  connection quality (stats: own only)
 *   bye                reason
 */
export class Client extends Emitter {
  constructor({
    url,
    token,
    room,
    autoSubscribe = true,
    metadata,
    WebSocket: WS,
    RTCPeerConnection: PC,
    pingInterval = PING_INTERVAL,
    requestTimeout = REQUEST_TIMEOUT,
    iceTransportPolicy = 'all',
    simulcast = true,
    followRedirects = true,
  } = {}) {
    super();
    if (!token) throw new HuddleError('no_token', 'connect: a token is required');
    this.url = url ?? wsURL(globalThis.location?.href ?? 'http://localhost/');
    this.token = token;
    this.roomName = room;
    this.autoSubscribe = autoSubscribe;
    this.metadata = metadata;
    this.WS = WS ?? globalThis.WebSocket;
    this.PC = PC ?? globalThis.RTCPeerConnection;
    this.pingInterval = pingInterval;
    this.requestTimeout = requestTimeout;
    /** simulcast: camera video is sent as three layers (rids q, h, f). */
    this.simulcast = simulcast;

    this.state = new RoomState();
    this.connectionState = 'new';
    this.iceServers = []; // from joined: the server's TURN URLs with this participant's credential
    this.iceTransportPolicy = iceTransportPolicy; // 'relay' connects through TURN only
    // A page whose Content-Security-Policy allows only its own origin
    // cannot open another node's socket: it sets this false, gets the
    // "redirect" error (with .url) and loads the page from that node.
    this.followRedirects = followRedirects;
    this.maxDataMessage = 16384;
    this.server = null;
    /** nodes, in cluster mode, are the live nodes' base URLs (from joined). */
    this.nodes = [];
    this.rtt = null;

    this.ws = null;
    this._seq = 0;
    this._pending = new Map(); // request id → {type, resolve, reject, timer}
    this._lastHeard = 0;
    this._pingTimer = null;
    this._lastBeat = 0;
    /** presence of the people this session heard of, a Map by identity. */
    this.presence = new Map();

    // subscribe transport
    this.subscriber = null; // RTCPeerConnection
    this._subQueue = Promise.resolve();
    this._subReady = false; // our first answer went out: local candidates may follow
    this._subOutbox = [];
    this._subInbox = [];
    this._mids = {};
    this._midStreams = {};
    this._remote = new Map(); // track SID → binding

    // publish transport
    this.publisher = null; // RTCPeerConnection
    this._pubQueue = Promise.resolve();
    this._pubNext = null;
    this._pubReady = false;
    this._pubOutbox = [];
    this._pubInbox = [];
    this._local = new Map(); // MediaStreamTrack id → {track, source, muted, sid, transceiver}

    // data channels
    this.channels = new Map(); // label → RTCDataChannel
    this._dataQueue = [];
  }

  /** you is this session's participant. */
  get you() {
    return this.state.you;
  }

  /** participants are the others in the room (a Map by SID). */
  get participants() {
    return this.state.participants;
  }

  /** remoteTracks are the subscribed tracks (a Map by track SID). */
  get remoteTracks() {
    return this._remote;
  }

  /** localTracks are the published (or publishing) local tracks. */
  get localTracks() {
    return [...this._local.values()];
  }

  _setConnection(state) {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this.emit('connection', { state });
  }

  _id() {
    this._seq += 1;
    return String(this._seq);
  }

  /** connect opens the socket and joins; it resolves with the `joined` message. */
  async connect() {
    // A cluster node that does not serve the room answers the join with a
    // redirect to the one that does: follow it (a few hops at most).
    for (let hops = 0; ; hops++) {
      try {
        return await this._connectOnce();
      } catch (err) {
        if (err?.code !== 'redirect' || !err.url || !this.followRedirects || hops >= MAX_REDIRECTS) throw err;
        this.ws = null;
        this.url = wsURL(err.url);
      }
    }
  }

  _connectOnce() {
    if (this.ws) return Promise.reject(new HuddleError('already_joined', 'connect: already connected'));
    this._redirected = null;
    this._setConnection('connecting');
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.WS(this.url);
      } catch (err) {
        reject(new HuddleError('closed', `cannot open ${this.url}: ${err.message}`));
        return;
      }
      this.ws = ws;
      let joined = false;
      ws.onopen = () => {
        this._lastHeard = Date.now();
        const id = this._id();
        this._request(
          msg.join({ id, token: this.token, room: this.roomName, autoSubscribe: this.autoSubscribe, metadata: this.metadata }),
          'joined',
        )
          .then((m) => {
            joined = true;
            this._startPing();
            resolve(m);
          })
          .catch((err) => {
            reject(err);
            this.close();
          });
      };
      ws.onmessage = (ev) => {
        if (this.ws === ws) this._onFrame(ev.data);
      };
      ws.onerror = () => {
        if (!joined) reject(new HuddleError('closed', `cannot connect to ${this.url}`));
      };
      ws.onclose = (ev) => {
        if (this.ws !== ws) return; // a socket left behind by a redirect
        const was = this.connectionState;
        this._teardown();
        if (!joined) reject(this._redirected ?? new HuddleError('closed', `the server closed the connection (code ${ev.code})`));
        if (was !== 'closed') this._setConnection(was === 'leaving' ? 'closed' : 'disconnected');
      };
    });
  }

  _send(m) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }

  // _request sends m (which has an id, or gets one) and resolves with the
  // reply of type `type` carrying that id; an `error` with the id rejects.
  _request(m, type) {
    if (!m.id) m.id = this._id();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(m.id);
        reject(new HuddleError('timeout', `no ${type} for ${m.type} within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this._pending.set(m.id, { type, resolve, reject, timer });
      if (!this._send(m)) {
        clearTimeout(timer);
        this._pending.delete(m.id);
        reject(new HuddleError('closed', 'the connection is closed'));
      }
    });
  }

  _settle(id, fn) {
    const p = this._pending.get(id);
    if (!p) return false;
    this._pending.delete(id);
    clearTimeout(p.timer);
    fn(p);
    return true;
  }

  _onFrame(text) {
    this._lastHeard = Date.now();
    let m;
    try {
      m = parseMessage(text);
    } catch (err) {
      console.warn('huddle: dropped a frame from the server:', err.message);
      return;
    }
    switch (m.type) {
      case 'joined':
        this._onJoined(m);
        break;
      case 'offer':
        if (m.transport === SUBSCRIBE) this._onSubscribeOffer(m);
        break;
      case 'answer':
        if (m.transport === PUBLISH) this._onPublishAnswer(m);
        break;
      case 'candidate':
        this._onRemoteCandidate(m);
        break;
      case 'pong':
        if (typeof m.ts === 'number') {
          this.rtt = Date.now() - m.ts;
          this.emit('rtt', this.rtt);
        }
        this._settle(m.id, (p) => p.resolve(m));
        break;
      case 'error': {
        const err = HuddleError.fromMessage(m);
        if (m.id && this._settle(m.id, (p) => p.reject(err))) break;
        // A join refusal that lost its id still ends the join.
        if (this.connectionState === 'connecting' && (!m.ref || m.ref === 'join')) {
          const join = [...this._pending].find(([, p]) => p.type === 'joined');
          if (join && this._settle(join[0], (p) => p.reject(err))) break;
        }
        this.emit('error', err);
        break;
      }
      case 'presence':
        for (const p of Array.isArray(m.people) ? m.people : []) {
          const old = this.presence.get(p.identity);
          if (old && old.version > p.version) continue;
          this.presence.set(p.identity, p);
          if (!m.id) this.emit('presence', p);
        }
        if (m.id) this._settle(m.id, (p) => p.resolve(m.people ?? []));
        break;
      case 'quality':
        // {participant, identity, score, level, audio, video, stats (own only)}
        this.emit('quality', m);
        break;
      case 'redirect': {
        // The room is served by another node: a join in progress fails with
        // code "redirect" (connect follows it); a joined session moved
        // (drain, failover) and ends: connect again to go on there.
        this.redirect = { url: m.url, reason: m.reason ?? '' };
        if (m.url) this.url = wsURL(m.url);
        if (this.connectionState === 'connecting') {
          const err = new HuddleError('redirect', `the room is served at ${m.url}`);
          err.url = m.url;
          this._redirected = err;
          const join = [...this._pending].find(([, p]) => p.type === 'joined');
          if (join && this._settle(join[0], (p) => p.reject(err))) break;
        }
        this.emit('redirect', this.redirect);
        if (this.connectionState !== 'leaving') this._setConnection('closed');
        break;
      }
      case 'layers':
        this._onLayers(m);
        break;
      case 'bye':
        this.emit('bye', m.reason ?? '');
        if (this.connectionState !== 'leaving') this._setConnection('closed');
        break;
      default: {
        for (const [name, payload] of this.state.apply(m)) {
          this.emit(name, payload);
          if (name === 'track_published' || name === 'track_unpublished') this._reconcile();
        }
      }
    }
  }

  _onJoined(m) {
    this.state.reset(m);
    this.iceServers = Array.isArray(m.ice_servers) ? m.ice_servers : [];
    if (m.max_data_message > 0) this.maxDataMessage = m.max_data_message;
    this.server = m.server ?? null;
    this.nodes = Array.isArray(m.nodes) ? m.nodes.filter((u) => typeof u === 'string') : [];
    this._setConnection('joined');
    this._settle(m.id, (p) => p.resolve(m));
    // A server that does not echo the id still answers the one join.
    for (const [id, p] of this._pending) {
      if (p.type === 'joined') this._settle(id, (q) => q.resolve(m));
    }
  }

  // -------------------------------------------------------------------------
  // Peer connections

  _newPeerConnection(transport) {
    const pc = new this.PC({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    pc.onicecandidate = (ev) => this._onLocalCandidate(transport, ev.candidate);
    pc.onconnectionstatechange = () => {
      this.emit('ice', { transport, state: pc.connectionState });
    };
    return pc;
  }

  _onLocalCandidate(transport, candidate) {
    const m = msg.candidate(transport, candidate);
    if (transport === SUBSCRIBE ? this._subReady : this._pubReady) this._send(m);
    else (transport === SUBSCRIBE ? this._subOutbox : this._pubOutbox).push(m);
  }

  _flushOutbox(transport) {
    const box = transport === SUBSCRIBE ? this._subOutbox : this._pubOutbox;
    for (const m of box.splice(0)) this._send(m);
  }

  _onRemoteCandidate(m) {
    const c = m.candidate;
    if (!c || !c.candidate) return; // end of candidates: nothing to do
    const pc = m.transport === SUBSCRIBE ? this.subscriber : this.publisher;
    if (!pc || !pc.remoteDescription) {
      (m.transport === SUBSCRIBE ? this._subInbox : this._pubInbox).push(c);
      return;
    }
    pc.addIceCandidate(c).catch((err) => console.warn(`huddle: ${m.transport} candidate refused:`, err.message));
  }

  async _flushInbox(transport) {
    const pc = transport === SUBSCRIBE ? this.subscriber : this.publisher;
    const box = transport === SUBSCRIBE ? this._subInbox : this._pubInbox;
    for (const c of box.splice(0)) {
      await pc.addIceCandidate(c).catch((err) => console.warn(`huddle: ${transport} candidate refused:`, err.message));
    }
  }

  // --- subscribe: the server offers, we answer -----------------------------

  _onSubscribeOffer(m) {
    this._subQueue = this._subQueue
      .then(() => this._answerSubscribe(m))
      .catch((err) => {
        console.error('huddle: subscribe negotiation failed:', err);
        this.emit('error', new HuddleError('bad_sdp', `subscribe negotiation failed: ${err.message}`));
      });
  }

  async _answerSubscribe(m) {
    if (!this.subscriber) {
      const pc = this._newPeerConnection(SUBSCRIBE);
      pc.ontrack = (ev) => {
        const mid = ev.transceiver?.mid;
        if (mid != null && ev.streams?.[0]) this._midStreams[mid] = ev.streams[0].id;
      };
      pc.ondatachannel = (ev) => this._onDataChannel(ev.channel);
      this.subscriber = pc;
    }
    const pc = this.subscriber;
    this._mids = m.mids ?? {};
    for (const s of parseMediaSections(m.sdp)) {
      if (s.stream) this._midStreams[s.mid] = s.stream;
    }
    await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
    await this._flushInbox(SUBSCRIBE);
    await pc.setLocalDescription(await pc.createAnswer());
    this._send(msg.subscribeAnswer(pc.localDescription.sdp));
    this._subReady = true;
    this._flushOutbox(SUBSCRIBE);
    this._reconcile();
  }

  // _reconcile compares the receivers the last offer mapped to tracks with
  // what the client reported so far, and emits track_subscribed and
  // track_unsubscribed for the differences.
  _reconcile() {
    if (!this.subscriber) return;
    const now = resolveMids(this.subscriber.getTransceivers(), this._mids, this._midStreams);
    for (const [sid, old] of this._remote) {
      const b = now.get(sid);
      if (!b || b.track !== old.track) {
        this._remote.delete(sid);
        this.emit('track_unsubscribed', old);
      }
    }
    for (const [sid, b] of now) {
      const info = this.state.tracks.get(sid);
      const have = this._remote.get(sid);
      if (have) {
        if (info && have.info !== info) {
          // The announcement came after the media: complete the binding.
          Object.assign(have, { info, source: info.source, participant: info.participant || have.participant });
          this.emit('track_subscribed', have);
        }
        continue;
      }
      const binding = {
        sid,
        mid: b.mid,
        participant: info?.participant || b.participant,
        kind: b.track.kind,
        source: info?.source || defaultSource(b.track.kind),
        track: b.track,
        receiver: b.receiver,
        info: info ?? null,
      };
      this._remote.set(sid, binding);
      this.emit('track_subscribed', binding);
    }
  }

  /** tracksOfParticipant returns the subscribed tracks of a participant. */
  tracksOfParticipant(sid) {
    return [...this._remote.values()].filter((b) => b.participant === sid);
  }

  // --- publish: we offer, the server answers --------------------------------

  /**
   * publish sends a local MediaStreamTrack with a source (camera,
   * microphone, screen, screen_audio); it resolves with the track's server
   * SID once the server answered.
   */
  async publish(track, { source, stream, muted } = {}) {
    this._addLocal(track, { source, stream, muted });
    await this._negotiatePublish();
    return this._local.get(track.id)?.sid ?? null;
  }

  /** publishMedia publishes every track of a getUserMedia stream; it resolves with their SIDs. */
  async publishMedia(stream) {
    const tracks = stream.getTracks();
    for (const t of tracks) this._addLocal(t, { stream });
    await this._negotiatePublish();
    return tracks.map((t) => this._local.get(t.id)?.sid ?? null);
  }

  _addLocal(track, { source, stream, muted }) {
    if (this.connectionState !== 'joined') throw new HuddleError('not_joined', 'publish: the session has not joined');
    if (this._local.has(track.id)) return;
    if (!this.publisher) this.publisher = this._newPeerConnection(PUBLISH);
    const init = { direction: 'sendonly' };
    if (stream) init.streams = [stream];
    else if (globalThis.MediaStream) init.streams = [new MediaStream([track])];
    source = source || defaultSource(track.kind);
    if (this.simulcast && track.kind === 'video' && source === 'camera') {
      init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
    }
    this._local.set(track.id, {
      track,
      cid: track.id,
      kind: track.kind,
      source,
      muted: muted ?? !track.enabled,
      sid: null,
      transceiver: this.publisher.addTransceiver(track, init),
    });
  }

  /**
   * _onLayers pauses the simulcast layers of a published track that nobody
   * receives (the server's layers message lists the ones to send).
   */
  _onLayers(m) {
    const local = [...this._local.values()].find((l) => l.sid === m.track);
    const sender = local?.transceiver?.sender;
    if (!sender?.getParameters || !Array.isArray(m.active)) return;
    const params = sender.getParameters();
    if (!params.encodings?.some((e) => e.rid)) return;
    let changed = false;
    for (const e of params.encodings) {
      const active = m.active.includes(e.rid);
      if (e.active !== active) {
        e.active = active;
        changed = true;
      }
    }
    if (changed) {
      sender.setParameters(params).catch((err) => console.warn('huddle: pause layers:', err.message));
    }
  }

  /** unpublish stops sending a local track and tells the server. */
  async unpublish(track) {
    const local = this._local.get(track.id);
    if (!local) return;
    this._local.delete(track.id);
    try {
      this.publisher.removeTrack(local.transceiver.sender);
    } catch (err) {
      console.warn('huddle: removeTrack:', err.message);
    }
    if (local.sid) {
      this._send(msg.unpublish(local.sid));
      this.emit('local_unpublished', { sid: local.sid, cid: local.cid, source: local.source, track });
    }
    if (this.connectionState === 'joined') await this._negotiatePublish();
  }

  /** setMuted mutes or unmutes a local track: it stops sending and tells the room. */
  setMuted(track, muted) {
    track.enabled = !muted;
    const local = this._local.get(track.id);
    if (!local) return;
    local.muted = !!muted;
    if (local.sid) this._send(msg.mute(local.sid, !!muted));
    this.emit('local_muted', { sid: local.sid, track, source: local.source, muted: !!muted });
  }

  // _negotiatePublish runs one publish offer/answer after the ones under
  // way; calls made while one waits to start share it.
  _negotiatePublish() {
    if (this._pubNext) return this._pubNext;
    const run = this._pubQueue.then(() => {
      this._pubNext = null;
      return this._offerPublish();
    });
    this._pubNext = run;
    this._pubQueue = run.catch(() => {});
    return run;
  }

  async _offerPublish() {
    const pc = this.publisher;
    if (!pc || pc.signalingState === 'closed') throw new HuddleError('closed', 'the publish transport is closed');
    await pc.setLocalDescription(await pc.createOffer());
    const tracks = [...this._local.values()].map(trackInfo);
    const id = this._id();
    const reply = this._request(msg.publishOffer({ id, sdp: pc.localDescription.sdp, tracks }), 'answer');
    this._pubReady = true;
    this._flushOutbox(PUBLISH);
    let answer;
    try {
      answer = await reply;
    } catch (err) {
      // Put the transport back in a state where the next offer can go.
      await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    await this._flushInbox(PUBLISH);
    for (const { cid, sid } of answer.published ?? []) {
      const local = this._local.get(cid);
      if (!local || local.sid === sid) continue;
      local.sid = sid;
      this.emit('local_published', { sid, cid, source: local.source, track: local.track });
      // A track muted before it had a SID: the offer said so; say it again for the room.
      if (local.muted) this._send(msg.mute(sid, true));
    }
  }

  _onPublishAnswer(m) {
    if (m.id && this._settle(m.id, (p) => p.resolve(m))) return;
    // A server that does not echo the id answers the oldest publish offer.
    for (const [id, p] of this._pending) {
      if (p.type === 'answer') {
        this._settle(id, (q) => q.resolve(m));
        return;
      }
    }
  }

  // -------------------------------------------------------------------------
  // Data channels

  _onDataChannel(ch) {
    this.channels.set(ch.label, ch);
    if (ch.label === 'data') {
      ch.onopen = () => {
        for (const text of this._dataQueue.splice(0)) ch.send(text);
      };
      ch.onmessage = (ev) => {
        const m = decodeData(typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data));
        if (!m) return;
        if (m.type === 'message') this.emit('message', { from: m.from, sid: m.sid, data: m.data });
        else this.emit('error', new HuddleError(m.code, m.message, { ref: 'data' }));
      };
      ch.onclose = () => this.channels.delete('data');
    }
    this.emit('datachannel', ch);
  }

  /**
   * sendData sends application data to everyone else in the room, or to
   * the identities in `to`, on the "data" channel. It queues the message
   * until the channel opens, and throws message_too_large when it is over
   * the server's limit.
   */
  sendData(data, { to } = {}) {
    const text = encodeData(data, to, this.maxDataMessage);
    const ch = this.channels.get('data');
    if (ch && ch.readyState === 'open') ch.send(text);
    else if (this._dataQueue.length < 256) this._dataQueue.push(text);
    else throw new HuddleError('rate_limited', 'the data channel is not open and its queue is full');
  }

  // -------------------------------------------------------------------------
  // Other requests

  /** update changes one's display name and/or metadata. */
  update({ name, metadata } = {}) {
    this._send(msg.update({ name, metadata }));
  }

  /**
   * subscribe asks for tracks (when auto_subscribe is off, or after
   * unsubscribe), or changes subscriptions: quality ('q', 'h', 'f') is the
   * highest simulcast layer wanted, paused stops or resumes video (a
   * hidden tile), maxWidth x maxHeight is the size in device pixels the
   * video is shown at (the server sends the layer that covers it).
   */
  subscribe(sids, { quality, paused, maxWidth, maxHeight } = {}) {
    this._send(msg.subscribe(sids, { quality, paused, maxWidth, maxHeight }));
  }

  /** unsubscribe stops receiving tracks. */
  unsubscribe(sids) {
    this._send(msg.unsubscribe(sids));
  }

  /** setStatus sets one's status for all one's sessions: state 'busy', 'away' or '' (online), and a text. */
  setStatus(state, text) {
    this._send(msg.status(state, text));
  }

  /** setActivity reports what this session does: 'in_call', 'editing', 'screen_sharing', 'idle' or ''. */
  setActivity(activity) {
    this._send(msg.activity(activity));
  }

  /** queryPresence resolves to the presence of identities (of the room when none are given). */
  async queryPresence(identities = []) {
    return this._request(msg.presence(this._id(), identities), 'presence');
  }

  /** ping measures the round trip to the server, in milliseconds. */
  async ping() {
    const ts = Date.now();
    await this._request(msg.ping(this._id(), ts), 'pong');
    return Date.now() - ts;
  }

  _startPing() {
    clearInterval(this._pingTimer);
    if (!(this.pingInterval > 0)) return;
    this._pingTimer = setInterval(() => {
      if (Date.now() - this._lastHeard > DEAD_AFTER) {
        console.warn('huddle: the server is silent; closing the connection');
        this.ws?.close(4000, 'server silent');
        return;
      }
      this._send(msg.ping(this._id(), Date.now()));
      if (Date.now() - this._lastBeat >= HEARTBEAT_INTERVAL - this.pingInterval / 2) {
        this._lastBeat = Date.now();
        this._send(msg.heartbeat());
      }
    }, this.pingInterval);
  }

  /** inboundStats returns the subscribe transport's inbound-rtp reports, each with its track SID and participant. */
  async inboundStats() {
    if (!this.subscriber) return [];
    const report = await this.subscriber.getStats();
    const byTrackId = new Map([...this._remote.values()].map((b) => [b.track.id, b]));
    const out = [];
    for (const s of report.values()) {
      if (s.type !== 'inbound-rtp') continue;
      const b = (s.mid != null ? this._remote.get(this._mids[s.mid]) : null) ?? byTrackId.get(s.trackIdentifier);
      out.push({
        kind: s.kind,
        mid: s.mid ?? null,
        sid: b?.sid ?? null,
        participant: b?.participant ?? null,
        packetsReceived: s.packetsReceived ?? 0,
        packetsLost: s.packetsLost ?? 0,
        bytesReceived: s.bytesReceived ?? 0,
        framesDecoded: s.framesDecoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
        jitter: s.jitter ?? 0,
      });
    }
    return out;
  }

  /**
   * outboundStats returns the publish transport's outbound-rtp reports, one
   * per sent stream (a simulcast track has one per layer), each with the
   * server's SID of its local track.
   */
  async outboundStats() {
    if (!this.publisher) return [];
    const report = await this.publisher.getStats();
    const byMid = new Map([...this._local.values()].map((l) => [l.transceiver.mid, l]));
    const out = [];
    for (const s of report.values()) {
      if (s.type !== 'outbound-rtp') continue;
      out.push({
        kind: s.kind,
        mid: s.mid ?? null,
        rid: s.rid ?? null,
        sid: byMid.get(s.mid)?.sid ?? null,
        packetsSent: s.packetsSent ?? 0,
        bytesSent: s.bytesSent ?? 0,
        targetBitrate: s.targetBitrate ?? 0,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
        qualityLimitationReason: s.qualityLimitationReason ?? null,
      });
    }
    return out;
  }

  // -------------------------------------------------------------------------
  // Ending

  /**
   * leave says goodbye: it sends `leave`, waits a little for `bye`, and
   * closes everything. Local tracks are not stopped (they belong to the page).
   */
  async leave() {
    if (!this.ws || this.connectionState === 'closed') return;
    this._setConnection('leaving');
    const ws = this.ws;
    if (this._send(msg.leave())) {
      await new Promise((resolve) => {
        const done = () => resolve();
        const timer = setTimeout(done, 1500);
        this.once('bye', () => {
          clearTimeout(timer);
          done();
        });
        ws.addEventListener?.('close', () => {
          clearTimeout(timer);
          done();
        });
      });
    }
    this.close();
  }

  /**
   * close ends the session at once. With goodbye, it first sends `leave`
   * without waiting for the answer (for a page that is going away).
   */
  close({ goodbye = false } = {}) {
    const ws = this.ws;
    if (goodbye && this.connectionState === 'joined') this._send(msg.leave());
    this._teardown();
    if (ws && ws.readyState <= 1) ws.close(1000, 'bye');
    this._setConnection('closed');
  }

  _teardown() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    for (const [id, p] of this._pending) {
      this._settle(id, () => p.reject(new HuddleError('closed', 'the connection closed')));
    }
    for (const b of this._remote.values()) this.emit('track_unsubscribed', b);
    this._remote.clear();
    for (const ch of this.channels.values()) {
      try {
        ch.close();
      } catch {}
    }
    this.channels.clear();
    for (const pc of [this.subscriber, this.publisher]) {
      try {
        pc?.close();
      } catch {}
    }
    this.subscriber = null;
    this.publisher = null;
    for (const l of this._local.values()) l.sid = null;
  }
}
