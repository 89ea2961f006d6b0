// ot.js: the browser's side of Huddle's collaborative documents. The same
// operation model as the Go engine (rooms/doc), checked against the same
// conformance vectors (rooms/doc/testdata), plus the client state machine.
// An ES module with no dependencies.
//
// An operation is an array of components over the whole text:
//   a positive integer retains that many code points,
//   a string inserts it,
//   a negative integer deletes that many code points.
// e.g. [5, "abc", -3, 12]. Positions and lengths count Unicode code points,
// not UTF-16 units: "😀" is 1 long. The browser's own offsets (textarea
// selectionStart, String.length) are UTF-16; convert them at the edge with
// toCodePoints / toUTF16. A valid op is normalized: no empty components, no
// two adjacent components of the same kind, and an insert never directly
// follows a delete. JSON.stringify(op) is the stable wire form.

/** The largest count or length: what JSON numbers carry exactly. */
const MAX_COUNT = Number.MAX_SAFE_INTEGER;

/** Tie-break sides (see transform and transformPosition). */
export const LEFT = 'left';
export const RIGHT = 'right';

/**
 * A refused operation. kind is one of the stable codes shared with Go:
 * malformed, zero_length, not_normalized, invalid_utf8, length_mismatch,
 * out_of_range.
 */
export class OpError extends Error {
  constructor(kind, message, index = -1) {
    super(`${kind}${index >= 0 ? ` at component ${index}` : ''}: ${message}`);
    this.name = 'OpError';
    this.kind = kind;
    this.index = index;
  }
}

const isRetain = (c) => typeof c === 'number' && c > 0;
const isDelete = (c) => typeof c === 'number' && c < 0;
const isInsert = (c) => typeof c === 'string';

/** Surrogate pairs, and any surrogate (for the fast paths below). */
const PAIRS = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g;
const SURROGATE = /[\uD800-\uDFFF]/g;

/** codePoints returns the length of s in code points. */
export function codePoints(s) {
  // An unpaired surrogate counts as one code point, a pair as one.
  const pairs = s.match(PAIRS);
  return s.length - (pairs ? pairs.length : 0);
}

/** wellFormed reports whether s has no unpaired surrogate. */
function wellFormed(s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c > 0xdbff || i + 1 >= s.length) return false;
    const d = s.charCodeAt(i + 1);
    if (d < 0xdc00 || d > 0xdfff) return false;
    i++;
  }
  return true;
}

/**
 * advance returns the UTF-16 index n code points after index i in s, or -1
 * if s ends first.
 */
function advance(s, i, n) {
  while (n > 0) {
    // Up to the next surrogate, code points are UTF-16 units.
    SURROGATE.lastIndex = i;
    const m = SURROGATE.exec(s);
    const next = m ? m.index : s.length;
    if (next - i >= n) return i + n;
    n -= next - i;
    i = next;
    if (i >= s.length) return -1;
    const c = s.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
    n--;
  }
  return i;
}

/** toUTF16 converts a code point offset in text to a UTF-16 offset. */
export function toUTF16(text, cp) {
  const i = advance(text, 0, cp);
  if (cp < 0 || i < 0) throw new OpError('out_of_range', `code point ${cp} outside a text of ${codePoints(text)}`);
  return i;
}

/**
 * toCodePoints converts a UTF-16 offset in text (as textarea.selectionStart
 * gives) to a code point offset. An offset inside a surrogate pair counts
 * the whole pair as before it.
 */
export function toCodePoints(text, utf16) {
  if (utf16 < 0 || utf16 > text.length) throw new OpError('out_of_range', `offset ${utf16} outside a text of ${text.length} UTF-16 units`);
  return codePoints(text.slice(0, utf16));
}

/**
 * validate checks a parsed op and returns its base and target lengths, or
 * throws an OpError. Order, as in Go: the whole op must be an array of
 * integers and strings (malformed); then each component in order must not
 * be empty (zero_length), must be well-formed text (invalid_utf8), and must
 * follow its neighbour in normal form (not_normalized).
 */
export function validate(op) {
  if (!Array.isArray(op)) throw new OpError('malformed', 'an operation is an array');
  op.forEach((c, i) => {
    if (typeof c === 'string') return;
    if (typeof c !== 'number' || !Number.isInteger(c) || Math.abs(c) > MAX_COUNT) {
      throw new OpError('malformed', `${JSON.stringify(c)} is neither an integer of at most 2^53-1 nor a string`, i);
    }
  });
  let base = 0;
  let target = 0;
  let prev = '';
  op.forEach((c, i) => {
    if (c === 0 || c === '') throw new OpError('zero_length', 'empty component', i);
    let kind;
    if (isInsert(c)) {
      if (!wellFormed(c)) throw new OpError('invalid_utf8', 'inserted text has an unpaired surrogate', i);
      kind = 'i';
      target += codePoints(c);
    } else if (c > 0) {
      kind = 'r';
      base += c;
      target += c;
    } else {
      kind = 'd';
      base -= c;
    }
    if (base > MAX_COUNT || target > MAX_COUNT) throw new OpError('malformed', 'operation longer than 2^53-1 code points', i);
    if (kind === prev) throw new OpError('not_normalized', 'two adjacent components of the same kind', i);
    if (prev === 'd' && kind === 'i') throw new OpError('not_normalized', 'insert directly after a delete (it must come first)', i);
    prev = kind;
  });
  return { base, target };
}

/** parseOp parses the JSON form of an op and validates it. */
export function parseOp(json) {
  let op;
  try {
    op = JSON.parse(json);
  } catch (e) {
    throw new OpError('malformed', e.message);
  }
  validate(op);
  return op;
}

/**
 * parseOpBytes parses an op from UTF-8 bytes (a data channel message);
 * invalid UTF-8 is refused as invalid_utf8.
 */
export function parseOpBytes(bytes) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new OpError('invalid_utf8', 'message is not valid UTF-8');
  }
  return parseOp(text);
}

/** baseLength returns the length in code points of the text op applies to. */
export function baseLength(op) {
  return validate(op).base;
}

/** targetLength returns the length in code points of the text op produces. */
export function targetLength(op) {
  return validate(op).target;
}

/**
 * Builder builds a normalized op: adjacent components of the same kind
 * merge, empty ones vanish, an insert goes before a delete it follows.
 */
export class Builder {
  constructor() {
    this.op = [];
  }
  retain(n) {
    if (n <= 0) return this;
    const l = this.op.length;
    if (l > 0 && isRetain(this.op[l - 1])) this.op[l - 1] += n;
    else this.op.push(n);
    return this;
  }
  insert(s) {
    if (s === '') return this;
    const op = this.op;
    const l = op.length;
    if (l > 0 && isInsert(op[l - 1])) op[l - 1] += s;
    else if (l > 0 && isDelete(op[l - 1])) {
      if (l > 1 && isInsert(op[l - 2])) op[l - 2] += s;
      else {
        op.push(op[l - 1]);
        op[l - 1] = s;
      }
    } else op.push(s);
    return this;
  }
  delete(n) {
    if (n <= 0) return this;
    const l = this.op.length;
    if (l > 0 && isDelete(this.op[l - 1])) this.op[l - 1] -= n;
    else this.op.push(-n);
    return this;
  }
  done() {
    return this.op;
  }
}

/**
 * edit returns the op that, on a text of size code points, deletes del code
 * points at pos and inserts ins there.
 */
export function edit(size, pos, del, ins) {
  if (pos < 0 || del < 0 || pos > size || del > size - pos) {
    throw new OpError('out_of_range', `edit at ${pos} deleting ${del} in a text of ${size}`);
  }
  if (!wellFormed(ins)) throw new OpError('invalid_utf8', 'inserted text has an unpaired surrogate');
  return new Builder().retain(pos).insert(ins).delete(del).retain(size - pos - del).done();
}

/** apply applies op to text and returns the new text, or throws an OpError. */
export function apply(text, op) {
  const { base } = validate(op);
  const n = codePoints(text);
  if (base !== n) throw new OpError('length_mismatch', `operation spans ${base} code points, text has ${n}`);
  const parts = [];
  let i = 0;
  for (const c of op) {
    if (isInsert(c)) parts.push(c);
    else if (c > 0) {
      const j = advance(text, i, c);
      parts.push(text.slice(i, j));
      i = j;
    } else i = advance(text, i, -c);
  }
  return parts.join('');
}

// Reader walks an op, taking parts of components (in code points).
class Reader {
  constructor(op) {
    this.op = op;
    this.i = 0;
    this.load();
  }
  load() {
    const c = this.op[this.i];
    this.text = isInsert(c) ? c : '';
    this.rem = c === undefined ? 0 : isInsert(c) ? codePoints(c) : Math.abs(c);
  }
  kind() {
    const c = this.op[this.i];
    if (c === undefined) return '';
    return isInsert(c) ? 'i' : c > 0 ? 'r' : 'd';
  }
  // take consumes n code points and returns the inserted text taken, if any.
  take(n) {
    let s = '';
    if (isInsert(this.op[this.i])) {
      if (n === this.rem) s = this.text;
      else {
        const j = advance(this.text, 0, n);
        s = this.text.slice(0, j);
        this.text = this.text.slice(j);
      }
    }
    this.rem -= n;
    if (this.rem === 0) {
      this.i++;
      this.load();
    }
    return s;
  }
  takeAll() {
    const n = this.rem;
    return [n, this.take(n)];
  }
}

/** compose returns one op equal to a followed by b. */
export function compose(a, b) {
  const { target } = validate(a);
  const { base } = validate(b);
  if (target !== base) throw new OpError('length_mismatch', `compose: first produces ${target} code points, second spans ${base}`);
  const out = new Builder();
  const ra = new Reader(a);
  const rb = new Reader(b);
  for (;;) {
    const ka = ra.kind();
    const kb = rb.kind();
    if (ka === 'd') {
      out.delete(ra.takeAll()[0]);
      continue;
    }
    if (kb === 'i') {
      out.insert(rb.takeAll()[1]);
      continue;
    }
    if (ka === '' || kb === '') break;
    const n = Math.min(ra.rem, rb.rem);
    if (ka === 'r' && kb === 'r') {
      ra.take(n);
      rb.take(n);
      out.retain(n);
    } else if (ka === 'r' && kb === 'd') {
      ra.take(n);
      rb.take(n);
      out.delete(n);
    } else if (ka === 'i' && kb === 'r') {
      out.insert(ra.take(n));
      rb.take(n);
    } else {
      ra.take(n);
      rb.take(n);
    }
  }
  return out.done();
}

/**
 * transform takes ops a and b made concurrently on the same text and
 * returns [a2, b2] with apply(apply(s, a), b2) === apply(apply(s, b), a2).
 * side breaks the tie between inserts at the same position: LEFT puts a's
 * first, RIGHT puts b's first.
 */
export function transform(a, b, side) {
  const la = validate(a).base;
  const lb = validate(b).base;
  if (la !== lb) throw new OpError('length_mismatch', `transform: operations span ${la} and ${lb} code points`);
  const oa = new Builder();
  const ob = new Builder();
  const ra = new Reader(a);
  const rb = new Reader(b);
  for (;;) {
    const ka = ra.kind();
    const kb = rb.kind();
    if (ka === 'i' && (side === LEFT || kb !== 'i')) {
      const [n, s] = ra.takeAll();
      oa.insert(s);
      ob.retain(n);
      continue;
    }
    if (kb === 'i') {
      const [n, s] = rb.takeAll();
      oa.retain(n);
      ob.insert(s);
      continue;
    }
    if (ka === '' || kb === '') break;
    const n = Math.min(ra.rem, rb.rem);
    ra.take(n);
    rb.take(n);
    if (ka === 'r' && kb === 'r') {
      oa.retain(n);
      ob.retain(n);
    } else if (ka === 'd' && kb === 'r') oa.delete(n);
    else if (ka === 'r' && kb === 'd') ob.delete(n);
  }
  return [oa.done(), ob.done()];
}

/** invert returns the op that undoes op on text (the text op applied to). */
export function invert(op, text) {
  const { base } = validate(op);
  const n = codePoints(text);
  if (base !== n) throw new OpError('length_mismatch', `operation spans ${base} code points, text has ${n}`);
  const out = new Builder();
  let i = 0;
  for (const c of op) {
    if (isInsert(c)) out.delete(codePoints(c));
    else if (c > 0) {
      out.retain(c);
      i = advance(text, i, c);
    } else {
      const j = advance(text, i, -c);
      out.insert(text.slice(i, j));
      i = j;
    }
  }
  return out.done();
}

/**
 * transformPosition returns where code point position pos of the text op
 * applies to ends up. A position inside deleted text moves to where the
 * deletion was; at an insert, LEFT stays before it and RIGHT moves after.
 */
export function transformPosition(pos, op, side) {
  const { base } = validate(op);
  if (!Number.isInteger(pos) || pos < 0 || pos > base) {
    throw new OpError('out_of_range', `position ${pos} outside a text of ${base} code points`);
  }
  let out = pos;
  let at = 0;
  for (const c of op) {
    if (at > pos) break;
    if (isInsert(c)) {
      if (at < pos || side === RIGHT) out += codePoints(c);
    } else if (c > 0) at += c;
    else {
      if (at < pos) out -= Math.min(-c, pos - at);
      at -= c;
    }
  }
  return out;
}

/** transformSelection transforms {anchor, head} like transformPosition. */
export function transformSelection(sel, op, side) {
  return { anchor: transformPosition(sel.anchor, op, side), head: transformPosition(sel.head, op, side) };
}

/**
 * diff returns an op turning text a into text b: the common prefix and
 * suffix are kept, the middle replaced. A textarea editor calls it on each
 * input event: client.edit(diff(client.text, textarea.value)).
 */
export function diff(a, b) {
  let p = 0;
  const m = Math.min(a.length, b.length);
  while (p < m && a.charCodeAt(p) === b.charCodeAt(p)) p++;
  // Do not split a surrogate pair.
  if (p > 0 && (a.charCodeAt(p - 1) & 0xfc00) === 0xd800) p--;
  let s = 0;
  while (s < a.length - p && s < b.length - p && a.charCodeAt(a.length - 1 - s) === b.charCodeAt(b.length - 1 - s)) s++;
  if (s > 0 && (a.charCodeAt(a.length - s) & 0xfc00) === 0xdc00) s--;
  return new Builder()
    .retain(codePoints(a.slice(0, p)))
    .insert(b.slice(p, b.length - s))
    .delete(codePoints(a.slice(p, a.length - s)))
    .retain(codePoints(a.slice(a.length - s)))
    .done();
}

/**
 * Client is the state machine of one editor, the model of Google Docs and
 * ot.js: it has at most one request in flight and buffers later local
 * edits, composed, until the ack. It works on an abstract feed of entries;
 * the call page uses doc.js's DocSession, the same machine over the real
 * doc channel messages (ack, op, snapshots, reconnects, comments).
 *
 *   synchronized        nothing in flight
 *   awaitingAck         one request sent (outstanding)
 *   awaitingWithBuffer  one request sent, local edits buffered
 *
 * Requests are {seq, base, op} for edits and {seq, base, action} for undo
 * and redo; seq grows per request and is sent again unchanged on a resend,
 * so that the server applies each request once. The server's feed brings
 * entries {v, c, s, a, o} (version, client id, seq, action, op) in version
 * order: the entry of our own edit is its ack; any other entry is an op to
 * transform and apply (including the result of our own undo or redo).
 */
export class Client {
  /** @param {{id: string, version: number, text?: string, seq?: number}} init */
  constructor({ id, version, text = '', seq = 0 }) {
    this.id = id;
    this.version = version;
    this.text = text;
    this.seq = seq;
    this.outstanding = null; // the request in flight
    this.buffer = null; // local edits not sent yet, composed
  }

  get state() {
    if (!this.outstanding) return 'synchronized';
    return this.buffer ? 'awaitingWithBuffer' : 'awaitingAck';
  }

  #send(req) {
    this.outstanding = { seq: ++this.seq, base: this.version, ...req };
    return { ...this.outstanding };
  }

  /** edit applies a local op to text; it returns a request to send, or null. */
  edit(op) {
    this.text = apply(this.text, op);
    if (!this.outstanding) return this.#send({ op });
    this.buffer = this.buffer ? compose(this.buffer, op) : op;
    return null;
  }

  /** undo asks the server to undo our newest edit; only when synchronized. */
  undo() {
    return this.outstanding ? null : this.#send({ action: 'undo' });
  }

  /** redo asks the server to redo our newest undo; only when synchronized. */
  redo() {
    return this.outstanding ? null : this.#send({ action: 'redo' });
  }

  #flush() {
    if (!this.buffer) return null;
    const op = this.buffer;
    this.buffer = null;
    return this.#send({ op });
  }

  /**
   * receive handles the next entry of the server's feed. It returns
   * {op, send}: op is what was applied to text (null for an ack; transform
   * the editor's selection with it), send the next request or null.
   */
  receive(entry) {
    const { v, c, s, a = 'edit' } = entry;
    if (v <= this.version) return { op: null, send: null }; // already have it
    if (v !== this.version + 1) throw new Error(`at version ${this.version}, got version ${v}`);
    const mine = this.outstanding && c === this.id && s === this.outstanding.seq;
    if (mine && a === 'edit') {
      this.version = v;
      this.outstanding = null;
      return { op: null, send: this.#flush() };
    }
    if (mine) this.outstanding = null; // our undo or redo, not applied here yet
    let op = entry.o;
    if (this.outstanding && this.outstanding.op) [this.outstanding.op, op] = transform(this.outstanding.op, op, RIGHT);
    if (this.buffer) [this.buffer, op] = transform(this.buffer, op, RIGHT);
    this.text = apply(this.text, op);
    this.version = v;
    return { op, send: mine ? this.#flush() : null };
  }

  /** resend returns the request in flight again, after a reconnect. */
  resend() {
    if (!this.outstanding) return null;
    return { ...this.outstanding, base: this.version };
  }

  /**
   * refused handles an error reply to the request in flight (kind as the
   * server sent it). It returns the next request to send, or null. For
   * too_far_behind call rebase instead; any other kind means this client's
   * state is wrong: rebase on a fresh snapshot.
   */
  refused(kind) {
    if (kind === 'nothing_to_undo' && this.outstanding && !this.outstanding.op) {
      this.outstanding = null;
      return this.#flush();
    }
    return null;
  }

  /**
   * rebase starts again from a snapshot after the server said too_far_behind
   * ({version, text} and lastSeq, the newest of our requests it committed).
   * It returns the local edits that are not in the snapshot, which cannot be
   * transformed any more: show them to the user, never drop them silently.
   */
  rebase({ version, text, lastSeq }) {
    const lost = [];
    if (this.outstanding && this.outstanding.op && this.outstanding.seq > lastSeq) lost.push(this.outstanding.op);
    if (this.buffer) lost.push(this.buffer);
    Object.assign(this, { version, text, outstanding: null, buffer: null, seq: Math.max(this.seq, lastSeq) });
    return { lost };
  }

  /**
   * remoteSelection places a selection another client sent for the server
   * version we are at into our text (past our pending edits). It returns
   * null for a selection of another version: wait for the next one.
   */
  remoteSelection(sel, version) {
    if (version !== this.version) return null;
    let out = sel;
    if (this.outstanding && this.outstanding.op) out = transformSelection(out, this.outstanding.op, LEFT);
    if (this.buffer) out = transformSelection(out, this.buffer, LEFT);
    return out;
  }

  /**
   * localSelection returns our selection as {selection, version} to send
   * to others, or null while edits are pending (they do not know that text).
   */
  localSelection(sel) {
    return this.outstanding || this.buffer ? null : { selection: sel, version: this.version };
  }
}
