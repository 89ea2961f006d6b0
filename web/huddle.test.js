// Unit tests of the pure parts of huddle.js, run by `node --test web/`.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  Client,
  Emitter,
  HuddleError,
  RoomState,
  candidateInit,
  connect,
  decodeData,
  describeError,
  devToken,
  encodeData,
  msg,
  parseMediaSections,
  parseMessage,
  resolveMids,
  trackInfo,
  wsURL,
} from './huddle.js';

test('parseMessage accepts objects with a type and refuses the rest', () => {
  assert.deepEqual(parseMessage('{"type":"pong","id":"7","ts":1}'), { type: 'pong', id: '7', ts: 1 });
  for (const bad of ['nope', '[]', 'null', '42', '{"id":"1"}', '{"type":3}']) {
    assert.throws(() => parseMessage(bad), (err) => err instanceof HuddleError && err.code === 'bad_message', bad);
  }
});

test('message builders follow PROTOCOL.md', () => {
  assert.deepEqual(msg.join({ id: '1', token: 'T', room: 'standup' }), {
    type: 'join',
    id: '1',
    token: 'T',
    room: 'standup',
  });
  assert.equal(msg.join({ token: 'T', autoSubscribe: false }).auto_subscribe, false);
  assert.equal('auto_subscribe' in msg.join({ token: 'T', autoSubscribe: true }), false);

  const tracks = [{ cid: 'c1', kind: 'video', source: 'camera' }];
  assert.deepEqual(msg.publishOffer({ id: '2', sdp: 'v=0', tracks }), {
    type: 'offer',
    id: '2',
    transport: 'publish',
    sdp: 'v=0',
    tracks,
  });
  assert.deepEqual(msg.subscribeAnswer('v=0'), { type: 'answer', transport: 'subscribe', sdp: 'v=0' });
  assert.deepEqual(msg.mute('TR_1', 1), { type: 'mute', track: 'TR_1', muted: true });
  assert.deepEqual(msg.unpublish('TR_1'), { type: 'unpublish', track: 'TR_1' });
  assert.deepEqual(msg.update({ name: 'Ada' }), { type: 'update', name: 'Ada' });
  assert.deepEqual(msg.leave(), { type: 'leave' });
  assert.deepEqual(msg.ping('7', 5), { type: 'ping', id: '7', ts: 5 });
  assert.deepEqual(msg.subscribe(new Set(['a'])), { type: 'subscribe', tracks: ['a'] });
  assert.deepEqual(msg.subscribe(['a'], { quality: 'q', paused: false }), { type: 'subscribe', tracks: ['a'], quality: 'q', paused: false });
  assert.deepEqual(msg.subscribe(['a'], { maxWidth: 639.6, maxHeight: 360 }), { type: 'subscribe', tracks: ['a'], max_width: 640, max_height: 360 });
  assert.deepEqual(msg.subscribe(['a'], { maxWidth: 320 }), { type: 'subscribe', tracks: ['a'], max_width: 320, max_height: 0 });
});

test('candidates: init objects, and null for the end of candidates', () => {
  const c = { candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: null };
  assert.deepEqual(candidateInit(c), { candidate: c.candidate, sdpMid: '0', sdpMLineIndex: 0 });
  assert.equal(candidateInit(null), null);
  assert.equal(candidateInit({ candidate: '' }), null);
  assert.deepEqual(msg.candidate('publish', null), { type: 'candidate', transport: 'publish', candidate: null });
});

test('trackInfo describes local tracks by their MediaStreamTrack id', () => {
  assert.deepEqual(trackInfo({ track: { id: 'a1', kind: 'audio' } }), { cid: 'a1', kind: 'audio', source: 'microphone' });
  assert.deepEqual(trackInfo({ track: { id: 'v1', kind: 'video' }, source: 'screen', muted: true }), {
    cid: 'v1',
    kind: 'video',
    source: 'screen',
    muted: true,
  });
});

test('data channel messages: encode with the size limit, decode both shapes', () => {
  assert.deepEqual(JSON.parse(encodeData({ emoji: '👍' }, ['bob'])), { to: ['bob'], data: { emoji: '👍' } });
  assert.deepEqual(JSON.parse(encodeData(1)), { data: 1 });
  // The limit counts UTF-8 bytes, not UTF-16 units.
  const text = 'é'.repeat(10);
  assert.throws(() => encodeData(text, [], 25), (err) => err.code === 'message_too_large');
  assert.doesNotThrow(() => encodeData('e'.repeat(10), [], 25));

  assert.deepEqual(decodeData('{"type":"message","from":"ada","sid":"PA_1","data":{"x":1}}'), {
    type: 'message',
    from: 'ada',
    sid: 'PA_1',
    data: { x: 1 },
  });
  assert.deepEqual(decodeData('{"type":"error","code":"message_too_large","message":"m"}'), {
    type: 'error',
    code: 'message_too_large',
    message: 'm',
  });
  assert.equal(decodeData('{"type":"other"}'), null);
  assert.equal(decodeData('garbage'), null);
});

const OFFER = [
  'v=0',
  'o=- 1 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=group:BUNDLE 0 1 2',
  'm=video 9 UDP/TLS/RTP/SAVPF 96',
  'a=mid:0',
  'a=sendonly',
  'a=msid:PA_bob TR_v',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111',
  'a=mid:1',
  'a=sendonly',
  'a=msid:PA_bob TR_a',
  'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
  'a=mid:2',
  'm=video 0 UDP/TLS/RTP/SAVPF 96',
  'a=mid:3',
  'a=inactive',
  '',
].join('\r\n');

test('parseMediaSections reads mids, kinds, directions and msids', () => {
  assert.deepEqual(parseMediaSections(OFFER), [
    { mid: '0', kind: 'video', direction: 'sendonly', stream: 'PA_bob', track: 'TR_v' },
    { mid: '1', kind: 'audio', direction: 'sendonly', stream: 'PA_bob', track: 'TR_a' },
    { mid: '2', kind: 'application', direction: 'sendrecv', stream: '', track: '' },
    { mid: '3', kind: 'video', direction: 'inactive', stream: '', track: '' },
  ]);
  assert.deepEqual(parseMediaSections(''), []);
});

test('resolveMids maps track SIDs to receivers by mid', () => {
  const tr = (mid, kind, extra = {}) => ({
    mid,
    currentDirection: 'recvonly',
    direction: 'recvonly',
    receiver: { track: { id: `t${mid}`, kind } },
    ...extra,
  });
  const transceivers = [
    tr('0', 'video'),
    tr('1', 'audio'),
    tr('3', 'video', { currentDirection: 'inactive', direction: 'inactive' }),
    tr('4', 'video'), // not in mids: carries nothing
    tr(null, 'video'), // not negotiated yet
  ];
  const mids = { 0: 'TR_v', 1: 'TR_a', 3: 'TR_old' };
  const got = resolveMids(transceivers, mids, { 0: 'PA_bob', 1: 'PA_bob' });
  assert.deepEqual([...got.keys()], ['TR_v', 'TR_a']);
  assert.equal(got.get('TR_v').participant, 'PA_bob');
  assert.equal(got.get('TR_v').track.id, 't0');
  assert.equal(got.get('TR_a').mid, '1');
  assert.equal(resolveMids(transceivers, undefined).size, 0);
});

const JOINED = {
  type: 'joined',
  id: '1',
  room: 'standup',
  you: { sid: 'PA_me', identity: 'ada', name: 'Ada', joined_at: 1 },
  participants: [{ sid: 'PA_bob', identity: 'bob', name: 'Bob', joined_at: 0 }],
  tracks: [{ sid: 'TR_v', participant: 'PA_bob', identity: 'bob', kind: 'video', source: 'camera', muted: false }],
  ice_servers: [{ urls: ['stun:127.0.0.1:7801'] }],
  server: { version: '0.1.0', protocol: 1 },
  max_data_message: 16384,
};

test('RoomState follows joins, leaves, tracks and mutes', () => {
  const s = new RoomState();
  s.reset(JOINED);
  assert.equal(s.you.sid, 'PA_me');
  assert.equal(s.participant('PA_me').name, 'Ada');
  assert.equal(s.participants.size, 1);

  let ev = s.apply({ type: 'participant_joined', participant: { sid: 'PA_cy', identity: 'cy', name: 'Cy' } });
  assert.deepEqual(ev.map((e) => e[0]), ['participant_joined']);
  assert.equal(s.participants.size, 2);
  // Oneself is never one of the others.
  assert.deepEqual(s.apply({ type: 'participant_joined', participant: JOINED.you }), []);

  s.apply({ type: 'participant_updated', participant: { sid: 'PA_cy', identity: 'cy', name: 'Cyrus' } });
  assert.equal(s.participants.get('PA_cy').name, 'Cyrus');

  s.apply({ type: 'track_published', track: { sid: 'TR_a', participant: 'PA_bob', kind: 'audio', source: 'microphone', muted: false } });
  assert.deepEqual(s.tracksOf('PA_bob').map((t) => t.sid), ['TR_v', 'TR_a']);

  ev = s.apply({ type: 'track_muted', track: 'TR_a', participant: 'PA_bob', muted: true });
  assert.equal(ev[0][1].muted, true);
  assert.equal(s.tracks.get('TR_a').muted, true);

  // Leaving removes the participant's remaining tracks first.
  ev = s.apply({ type: 'participant_left', sid: 'PA_bob', identity: 'bob', reason: 'left' });
  assert.deepEqual(ev.map((e) => e[0]), ['track_unpublished', 'track_unpublished', 'participant_left']);
  assert.equal(ev[2][1].name, 'Bob');
  assert.equal(ev[2][1].reason, 'left');
  assert.equal(s.participants.has('PA_bob'), false);
  assert.equal(s.tracks.size, 0);

  ev = s.apply({ type: 'track_unpublished', track: 'TR_unknown', participant: 'PA_cy' });
  assert.deepEqual(ev[0], ['track_unpublished', { sid: 'TR_unknown', participant: 'PA_cy' }]);
});

test('errors read well for people', () => {
  assert.match(describeError(new HuddleError('room_full', 'room standup has 50 participants')), /full/);
  assert.match(describeError('token_expired'), /expired/);
  assert.equal(describeError(new Error('boom')), 'boom');
  const e = HuddleError.fromMessage({ type: 'error', id: '2', code: 'permission_denied', message: 'no publish grant', ref: 'offer' });
  assert.equal(e.code, 'permission_denied');
  assert.equal(e.ref, 'offer');
  assert.equal(e.id, '2');
});

test('wsURL and devToken derive addresses from the page', async () => {
  assert.equal(wsURL('http://127.0.0.1:8080/r/standup?name=A'), 'ws://127.0.0.1:8080/ws');
  assert.equal(wsURL('https://huddle.example/'), 'wss://huddle.example/ws');

  let asked = '';
  const fetch = async (u) => {
    asked = u;
    return { ok: true, status: 200, json: async () => ({ token: 'T', identity: 'ada', room: 'a b' }) };
  };
  const got = await devToken({ room: 'a b', name: 'Ada', base: 'http://127.0.0.1:8080/r/x', fetch });
  assert.equal(got.token, 'T');
  assert.equal(asked, 'http://127.0.0.1:8080/dev/token?room=a+b&name=Ada');

  const notDev = async () => ({ ok: false, status: 404, text: async () => '404 page not found' });
  await assert.rejects(devToken({ room: 'r', base: 'http://h/', fetch: notDev }), (err) => err.code === 'no_token');
});

test('Emitter: on, once, off, and a throwing listener does not stop the others', () => {
  const e = new Emitter();
  const seen = [];
  const off = e.on('x', (v) => seen.push(`a${v}`));
  e.once('x', (v) => seen.push(`b${v}`));
  e.on('x', () => {
    throw new Error('listener fault');
  });
  e.on('*', (type, v) => seen.push(`*${type}${v}`));
  const quiet = console.error;
  console.error = () => {};
  try {
    e.emit('x', 1);
    off();
    e.emit('x', 2);
  } finally {
    console.error = quiet;
  }
  assert.deepEqual(seen, ['a1', 'b1', '*x1', '*x2']);
});

// FakeSocket is a WebSocket that a test drives: it records what the client
// sends and lets the test play the server.
class FakeSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.last = this;
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.();
    });
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code }));
  }
  addEventListener() {}
  serve(m) {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

test('Client joins, surfaces server events and answers pings', async () => {
  const p = connect({ url: 'ws://h/ws', token: 'T', room: 'standup', WebSocket: FakeSocket, pingInterval: 0 });
  await tick();
  const ws = FakeSocket.last;
  assert.deepEqual(ws.sent[0], { type: 'join', id: '1', token: 'T', room: 'standup' });
  ws.serve(JOINED);
  const c = await p;
  assert.equal(c.you.name, 'Ada');
  assert.deepEqual(c.iceServers, JOINED.ice_servers);
  assert.deepEqual(c.nodes, []); // not a cluster
  assert.equal(c.connectionState, 'joined');

  const events = [];
  c.on('*', (type, v) => events.push([type, v]));
  ws.serve({ type: 'participant_left', sid: 'PA_bob', identity: 'bob', reason: 'disconnected' });
  assert.deepEqual(events.map((e) => e[0]), ['track_unpublished', 'participant_left']);

  const rtt = c.ping();
  const ping = ws.sent.at(-1);
  assert.equal(ping.type, 'ping');
  ws.serve({ type: 'pong', id: ping.id, ts: ping.ts });
  assert.ok((await rtt) >= 0);

  // An error not tied to a request is an event.
  ws.serve({ type: 'error', code: 'rate_limited', message: 'slow down' });
  assert.equal(events.at(-1)[0], 'error');
  assert.equal(events.at(-1)[1].code, 'rate_limited');

  // Leave: `leave`, then `bye`, then closed.
  const left = c.leave();
  assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
  ws.serve({ type: 'bye', reason: 'left' });
  await left;
  assert.equal(c.connectionState, 'closed');
  assert.equal(ws.readyState, 3);
});

test('Client rejects a refused join with the server code', async () => {
  const p = connect({ url: 'ws://h/ws', token: 'bad', WebSocket: FakeSocket, pingInterval: 0 });
  await tick();
  const ws = FakeSocket.last;
  ws.serve({ type: 'error', id: ws.sent[0].id, code: 'token_invalid', message: 'signature is invalid', ref: 'join' });
  await assert.rejects(p, (err) => err instanceof HuddleError && err.code === 'token_invalid' && err.ref === 'join');
  assert.equal(ws.readyState, 3);
});

test('Client reports a socket closed before joined', async () => {
  const c = new Client({ url: 'ws://h/ws', token: 'T', WebSocket: FakeSocket, pingInterval: 0 });
  const p = c.connect();
  await tick();
  FakeSocket.last.close(1006);
  await assert.rejects(p, (err) => err.code === 'closed');
});

test('Client ends the join on a refusal without an id', async () => {
  const p = connect({ url: 'ws://h/ws', token: 'T', WebSocket: FakeSocket, pingInterval: 0 });
  await tick();
  FakeSocket.last.serve({ type: 'error', code: 'room_full', message: 'room is full' });
  await assert.rejects(p, (err) => err.code === 'room_full');
});

test('Client gives its PeerConnections the TURN servers of joined and its ICE policy', async () => {
  let cfg = null;
  class PC {
    constructor(c) {
      cfg = c;
    }
  }
  const p = connect({ url: 'ws://h/ws', token: 'T', WebSocket: FakeSocket, RTCPeerConnection: PC, pingInterval: 0, iceTransportPolicy: 'relay' });
  await tick();
  const ws = FakeSocket.last;
  const turnJoined = { ...JOINED, ice_servers: [{ urls: ['turn:127.0.0.1:3478?transport=udp'], username: '1800000000:ada', credential: 'c2VjcmV0' }] };
  ws.serve(turnJoined);
  const c = await p;
  c._newPeerConnection('publish');
  assert.deepEqual(cfg.iceServers, turnJoined.ice_servers);
  assert.equal(cfg.iceTransportPolicy, 'relay');
  const left = c.leave();
  ws.serve({ type: 'bye', reason: 'left' });
  await left;
});

test('Client follows a redirect to the node that serves the room', async () => {
  const p = connect({ url: 'ws://a/ws', token: 'T', room: 'standup', WebSocket: FakeSocket, pingInterval: 0 });
  await tick();
  const first = FakeSocket.last;
  assert.equal(first.url, 'ws://a/ws');
  first.serve({ type: 'redirect', id: first.sent[0].id, url: 'http://b:7800', room: 'standup', reason: 'placement' });
  first.close(1000);
  await tick();
  await tick();
  const second = FakeSocket.last;
  assert.notEqual(second, first);
  assert.equal(second.url, 'ws://b:7800/ws');
  assert.equal(second.sent[0].type, 'join');
  second.serve({ ...JOINED, id: second.sent[0].id, nodes: ['http://a:7800', 'http://b:7800', 7] });
  const c = await p;
  assert.equal(c.connectionState, 'joined');
  // The cluster's live nodes, where to go when this one dies.
  assert.deepEqual(c.nodes, ['http://a:7800', 'http://b:7800']);
  // A joined session that moves ends, remembering where to go.
  const moved = [];
  c.on('redirect', (r) => moved.push(r));
  second.serve({ type: 'redirect', url: 'http://c:7800', room: 'standup', reason: 'drain' });
  assert.deepEqual(moved, [{ url: 'http://c:7800', reason: 'drain' }]);
  assert.equal(c.url, 'ws://c:7800/ws');
  assert.equal(c.connectionState, 'closed');
});

// FakePublishPC records the transceivers a client adds and lets a test read
// and change their senders' parameters.
class FakePublishPC {
  static last = null;
  constructor() {
    this.added = [];
    this.stats = new Map(); // what getStats reports
    FakePublishPC.last = this;
  }
  async getStats() {
    return this.stats;
  }
  addTransceiver(track, init) {
    const params = { encodings: (init.sendEncodings ?? [{}]).map((e) => ({ ...e, active: true })) };
    const sender = {
      track,
      set: [],
      getParameters: () => structuredClone(params),
      setParameters: async (p) => {
        sender.set.push(p);
        params.encodings = p.encodings;
      },
    };
    const t = { sender, init, mid: String(this.added.length) };
    this.added.push(t);
    return t;
  }
}

test('camera video is published as simulcast q/h/f and layers follow the server', async () => {
  const p = connect({ url: 'ws://h/ws', token: 'T', WebSocket: FakeSocket, RTCPeerConnection: FakePublishPC, pingInterval: 0 });
  await tick();
  FakeSocket.last.serve(JOINED);
  const c = await p;
  c._addLocal({ id: 'cam', kind: 'video', enabled: true }, {});
  c._addLocal({ id: 'mic', kind: 'audio', enabled: true }, {});
  c._addLocal({ id: 'scr', kind: 'video', enabled: true }, { source: 'screen' });
  const [cam, mic, scr] = FakePublishPC.last.added;
  assert.deepEqual(cam.init.sendEncodings.map((e) => e.rid), ['q', 'h', 'f']);
  assert.equal(mic.init.sendEncodings, undefined);
  assert.equal(scr.init.sendEncodings, undefined);

  c._local.get('cam').sid = 'TR_cam';
  FakeSocket.last.serve({ type: 'layers', track: 'TR_cam', active: ['q'] });
  await tick();
  assert.deepEqual(cam.sender.getParameters().encodings.map((e) => e.active), [true, false, false]);
  FakeSocket.last.serve({ type: 'layers', track: 'TR_cam', active: ['q', 'h', 'f'] });
  await tick();
  assert.deepEqual(cam.sender.getParameters().encodings.map((e) => e.active), [true, true, true]);
  assert.equal(cam.sender.set.length, 2);
  c.close();
});

test('simulcast: false publishes the camera as one stream, and outboundStats names its track', async () => {
  const p = connect({
    url: 'ws://h/ws',
    token: 'T',
    WebSocket: FakeSocket,
    RTCPeerConnection: FakePublishPC,
    pingInterval: 0,
    simulcast: false,
  });
  await tick();
  FakeSocket.last.serve(JOINED);
  const c = await p;
  c._addLocal({ id: 'cam', kind: 'video', enabled: true }, {});
  const [cam] = FakePublishPC.last.added;
  assert.equal(cam.init.sendEncodings, undefined);
  c._local.get('cam').sid = 'TR_cam';
  FakePublishPC.last.stats.set('o1', { type: 'outbound-rtp', kind: 'video', mid: cam.mid, bytesSent: 1200, targetBitrate: 150000 });
  FakePublishPC.last.stats.set('r1', { type: 'remote-inbound-rtp', kind: 'video' });
  const out = await c.outboundStats();
  assert.equal(out.length, 1);
  assert.equal(out[0].sid, 'TR_cam');
  assert.equal(out[0].rid, null);
  assert.equal(out[0].bytesSent, 1200);
  assert.equal(out[0].targetBitrate, 150000);
  c.close();
});
