// Unit tests of presence in huddle.js (PROTOCOL.md, "Presence"), run by
// `node --test web/`.
import test from 'node:test';
import assert from 'node:assert/strict';

import { connect, msg } from './huddle.js';

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

const JOINED = {
  type: 'joined',
  id: '1',
  room: 'standup',
  you: { sid: 'PA_ada', identity: 'ada', name: 'Ada', joined_at: 1 },
  participants: [{ sid: 'PA_bob', identity: 'bob', name: 'Bob', joined_at: 1 }],
  tracks: [],
  ice_servers: [],
  server: { version: 'test', protocol: 1 },
  max_data_message: 16384,
};

test('presence message builders follow PROTOCOL.md', () => {
  assert.deepEqual(msg.heartbeat(), { type: 'heartbeat' });
  assert.deepEqual(msg.activity('in_call'), { type: 'activity', activity: 'in_call' });
  assert.deepEqual(msg.activity(), { type: 'activity', activity: '' });
  assert.deepEqual(msg.status('busy', 'review'), { type: 'status', state: 'busy', text: 'review' });
  assert.deepEqual(msg.status('', ''), { type: 'status' });
  assert.deepEqual(msg.presence('9', ['bob']), { type: 'presence', id: '9', identities: ['bob'] });
  assert.deepEqual(msg.presence('9'), { type: 'presence', id: '9' });
});

test('Client keeps presence pushes, drops stale ones, answers queries, sends heartbeats', async () => {
  const p = connect({ url: 'ws://h/ws', token: 'T', WebSocket: FakeSocket, pingInterval: 20 });
  await tick();
  const ws = FakeSocket.last;
  ws.serve(JOINED);
  const c = await p;

  const seen = [];
  c.on('presence', (person) => seen.push(person));
  ws.serve({ type: 'presence', people: [{ identity: 'bob', state: 'online', sessions: 1, version: 3 }] });
  ws.serve({ type: 'presence', people: [{ identity: 'bob', state: 'busy', text: 'review', sessions: 1, version: 5 }] });
  ws.serve({ type: 'presence', people: [{ identity: 'bob', state: 'away', sessions: 1, version: 4 }] }); // stale
  assert.deepEqual(seen.map((x) => x.state), ['online', 'busy']);
  assert.equal(c.presence.get('bob').text, 'review');

  const q = c.queryPresence(['bob', 'cy']);
  const query = ws.sent.at(-1);
  assert.equal(query.type, 'presence');
  assert.deepEqual(query.identities, ['bob', 'cy']);
  ws.serve({ type: 'presence', id: query.id, people: [{ identity: 'bob', state: 'busy', version: 5 }, { identity: 'cy', state: 'offline', version: 0 }] });
  const people = await q;
  assert.deepEqual(people.map((x) => x.state), ['busy', 'offline']);
  assert.equal(seen.length, 2, 'a reply is not a push');

  c.setStatus('away', 'lunch');
  c.setActivity('idle');
  assert.deepEqual(ws.sent.slice(-2), [{ type: 'status', state: 'away', text: 'lunch' }, { type: 'activity', activity: 'idle' }]);

  // The ping timer also sends a heartbeat (at most one per 15 s).
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(ws.sent.filter((m) => m.type === 'heartbeat').length, 1);
  c.close();
});
