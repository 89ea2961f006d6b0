// Tests of web/doc.js, run by `node --test web/`: editors against a fake
// server that speaks the doc channel protocol of rooms/docs.go (snapshot,
// ordered stream of acks and ops, exactly-once by client id and seq,
// undo, too_far_behind), over links that delay messages, and drop them
// when a connection breaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RIGHT, apply, transform, invert, edit, codePoints, compose } from './ot.js';
import { DocSession, splitOp } from './doc.js';

/** FakeServer keeps the document the way rooms/doc does, in memory. */
class FakeServer {
  constructor({ maxBehind = Infinity } = {}) {
    this.epoch = 'E1';
    this.text = '';
    this.texts = ['']; // texts[v] is the text of version v
    this.log = [null]; // log[v] = {version, client, seq, action, op}
    this.marks = new Map(); // client → {seq, version}
    this.undos = new Map(); // client → versions of its edits
    this.redos = new Map();
    this.sessions = new Set();
    this.maxBehind = maxBehind;
  }
  get head() {
    return this.log.length - 1;
  }
  // connect opens a session; out(msg) delivers to the client. later(f),
  // when given, runs f some time later: the stream of versions goes
  // through it, as the server's sender goroutine does, so a hello (which
  // restarts the stream) drops what it had not sent yet.
  connect(identity, out, later = null) {
    const s = { identity, id: `SID${this.sessions.size}`, out, following: false, stream: [], later };
    this.sessions.add(s);
    return s;
  }
  stream(s, msg) {
    if (!s.later) {
      s.out(msg);
      return;
    }
    s.stream.push(msg);
    const gen = s.stream;
    s.later(() => {
      if (s.stream === gen && gen.length) s.out(gen.shift());
    });
  }
  disconnect(s) {
    this.sessions.delete(s);
  }
  snapshot() {
    return { type: 'doc_snapshot', epoch: this.epoch, version: this.head, text: this.text };
  }
  commit(client, seq, base, op, action) {
    for (let v = base + 1; v <= this.head; v++) op = transform(op, this.log[v].op, RIGHT)[0];
    const e = { version: this.head + 1, client, seq, action, op };
    this.text = apply(this.text, op);
    this.texts.push(this.text);
    this.log.push(e);
    this.marks.set(client, { seq, version: e.version });
    for (const s of this.sessions) {
      if (!s.following) continue;
      if (e.client === s.id && action === 'edit') this.stream(s, { type: 'ack', seq, version: e.version });
      else this.stream(s, { type: 'op', version: e.version, client, action, op, seq });
    }
    return e;
  }
  receive(s, m) {
    if (!this.sessions.has(s)) return;
    if (m.type === 'hello') {
      s.id = `${s.identity}/${m.client}`;
      s.stream = []; // the old stream stops; what it had not sent is gone
      s.out(this.snapshot());
      s.following = true;
      return;
    }
    if (m.type === 'history') {
      s.out({ type: 'history', entries: this.log.slice(1).map((e) => ({ version: e.version, client: e.client, action: e.action, time: 0 })) });
      return;
    }
    const me = s.id;
    const mark = this.marks.get(me);
    if (mark && m.seq <= mark.seq) {
      if (m.seq < mark.seq) s.out({ type: 'doc_error', code: 'stale_seq', message: 'stale', seq: m.seq });
      else s.out({ type: 'ack', seq: m.seq, version: mark.version });
      return;
    }
    if (m.type === 'submit') {
      if (m.base < this.head - this.maxBehind) {
        s.stream = [];
        s.out({ type: 'doc_error', code: 'too_far_behind', message: 'behind', seq: m.seq, last_seq: mark?.seq ?? 0, snapshot: this.snapshot() });
        return;
      }
      if (codePoints(this.texts[m.base]) !== m.op.filter((c) => typeof c === 'number').reduce((a, c) => a + Math.abs(c), 0)) {
        s.out({ type: 'doc_error', code: 'length_mismatch', message: 'length', seq: m.seq });
        return;
      }
      const e = this.commit(me, m.seq, m.base, m.op, 'edit');
      if (!this.undos.has(me)) this.undos.set(me, []);
      this.undos.get(me).push(e.version);
      this.redos.set(me, []);
      return;
    }
    if (m.type === 'undo' || m.type === 'redo') {
      const from = m.type === 'undo' ? this.undos.get(me) : this.redos.get(me);
      const to = m.type === 'undo' ? 'redos' : 'undos';
      if (!from?.length) {
        s.out({ type: 'doc_error', code: 'nothing_to_undo', message: 'nothing', seq: m.seq });
        return;
      }
      const v = from.pop();
      const inv = invert(this.log[v].op, this.texts[v - 1]);
      const e = this.commit(me, m.seq, v, inv, m.type);
      if (!this[to].has(me)) this[to].set(me, []);
      this[to].get(me).push(e.version);
      return;
    }
    if (m.type === 'restore') {
      const target = this.texts[m.version];
      const op = edit(codePoints(this.text), 0, codePoints(this.text), target);
      this.commit(me, m.seq, this.head, op, 'restore');
    }
  }
}

/** rng is a small deterministic random source. */
function rng(seed) {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

/** memoryStorage is a Storage for one simulated tab. */
function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, String(v)) };
}

/**
 * Net is a simulated pair of ordered links per editor with random delays:
 * messages of one link arrive in order, the links of different editors
 * interleave freely. A broken connection drops what is in flight.
 */
class Net {
  constructor(server, rand) {
    this.server = server;
    this.rand = rand;
    this.now = 0;
    this.events = []; // {at, seq, run}
    this.n = 0;
  }
  at(delay, run) {
    this.push({ at: this.now + delay, n: this.n++, run });
  }
  // push keeps events sorted by time, then by order of sending.
  push(e) {
    let lo = 0;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = this.events[mid];
      if (m.at < e.at || (m.at === e.at && m.n < e.n)) lo = mid + 1;
      else hi = mid;
    }
    this.events.splice(lo, 0, e);
  }
  // link returns an ordered sender with random delays.
  link(deliver) {
    let last = 0;
    const l = { alive: true };
    l.send = (msg) => {
      const copy = JSON.parse(JSON.stringify(msg));
      const at = Math.max(last, this.now + 1 + this.rand(30));
      last = at;
      this.push({ at, n: this.n++, run: () => l.alive && deliver(copy) });
    };
    return l;
  }
  step() {
    if (!this.events.length) return false;
    const e = this.events.shift();
    this.now = Math.max(this.now, e.at);
    e.run();
    return true;
  }
}

/** Editor is one simulated tab: a DocSession over a Net connection. */
class Editor {
  constructor(net, identity, storage) {
    this.net = net;
    this.identity = identity;
    this.storage = storage;
    this.up = null;
    this.doc = this.makeDoc();
    this.connect();
  }
  makeDoc() {
    return new DocSession({
      identity: this.identity,
      storage: this.storage,
      maxMessage: 600,
      now: () => this.net.now,
      send: (m) => this.up?.send(m),
    });
  }
  connect() {
    const down = this.net.link((m) => this.doc.receive(m));
    const session = this.net.server.connect(this.identity, (m) => down.send(m), (f) => this.net.at(1 + this.net.rand(20), f));
    const up = this.net.link((m) => this.net.server.receive(session, m));
    this.conn = { down, up, session };
    this.up = up;
    this.net.at(1 + this.net.rand(5), () => this.conn.up === up && this.doc.open());
  }
  // drop breaks the connection: what is in flight is lost, or (half the
  // time) what the server was sent still arrives.
  drop(keepUp) {
    const { down, up, session } = this.conn;
    down.alive = false;
    if (!keepUp) up.alive = false;
    this.net.at(40, () => this.net.server.disconnect(session));
    this.doc.closed();
    this.connect();
  }
  // reload is a page reload: a new DocSession from the tab's storage.
  reload() {
    this.doc.save(); // what the page does on pagehide
    const { down, up, session } = this.conn;
    down.alive = false;
    up.alive = false;
    this.net.server.disconnect(session);
    this.doc = this.makeDoc();
    this.connect();
  }
}

test('splitOp: a large insert goes in parts that compose to it', () => {
  const op = [3, 'abcdefghij', -2, 4, 'xyz😀', 1];
  const text = 'ABCDEFGHIJ';
  const [a, b] = splitOp(op, 4);
  assert.deepEqual(a, [3, 'abcd', 7]);
  assert.equal(apply(apply(text, a), b), apply(text, op));
  assert.deepEqual(compose(a, b), op);
  assert.deepEqual(splitOp(op, 100), [op, null]);
  // Repeated splitting terminates and stays exact.
  let t = text;
  let rest = op;
  for (let i = 0; rest && i < 20; i++) {
    const [x, y] = splitOp(rest, 3);
    t = apply(t, x);
    rest = y;
  }
  assert.equal(rest, null);
  assert.equal(t, apply(text, op));
});

test('states: synchronized, awaiting ack, awaiting with buffer', () => {
  const sent = [];
  const d = new DocSession({ identity: 'ada', send: (m) => sent.push(m) });
  d.open();
  assert.deepEqual(sent.shift(), { type: 'hello', client: d.clientId });
  d.receive({ type: 'doc_snapshot', epoch: 'E', version: 4, text: 'ab' });
  assert.equal(d.ready, true);
  assert.equal(d.state, 'synchronized');
  d.edit([2, 'c']);
  assert.deepEqual(sent.shift(), { type: 'submit', seq: 1, base: 4, op: [2, 'c'] });
  assert.equal(d.state, 'awaitingAck');
  d.edit([3, 'd']);
  d.edit([4, 'e']);
  assert.equal(d.state, 'awaitingWithBuffer');
  assert.equal(sent.length, 0);
  // Someone else's op first: transformed past ours.
  d.receive({ type: 'op', version: 5, client: 'bob/x', action: 'edit', op: ['X', 2] });
  assert.equal(d.text, 'Xabcde');
  assert.equal(d.serverText, 'Xab');
  d.receive({ type: 'ack', seq: 1, version: 6 });
  assert.deepEqual(sent.shift(), { type: 'submit', seq: 2, base: 6, op: [4, 'de'] });
  assert.equal(d.state, 'awaitingAck');
  // A cursor of bob's at version 5 after "Xa" moves past nothing; our
  // pending "de" is after it.
  d.receiveCursor({ sid: 'PB', identity: 'bob', name: 'Bob', color: 'red', version: 5, anchor: 2, head: 2 });
  assert.deepEqual(d.remoteCursors().map((c) => [c.anchor, c.head]), [[2, 2]]);
  // Our caret at the end of the local text is, in server terms, at the end of "Xabc".
  assert.deepEqual(d.cursorMessage(6, 6), { version: 6, anchor: 4, head: 4 });
  d.receive({ type: 'ack', seq: 2, version: 7 });
  assert.equal(d.state, 'synchronized');
  assert.equal(d.serverText, 'Xabcde');
  // Undo: the result comes back as an op of ours.
  d.undo();
  assert.deepEqual(sent.shift(), { type: 'undo', seq: 3 });
  d.edit([6, '!']);
  d.receive({ type: 'op', version: 8, client: d.me, action: 'undo', op: [4, -2] });
  assert.equal(d.text, 'Xabc!');
  assert.deepEqual(sent.shift(), { type: 'submit', seq: 4, base: 8, op: [4, '!'] });
  // nothing_to_undo just clears the request.
  d.receive({ type: 'ack', seq: 4, version: 9 });
  d.redo();
  d.redo();
  assert.deepEqual(sent.shift(), { type: 'redo', seq: 5 });
  d.receive({ type: 'doc_error', code: 'nothing_to_undo', message: 'x', seq: 5 });
  assert.deepEqual(sent.shift(), { type: 'redo', seq: 6 });
});

test('a cursor of an older version is moved forward through the log', () => {
  const d = new DocSession({ identity: 'ada', send: () => {} });
  d.open();
  d.receive({ type: 'doc_snapshot', epoch: 'E', version: 0, text: 'hello world' });
  d.receiveCursor({ sid: 'PB', identity: 'bob', name: 'Bob', color: 'red', version: 0, anchor: 6, head: 11 });
  d.receive({ type: 'op', version: 1, client: 'cy/1', action: 'edit', op: ['>> ', 11] });
  d.receive({ type: 'op', version: 2, client: 'cy/1', action: 'edit', op: [3, -6, 5] });
  assert.equal(d.text, '>> world');
  assert.deepEqual(d.remoteCursors().map((c) => [c.anchor, c.head]), [[3, 8]]);
  // An older message overtaken by a newer one is ignored.
  d.receiveCursor({ sid: 'PB', identity: 'bob', name: 'Bob', color: 'red', version: 2, anchor: 1, head: 1 });
  d.receiveCursor({ sid: 'PB', identity: 'bob', name: 'Bob', color: 'red', version: 1, anchor: 9, head: 9 });
  assert.deepEqual(d.remoteCursors().map((c) => [c.anchor, c.head]), [[1, 1]]);
  d.dropCursor('PB');
  assert.equal(d.remoteCursors().length, 0);
});

test('reconnect: the request in flight is committed exactly once', () => {
  for (const committedBefore of [false, true]) {
    const server = new FakeServer();
    const out = [];
    let s = server.connect('ada', (m) => out.push(m));
    const sent = [];
    const d = new DocSession({ identity: 'ada', send: (m) => sent.push(m) });
    const pump = () => {
      while (sent.length || out.length) {
        while (sent.length) server.receive(s, sent.shift());
        while (out.length) d.receive(out.shift());
      }
    };
    d.open();
    pump();
    d.edit(['hello']);
    const req = sent.shift();
    if (committedBefore) server.receive(s, req); // committed, the ack is lost
    out.length = 0;
    server.disconnect(s);
    d.closed();
    // Someone else edits meanwhile.
    const other = server.connect('bob', () => {});
    server.receive(other, { type: 'hello', client: 'b' });
    server.receive(other, { type: 'submit', seq: 1, base: server.head, op: committedBefore ? ['>', 5] : ['>'] });
    d.edit([5, '!']);
    s = server.connect('ada', (m) => out.push(m));
    d.open();
    pump();
    assert.equal(server.text, '>hello!');
    assert.equal(d.text, server.text);
    assert.equal(d.state, 'synchronized');
    assert.equal(server.log.filter((e) => e && e.client === d.me).length, 2);
  }
});

test('too far behind: pending edits are rebased on the snapshot, not dropped', () => {
  const server = new FakeServer({ maxBehind: 2 });
  const out = [];
  const s = server.connect('ada', (m) => out.push(m));
  const sent = [];
  const d = new DocSession({ identity: 'ada', send: (m) => sent.push(m) });
  d.open();
  server.receive(s, sent.shift());
  d.receive(out.shift());
  d.edit(['abc']);
  server.receive(s, sent.shift());
  d.receive(out.shift());
  d.edit([3, 'X']); // sent at base 1
  const req = sent.shift();
  const bob = server.connect('bob', () => {});
  server.receive(bob, { type: 'hello', client: 'b' });
  for (let i = 1; i <= 4; i++) server.receive(bob, { type: 'submit', seq: i, base: server.head, op: [server.text.length, String(i)] });
  out.length = 0; // the stream was stopped: those ops never reached us
  server.receive(s, req);
  const err = out.shift();
  assert.equal(err.code, 'too_far_behind');
  d.receive(err);
  while (sent.length) {
    server.receive(s, sent.shift());
    while (out.length) d.receive(out.shift());
  }
  assert.equal(server.text, 'abc1234X');
  assert.equal(d.text, server.text);
});

test('a re-created document is never written into', () => {
  const sent = [];
  const lost = [];
  const d = new DocSession({ identity: 'ada', send: (m) => sent.push(m) });
  d.on('lost', (l) => lost.push(l));
  d.open();
  d.receive({ type: 'doc_snapshot', epoch: 'E1', version: 3, text: 'old' });
  d.edit([3, '!']);
  sent.length = 0;
  d.closed();
  d.open();
  d.receive({ type: 'doc_snapshot', epoch: 'E2', version: 0, text: '' });
  assert.deepEqual(sent, [{ type: 'hello', client: d.clientId }]);
  assert.equal(d.text, '');
  assert.deepEqual(lost.map((l) => l.text), ['old!']);
});

// Several editors type, undo, restore and reconnect at random over delaying
// links; some reload their page (a new session from session storage). In
// the end every editor has the server's text, and the server committed
// every edit once: its log has exactly one entry per (client, seq).
test('random concurrent editing with delays, reconnects and reloads converges', () => {
  const alphabet = ['a', 'b', 'é', '😀', '日', '\n'];
  const paste = 'a long paste '.repeat(20);
  const stats = { resubmitted: 0, committedBefore: 0, rebased: 0, behind: 0, split: 0 };
  for (let run = 0; run < 25; run++) {
    const rand = rng(run * 7919 + 1);
    const server = new FakeServer({ maxBehind: run % 3 === 0 ? 2 : Infinity });
    const net = new Net(server, rand);
    const editors = Array.from({ length: 2 + (run % 4) }, (_, i) => new Editor(net, `u${i}`, memoryStorage()));
    let typed = 0;
    for (let i = 0; i < 1500; i++) {
      const r = rand(100);
      const x = editors[rand(editors.length)];
      if (r < 25 && x.doc.ready) {
        const n = codePoints(x.doc.text);
        const pos = rand(n + 1);
        // Deletes grow with the text, so that it stays a few hundred long.
        const del = pos < n && rand(3) === 0 ? 1 + rand(Math.min(4 + (n >> 4), n - pos)) : 0;
        const ins = del && rand(2) ? '' : rand(40) === 0 ? paste : alphabet[rand(alphabet.length)];
        x.doc.edit(edit(n, pos, del, ins));
        x.typed = (x.typed ?? 0) + codePoints(ins);
        typed++;
      } else if (r < 27 && x.doc.ready) {
        if (rand(2)) x.doc.undo();
        else x.doc.redo();
      } else if (r === 27 && x.doc.ready && server.head > 0) {
        x.doc.restore(1 + rand(server.head));
      } else if (r === 28) {
        x.drop(rand(2) === 0);
      } else if (r === 29 && run % 2 === 0) {
        x.reload();
      } else {
        net.step();
      }
    }
    for (let i = 0; i < 200000 && net.step(); i++);
    assert.equal(net.events.length, 0, `run ${run}: the network drains`);
    for (const x of editors) {
      assert.equal(x.doc.state, 'synchronized', `run ${run} ${x.identity}`);
      assert.equal(x.doc.text, server.text, `run ${run} ${x.identity}: text`);
      assert.equal(x.doc.version, server.head, `run ${run} ${x.identity}: version`);
    }
    // Nothing typed was committed twice: an editor's committed edits never
    // insert more than it typed (composing and transforming only lose
    // inserts that were deleted).
    for (const x of editors) {
      const committed = server.log
        .slice(1)
        .filter((e) => e.action === 'edit' && e.client.startsWith(`${x.identity}/`))
        .reduce((n, e) => n + e.op.filter((c) => typeof c === 'string').reduce((m, c) => m + codePoints(c), 0), 0);
      assert.ok(committed <= (x.typed ?? 0), `run ${run} ${x.identity}: committed ${committed} inserted code points, typed ${x.typed}`);
    }
    const keys = server.log.slice(1).map((e) => `${e.client}#${e.seq}`);
    assert.equal(new Set(keys).size, keys.length, `run ${run}: a request committed twice`);
    assert.ok(typed > 50 && server.head > 20, `run ${run}: typed ${typed}, versions ${server.head}`);
    for (const x of editors) for (const k in x.doc.stats) stats[k] += x.doc.stats[k];
  }
  // The paths this test is for were taken.
  for (const k in stats) assert.ok(stats[k] > 0, `never: ${k} ${JSON.stringify(stats)}`);
});

test('comments and suggestions move with the text, as the server moves them', () => {
  const sent = [];
  const d = new DocSession({ identity: 'ada', send: (m) => sent.push(m) });
  let notes = 0;
  d.on('notes', () => notes++);
  d.open();
  sent.length = 0;
  d.receive({
    type: 'doc_snapshot', epoch: 'E', version: 10, text: 'Hello world',
    threads: [{ id: 7, from: 6, to: 11, quote: 'world', resolved: false, orphaned: false, comments: [{ client: 'bob/1', name: 'Bob', text: 'Planet?', time: 1 }] }],
    suggestions: [{ id: 9, client: 'cy/1', name: 'Cy', op: [5, '!', 6], time: 2 }],
  });
  assert.ok(notes > 0);
  // Text typed at either edge of a range stays outside it.
  d.receive({ type: 'op', version: 11, client: 'bob/1', action: 'edit', op: [6, '>', 5, '<'] });
  assert.deepEqual([d.threads[0].from, d.threads[0].to], [7, 12]);
  assert.deepEqual(d.suggestions[0].op, [5, '!', 8]);
  // A reply, a resolve, a new comment, a new suggestion.
  d.receive({ type: 'op', version: 12, client: 'cy/1', action: 'reply', op: [13], note: { thread: 7, text: 'Yes', name: 'Cy', time: 3 } });
  d.receive({ type: 'op', version: 13, client: 'cy/1', action: 'resolve', op: [13], note: { thread: 7, name: 'Cy', time: 4 } });
  d.receive({ type: 'op', version: 14, client: 'cy/1', action: 'comment', op: [13], note: { thread: 14, from: 0, to: 5, quote: 'Hello', text: 'Hi?', name: 'Cy', time: 5 } });
  d.receive({ type: 'op', version: 15, client: 'bob/1', action: 'suggest', op: [13], note: { suggestion: 15, op: [-5, 8], name: 'Bob', time: 6 } });
  assert.deepEqual(d.threads[0].comments.map((c) => c.text), ['Planet?', 'Yes']);
  assert.equal(d.threads[0].resolved, true);
  assert.equal(d.threads[1].quote, 'Hello');
  assert.equal(d.suggestions.length, 2);
  // Our own edit in flight: threads are shown past it; a comment on our
  // local text is sent in the server's terms.
  d.edit(['¡', 13]);
  sent.length = 0;
  const { threads } = d.notes();
  assert.deepEqual([threads[1].from, threads[1].to], [1, 6]);
  d.comment(1, 6, 'whole word');
  assert.deepEqual(sent.shift(), { type: 'comment', base: 15, from: 0, to: 5, text: 'whole word' });
  d.suggest([1, -5, 8]);
  assert.deepEqual(sent.shift(), { type: 'suggest', base: 15, op: [-5, 8] });
  d.receive({ type: 'ack', seq: 1, version: 16 });
  // Deleting a whole range orphans its thread.
  d.receive({ type: 'op', version: 17, client: 'bob/1', action: 'edit', op: [1, -5, 8] });
  assert.equal(d.threads[1].orphaned, true);
  assert.equal(d.threads[1].from, d.threads[1].to);
  // Accept is a request with a seq; its op comes back carrying it.
  d.accept(9);
  assert.deepEqual(sent.shift(), { type: 'accept', seq: 2, suggestion: 9 });
  assert.equal(d.state, 'awaitingAck');
  const s9 = d.suggestions.find((x) => x.id === 9).op;
  d.receive({ type: 'op', version: 18, client: d.me, action: 'accept', op: s9, seq: 2, note: { suggestion: 9, name: 'Ada', time: 7 } });
  assert.equal(d.state, 'synchronized');
  assert.equal(d.text, '¡! >world<');
  assert.deepEqual(d.suggestions.map((x) => x.id), [15]);
  d.receive({ type: 'op', version: 19, client: 'bob/1', action: 'reject', op: [10], note: { suggestion: 15, name: 'Bob', time: 8 } });
  assert.equal(d.suggestions.length, 0);
});

test('fork: a duplicated tab takes a fresh id and leaves the pending edits to the original', () => {
  const storage = memoryStorage();
  const a = new DocSession({ identity: 'ada', storage, send: () => {} });
  a.open();
  a.receive({ type: 'doc_snapshot', epoch: 'E', version: 2, text: 'ab' });
  a.edit([2, 'c']);
  const copy = new DocSession({ identity: 'ada', storage, send: () => {} });
  assert.equal(copy.clientId, a.clientId);
  assert.equal(copy.state, 'awaitingAck');
  copy.fork();
  assert.notEqual(copy.clientId, a.clientId);
  assert.equal(copy.state, 'synchronized');
  assert.equal(copy.seq, 0);
  const sent = [];
  copy.sendRaw = (m) => sent.push(m);
  copy.open();
  assert.deepEqual(sent, [{ type: 'hello', client: copy.clientId }]);
});

test('a reload with pending edits is ready once its first snapshot is in', () => {
  const storage = memoryStorage();
  const a = new DocSession({ identity: 'ada', storage, send: () => {} });
  a.open();
  a.receive({ type: 'doc_snapshot', epoch: 'E', version: 2, text: 'ab' });
  a.edit([2, 'c']);
  const sent = [];
  const b = new DocSession({ identity: 'ada', storage, send: (m) => sent.push(m) });
  const ready = [];
  b.on('ready', (r) => ready.push(r.text));
  b.open();
  b.receive({ type: 'doc_snapshot', epoch: 'E', version: 3, text: 'Xab' });
  assert.deepEqual(sent.map((m) => m.type), ['hello', 'submit']);
  b.receive({ type: 'ack', seq: 1, version: 4 });
  assert.deepEqual(sent.map((m) => m.type), ['hello', 'submit', 'hello']);
  b.receive({ type: 'doc_snapshot', epoch: 'E', version: 4, text: 'Xabc' });
  assert.deepEqual(ready, ['Xabc']);
  assert.equal(b.state, 'synchronized');
});
