// Tests of web/ot.js, run by `node --test web/`. The conformance vectors
// are the Go engine's (rooms/doc/testdata), so both implementations agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  LEFT, RIGHT, OpError, Client, apply, compose, transform, invert, transformPosition, transformSelection,
  parseOp, parseOpBytes, validate, edit, diff, codePoints, toUTF16, toCodePoints, baseLength, targetLength,
} from './ot.js';

const vectors = (name) =>
  JSON.parse(readFileSync(new URL(`../rooms/doc/testdata/${name}`, import.meta.url), 'utf8')).cases;

// kindOf runs f and returns the kind of the OpError it throws, or '' if it
// returns.
function kindOf(f) {
  try {
    f();
    return '';
  } catch (e) {
    if (!(e instanceof OpError)) throw e;
    return e.kind;
  }
}

test('vectors: apply', () => {
  for (const c of vectors('apply.json')) {
    if (c.error) {
      assert.equal(kindOf(() => apply(c.doc, c.op)), c.error, c.name);
      continue;
    }
    assert.equal(apply(c.doc, c.op), c.want, c.name);
  }
});

test('vectors: compose', () => {
  for (const c of vectors('compose.json')) {
    if (c.error) {
      assert.equal(kindOf(() => compose(c.a, c.b)), c.error, c.name);
      continue;
    }
    const ab = compose(c.a, c.b);
    assert.deepEqual(ab, c.want, c.name);
    assert.equal(apply(c.doc, ab), apply(apply(c.doc, c.a), c.b), c.name);
  }
});

test('vectors: transform', () => {
  for (const c of vectors('transform.json')) {
    if (c.error) {
      assert.equal(kindOf(() => transform(c.a, c.b, c.side)), c.error, c.name);
      continue;
    }
    const [a2, b2] = transform(c.a, c.b, c.side);
    assert.deepEqual([a2, b2], [c.a2, c.b2], c.name);
    assert.equal(apply(apply(c.doc, c.a), b2), c.want, c.name);
    assert.equal(apply(apply(c.doc, c.b), a2), c.want, c.name);
  }
});

test('vectors: invert', () => {
  for (const c of vectors('invert.json')) {
    if (c.error) {
      assert.equal(kindOf(() => invert(c.op, c.doc)), c.error, c.name);
      continue;
    }
    const inv = invert(c.op, c.doc);
    assert.deepEqual(inv, c.want, c.name);
    assert.equal(apply(apply(c.doc, c.op), inv), c.doc, c.name);
  }
});

test('vectors: cursor', () => {
  for (const c of vectors('cursor.json')) {
    const run = () => (c.selection ? transformSelection(c.selection, c.op, c.side) : transformPosition(c.pos, c.op, c.side));
    if (c.error) {
      assert.equal(kindOf(run), c.error, c.name);
      continue;
    }
    assert.deepEqual(run(), c.want, c.name);
  }
});

test('vectors: parse and encode', () => {
  for (const c of vectors('parse.json')) {
    const run = () => (c.json !== undefined ? parseOp(c.json) : parseOpBytes(Buffer.from(c.base64, 'base64')));
    if (c.error) {
      assert.equal(kindOf(run), c.error, `${c.name}: ${c.json}`);
      continue;
    }
    assert.equal(JSON.stringify(run()), c.canonical, c.name);
  }
});

test('vectors: random cases made by Go', () => {
  const cases = vectors('random.json');
  assert.ok(cases.length >= 100);
  cases.forEach((c, i) => {
    const name = `case ${i}`;
    validate(c.a);
    assert.deepEqual(compose(c.a, c.c), c.compose, name);
    assert.deepEqual(transform(c.a, c.b, LEFT), c.left, name);
    assert.deepEqual(transform(c.a, c.b, RIGHT), c.right, name);
    assert.deepEqual(invert(c.a, c.doc), c.invert, name);
    assert.equal(transformPosition(c.pos, c.a, LEFT), c.pos_left, name);
    assert.equal(transformPosition(c.pos, c.a, RIGHT), c.pos_right, name);
    assert.equal(apply(apply(c.doc, c.a), c.left[1]), c.converged[0], name);
    assert.equal(apply(apply(c.doc, c.b), c.right[0]), c.converged[1], name);
  });
});

test('code points and UTF-16 offsets', () => {
  const s = 'a😀é𝄞b'; // UTF-16: a, 2 units, é, 2 units, b
  assert.equal(s.length, 7);
  assert.equal(codePoints(s), 5);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((cp) => toUTF16(s, cp)), [0, 1, 3, 4, 6, 7]);
  assert.deepEqual([0, 1, 3, 4, 6, 7].map((u) => toCodePoints(s, u)), [0, 1, 2, 3, 4, 5]);
  assert.equal(kindOf(() => toUTF16(s, 6)), 'out_of_range');
  assert.equal(kindOf(() => toCodePoints(s, 8)), 'out_of_range');
  // A textarea change in UTF-16 offsets becomes a code point op.
  const op = edit(codePoints(s), toCodePoints(s, 3), 1, '🎉');
  assert.deepEqual(op, [2, '🎉', -1, 2]);
  assert.equal(apply(s, op), 'a😀🎉𝄞b');
  assert.equal(baseLength(op), 5);
  assert.equal(targetLength(op), 5);
});

test('diff turns a text change into an op', () => {
  const cases = [
    ['', 'abc'], ['abc', ''], ['hello', 'help'], ['a😀b', 'a😁b'], ['😀', '😀😀'], ['xyz', 'xyz'], ['ab😀', 'ab'],
  ];
  for (const [a, b] of cases) {
    const op = diff(a, b);
    validate(op);
    assert.equal(apply(a, op), b, `${a} -> ${b}`);
  }
  // Surrogate pairs stay whole even when they share their high half.
  assert.deepEqual(diff('a😀b', 'a😁b'), [1, '😁', -1, 1]);
});

// A small server with the Go Document's rules, for the client tests:
// transform against everything since the base, entries in version order.
class Server {
  constructor() {
    this.text = '';
    this.log = []; // entries {v, c, s, a, o}
    this.last = new Map(); // client id -> last seq
  }
  submit(id, req) {
    if ((this.last.get(id) ?? 0) >= req.seq) return; // a resubmission
    let op = req.op;
    for (const e of this.log.slice(req.base)) op = transform(op, e.o, RIGHT)[0];
    this.text = apply(this.text, op);
    this.last.set(id, req.seq);
    this.log.push({ v: this.log.length + 1, c: id, s: req.seq, a: 'edit', o: op });
  }
}

test('client state machine: synchronized, awaiting ack, awaiting with buffer', () => {
  const c = new Client({ id: 'me', version: 0, text: 'ab' });
  assert.equal(c.state, 'synchronized');
  const r1 = c.edit([2, 'c']);
  assert.deepEqual(r1, { seq: 1, base: 0, op: [2, 'c'] });
  assert.equal(c.state, 'awaitingAck');
  assert.equal(c.edit([3, 'd']), null);
  assert.equal(c.state, 'awaitingWithBuffer');
  assert.equal(c.edit([4, 'e']), null);
  assert.deepEqual(c.buffer, [3, 'de']);
  // Someone else's op arrives first: transformed past ours, applied.
  const { op } = c.receive({ v: 1, c: 'other', s: 1, o: ['X', 2] });
  assert.deepEqual(op, ['X', 5]);
  assert.equal(c.text, 'Xabcde');
  assert.deepEqual(c.outstanding.op, [3, 'c']);
  // Our ack: the buffer goes out, based on version 2.
  const { send } = c.receive({ v: 2, c: 'me', s: 1, a: 'edit' });
  assert.deepEqual(send, { seq: 2, base: 2, op: [4, 'de'] });
  assert.equal(c.state, 'awaitingAck');
  // After a reconnect the same request is sent again.
  assert.deepEqual(c.resend(), send);
  c.receive({ v: 3, c: 'me', s: 2 });
  assert.equal(c.state, 'synchronized');
  assert.equal(c.version, 3);
});

test('client: undo request and rebase after falling too far behind', () => {
  const c = new Client({ id: 'me', version: 5, text: 'abc' });
  const u = c.undo();
  assert.deepEqual(u, { seq: 1, base: 5, action: 'undo' });
  c.edit([3, 'd']); // buffered behind the undo
  const { op, send } = c.receive({ v: 6, c: 'me', s: 1, a: 'undo', o: [-1, 2] });
  assert.deepEqual(op, [-1, 3]); // transformed past our buffered edit
  assert.equal(c.text, 'bcd');
  assert.deepEqual(send, { seq: 2, base: 6, op: [2, 'd'] });
  c.edit([3, 'e']);
  const { lost } = c.rebase({ version: 40, text: 'fresh', lastSeq: 1 });
  assert.deepEqual(lost, [[2, 'd'], [3, 'e']]);
  assert.equal(c.state, 'synchronized');
  assert.equal(c.text, 'fresh');
  assert.equal(c.edit([5, '!']).seq, 3);
  assert.equal(c.refused('nothing_to_undo'), null);
});

test('client: remote and local selections', () => {
  const c = new Client({ id: 'me', version: 0, text: 'hello' });
  assert.deepEqual(c.localSelection({ anchor: 1, head: 1 }), { selection: { anchor: 1, head: 1 }, version: 0 });
  c.edit(['>> ', 5]);
  assert.equal(c.localSelection({ anchor: 4, head: 4 }), null);
  // Another client's cursor at version 0, after "hell", moves past our insert.
  assert.deepEqual(c.remoteSelection({ anchor: 4, head: 4 }, 0), { anchor: 7, head: 7 });
  assert.equal(c.remoteSelection({ anchor: 4, head: 4 }, 9), null);
});

// Random clients, random delivery order, reconnects that resend: every
// client ends with the server's text.
test('client: random concurrent editing converges', () => {
  let seed = 42;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const alphabet = ['a', 'b', 'é', '😀', '日', '\n'];
  for (let run = 0; run < 20; run++) {
    const server = new Server();
    const clients = Array.from({ length: 2 + (run % 4) }, (_, i) => ({
      c: new Client({ id: `c${i}`, version: 0 }), up: [], down: 0,
    }));
    const step = (k) => {
      const x = clients[rand(clients.length)];
      if (k < 30) {
        const n = codePoints(x.c.text);
        const pos = rand(n + 1);
        const del = pos < n && rand(3) === 0 ? 1 + rand(Math.min(3, n - pos)) : 0;
        const ins = del && rand(2) ? '' : alphabet[rand(alphabet.length)].repeat(1 + rand(2));
        const req = x.c.edit(edit(n, pos, del, ins));
        if (req) x.up.push(req);
      } else if (k < 60) {
        if (x.up.length) server.submit(x.c.id, x.up.shift());
      } else if (k < 97) {
        if (x.down < server.log.length) {
          const { send } = x.c.receive(server.log[x.down++]);
          if (send) x.up.push(send);
        }
      } else {
        // Reconnect: lost requests are sent again, the feed restarts.
        x.up = [];
        x.down = x.c.version;
        const req = x.c.resend();
        if (req) x.up.push(req);
      }
    };
    for (let i = 0; i < 600; i++) step(rand(100));
    for (let round = 0; clients.some((x) => x.c.state !== 'synchronized' || x.down < server.log.length); round++) {
      assert.ok(round < 1000, 'does not drain');
      for (const x of clients) {
        while (x.up.length) server.submit(x.c.id, x.up.shift());
        while (x.down < server.log.length) {
          const { send } = x.c.receive(server.log[x.down++]);
          if (send) x.up.push(send);
        }
      }
    }
    for (const x of clients) {
      assert.equal(x.c.text, server.text, `run ${run} client ${x.c.id}`);
      assert.equal(x.c.version, server.log.length);
    }
  }
});
