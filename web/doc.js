// doc.js: one editor's session of the room document over the `doc` data
// channel (signaling/PROTOCOL.md, "doc"): the client state machine of
// server-ordered operational transformation, with exactly-once resubmission
// after a reconnect or a reload, rebase after falling behind, and the
// placement of other people's cursors. No DOM: the editor (editor.js) and
// the tests drive it. An ES module; the operation model is ot.js.
//
// States (DocSession.state):
//   synchronized        nothing in flight
//   awaitingAck         one request sent, nothing else to send
//   awaitingWithBuffer  one request sent, more queued (local edits composed)
//
// Exactly once: every request has a sequence number that grows across
// sessions of this editor (kept with the client id in session storage), and
// a request in flight when the channel dropped is sent again unchanged with
// its original seq and base; the server commits it once and acknowledges
// it again if it had committed it already.

import { LEFT, RIGHT, Builder, apply, compose, transform, invert, transformPosition, diff, codePoints } from './ot.js';

/** How many committed operations are kept to move late cursors forward. */
const LOG_KEEP = 500;
/** How long a request may wait for its answer before the session resyncs. */
export const STALL_MS = 10000;
/** How soon local edits between requests are saved to session storage. */
const SAVE_MS = 300;
/** Bytes kept free in a submit message for everything but the inserted text. */
const ENVELOPE = 256;

const isInsert = (c) => typeof c === 'string';

/** Actions of ops that carry a note and leave the text as it is. */
const NOTE_ACTIONS = new Set(['comment', 'reply', 'resolve', 'reopen', 'suggest', 'reject']);

/**
 * moveRange moves a comment's range past op, as the server does: from
 * with inserts at it going before it, to with inserts going after it, so
 * text typed at either edge stays outside; a range deleted whole becomes
 * an orphaned position, moved as one.
 */
export function moveRange(from, to, orphaned, op) {
  if (orphaned) {
    const p = transformPosition(from, op, LEFT);
    return [p, p, true];
  }
  from = transformPosition(from, op, RIGHT);
  to = transformPosition(to, op, LEFT);
  if (from >= to) return [to, to, true];
  return [from, to, false];
}

/** A tiny event emitter. */
class Emitter {
  constructor() {
    this.handlers = new Map();
  }
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.handlers.get(name).delete(fn);
  }
  emit(name, value) {
    for (const fn of this.handlers.get(name) ?? []) fn(value);
  }
}

/** randomId returns a short random id, e.g. for a tab's client id. */
export function randomId(n = 10) {
  const abc = 'abcdefghijkmnopqrstuvwxyz23456789';
  const bytes = new Uint8Array(n);
  globalThis.crypto.getRandomValues(bytes);
  return [...bytes].map((b) => abc[b % abc.length]).join('');
}

/**
 * splitOp splits op (on a text) into [first, rest] so that first inserts at
 * most max code points and compose(first, rest) equals op; rest is null
 * when op already fits.
 */
export function splitOp(op, max) {
  const first = new Builder();
  let budget = max;
  let baseDone = 0; // base code points first has consumed
  let targetDone = 0; // code points first produces up to the cut
  let i = 0;
  let tail = null; // the part of a cut insert first does not take
  for (; i < op.length; i++) {
    const c = op[i];
    if (isInsert(c)) {
      const n = codePoints(c);
      if (n > budget) {
        const cps = [...c];
        first.insert(cps.slice(0, budget).join(''));
        targetDone += budget;
        tail = cps.slice(budget).join('');
        i++;
        break;
      }
      budget -= n;
      first.insert(c);
      targetDone += n;
    } else if (c > 0) {
      first.retain(c);
      baseDone += c;
      targetDone += c;
    } else {
      first.delete(-c);
      baseDone -= c;
    }
  }
  if (tail === null) return [op, null];
  let restBase = 0;
  const rest = new Builder().retain(targetDone).insert(tail);
  for (; i < op.length; i++) {
    const c = op[i];
    if (isInsert(c)) rest.insert(c);
    else if (c > 0) {
      rest.retain(c);
      restBase += c;
    } else {
      rest.delete(-c);
      restBase -= c;
    }
  }
  first.retain(restBase);
  return [first.done(), rest.done()];
}

/**
 * DocSession is one editor of the room document. The owner sends what
 * send(obj) gives on the doc channel, calls open() whenever the channel
 * opens (again), receive(obj) for every message on it, and edit(op) for
 * local edits of .text. Events (on(name, fn)):
 *
 *   ready    {text, version}        the first snapshot arrived: editing may start
 *   change   {op, origin}           .text changed by op (origin: remote, undo, redo,
 *                                   restore, resync); move the selection with it
 *   history  [{version, client, action, ref, time}]
 *   cursors  undefined              someone's cursor moved; call remoteCursors()
 *   notice   {code, message}        a refusal or a resync worth telling the person
 *   lost     {text, reason}         local edits the server could not take
 *                                   (a re-created document): shown, never dropped silently
 *   state    state                  synchronized / awaitingAck / awaitingWithBuffer
 */
export class DocSession extends Emitter {
  /**
   * @param {{identity: string, send: (msg: object) => void, storage?: Storage,
   *          storageKey?: string, maxMessage?: number, now?: () => number}} o
   */
  constructor({ identity, send, storage = null, storageKey = 'huddle.doc', maxMessage = 16384, now = Date.now }) {
    super();
    this.identity = identity;
    this.sendRaw = send;
    this.storage = storage;
    this.storageKey = storageKey;
    this.maxMessage = maxMessage;
    this.now = now;

    this.epoch = null;
    this.version = -1; // the server version we are at; -1 before the first snapshot
    this.serverText = ''; // the text of that version
    this.text = ''; // the local text: serverText + outstanding + queue
    this.seq = 0; // the last sequence number used
    this.outstanding = null; // {type, seq, base, op?, version?} in flight
    this.queue = []; // requests not sent yet: {type: 'submit', op} | {type: 'undo'|'redo'} | {type: 'restore', version}
    this.log = []; // the newest committed operations, {version, op}
    this.threads = []; // comment threads at .version: {id, from, to, quote, resolved, orphaned, comments}
    this.suggestions = []; // open suggestions at .version: {id, client, name, op, time}
    this.cursors = new Map(); // sid → a relayed cursor, moved to .version when read
    this.phase = 'closed'; // closed, hello, rejoin, resync, live
    this.resync = null; // {committed, dropped, answered} while resyncing
    this.snapshotVersion = -1; // the version of the last snapshot
    this.wasReady = false; // 'ready' was emitted
    this.sentAt = 0;
    this.errors = 0; // consecutive refusals of our own edits
    this.clientId = randomId();
    /** Counts of the rarer paths, for tests and the console. */
    this.stats = { resubmitted: 0, committedBefore: 0, rebased: 0, behind: 0, split: 0 };
    this.load();
  }

  /** me is this editor's client id in the engine. */
  get me() {
    return `${this.identity}/${this.clientId}`;
  }

  get state() {
    if (!this.outstanding) return this.queue.length ? 'awaitingWithBuffer' : 'synchronized';
    return this.queue.length ? 'awaitingWithBuffer' : 'awaitingAck';
  }

  /** ready is true once a snapshot arrived and the session is live. */
  get ready() {
    return this.phase === 'live';
  }

  // --- storage: the client id, the seq and pending requests survive a reload

  load() {
    if (!this.storage) return;
    let s;
    try {
      s = JSON.parse(this.storage.getItem(this.storageKey) ?? 'null');
    } catch {
      s = null;
    }
    if (!s || typeof s.clientId !== 'string' || !Number.isInteger(s.seq)) return;
    this.clientId = s.clientId;
    this.seq = s.seq;
    if (s.pending && typeof s.pending.serverText === 'string') {
      const p = s.pending;
      try {
        let text = p.serverText;
        if (p.outstanding?.op) text = apply(text, p.outstanding.op);
        for (const q of p.queue) if (q.op) text = apply(text, q.op);
        Object.assign(this, { epoch: p.epoch, version: p.version, serverText: p.serverText, text, outstanding: p.outstanding, queue: p.queue });
      } catch {
        // A corrupt record: start afresh with the same id and seq.
      }
    }
  }

  /**
   * saveSoon saves within SAVE_MS: local edits between two requests (which
   * are saved at once, with their seq) are not worth a storage write per
   * keystroke. The page calls save() itself when it goes away (pagehide).
   */
  saveSoon() {
    if (!this.storage || this.saveTimer) return;
    this.saveTimer = setTimeout(() => this.save(), SAVE_MS);
  }

  save() {
    clearTimeout(this.saveTimer);
    this.saveTimer = 0;
    if (!this.storage) return;
    const rec = { clientId: this.clientId, seq: this.seq };
    if (this.outstanding || this.queue.length) {
      rec.pending = { epoch: this.epoch, version: this.version, serverText: this.serverText, outstanding: this.outstanding, queue: this.queue };
    }
    try {
      this.storage.setItem(this.storageKey, JSON.stringify(rec));
    } catch {
      // Storage full or blocked: exactly-once still holds within this page.
    }
  }

  /**
   * fork gives this editor a fresh client id and forgets the pending
   * requests it loaded: for a duplicated tab, whose session storage (id,
   * seq, pending edits) is a copy of a tab that is still open and still
   * owns them. Call it before open().
   */
  fork() {
    Object.assign(this, { clientId: randomId(), seq: 0, epoch: null, version: -1, serverText: '', text: '', outstanding: null, queue: [] });
    this.save();
  }

  // --- the channel

  /** open starts (or restarts, after a reconnect) the session: it says hello. */
  open() {
    this.phase = this.version < 0 ? 'hello' : 'rejoin';
    this.resync = null;
    this.send({ type: 'hello', client: this.clientId });
  }

  /** closed notes that the channel closed; requests wait for open(). */
  closed() {
    this.phase = 'closed';
  }

  send(msg) {
    this.sentAt = this.now();
    this.sendRaw(msg);
  }

  /**
   * checkStalled resyncs when a request has waited more than STALL_MS for
   * its answer (the server stops the stream of a receiver that backs up).
   * The owner calls it now and then.
   */
  checkStalled() {
    const waiting = this.phase === 'live' ? !!this.outstanding : this.phase !== 'closed';
    if (waiting && this.now() - this.sentAt > STALL_MS) this.open();
  }

  /** receive handles one message from the doc channel. */
  receive(m) {
    if (!m || typeof m !== 'object') return;
    switch (this.phase) {
      case 'hello':
      case 'rejoin':
        if (m.type === 'doc_snapshot') this.onFirstSnapshot(m);
        else if (m.type === 'doc_error' && !m.seq) this.emit('notice', { code: m.code, message: m.message });
        return;
      case 'resync':
        this.onResyncMessage(m);
        return;
      case 'live':
        break;
      default:
        return;
    }
    switch (m.type) {
      case 'ack':
        this.onAck(m);
        break;
      case 'op':
        this.onOp(m);
        break;
      case 'doc_error':
        this.onError(m);
        break;
      case 'history':
        this.emit('history', Array.isArray(m.entries) ? m.entries : []);
        break;
      case 'doc_snapshot':
        // Only after a hello of ours, which sets the phase: ignore.
        break;
      default:
        this.emit('message', m); // messages other modules handle (comments)
    }
  }

  onFirstSnapshot(s) {
    if (this.phase === 'hello' && this.version < 0) {
      Object.assign(this, { epoch: s.epoch, version: s.version, serverText: s.text, text: s.text, log: [] });
      this.loadNotes(s);
      this.phase = 'live';
      this.wasReady = true;
      this.emit('ready', { text: s.text, version: s.version });
      this.flush();
      return;
    }
    if (s.epoch !== this.epoch) {
      // The document was re-created: never resubmit into it.
      const pending = this.outstanding || this.queue.length;
      const old = this.text;
      this.outstanding = null;
      this.queue = [];
      this.epoch = s.epoch;
      this.rebase(s, []);
      if (pending) this.emit('lost', { text: old, reason: 'the document was re-created; your unsaved text is shown here' });
      return;
    }
    this.snapshotVersion = s.version;
    if (this.outstanding) {
      // Send the request in flight again, unchanged; once it is answered
      // (committed before, committed now, or refused), ask for a snapshot,
      // which then includes it if it is committed. (Not both at once: a
      // hello restarts the stream and may drop the ack of a request the
      // resubmission commits.)
      this.phase = 'resync';
      this.resync = { committed: false, dropped: false, answered: false };
      this.stats.resubmitted++;
      this.send(this.request(this.outstanding));
      return;
    }
    this.rebase(s, this.queue);
  }

  onResyncMessage(m) {
    const o = this.outstanding;
    const r = this.resync;
    if (r.answered) {
      if (m.type === 'doc_snapshot') this.finishResync(m);
      return;
    }
    if (m.type === 'ack' && m.seq === o.seq) {
      r.committed = true;
      if (m.version <= this.snapshotVersion) this.stats.committedBefore++;
    } else if (m.type === 'op' && this.isMine(m)) {
      r.committed = true;
    } else if (m.type === 'doc_error' && m.seq === o.seq) {
      if (m.code === 'too_far_behind' && m.snapshot) {
        r.committed = (m.last_seq ?? 0) >= o.seq;
        this.finishResync(m.snapshot); // the stream restarts after it
        return;
      }
      r.dropped = true;
      if (m.code !== 'nothing_to_undo') this.emit('notice', { code: m.code, message: m.message });
    } else {
      return; // the stream after the first snapshot: not needed
    }
    r.answered = true;
    this.send({ type: 'hello', client: this.clientId });
  }

  // finishResync ends a resync with snapshot s, which contains the
  // outstanding request if r.committed.
  finishResync(s) {
    const o = this.outstanding;
    const r = this.resync;
    this.outstanding = null;
    this.resync = null;
    if (r.committed) {
      // Our request is in s: rebase what came after it. An edit of ours is
      // part of our local text; an undo or redo was not applied locally.
      if (o.type === 'submit') this.serverText = apply(this.serverText, o.op);
      this.rebase(s, this.queue);
    } else if (o.type === 'submit' && !r.dropped) {
      this.rebase(s, [{ type: 'submit', op: o.op }, ...this.queue]);
    } else {
      // Refused (or an undo that was not committed): its edit, if any, is
      // withdrawn from the local text; the rest is rebased.
      this.rebase(s, o.type === 'submit' ? this.withdraw(o.op) : this.queue);
    }
  }

  // withdraw returns the queue moved onto serverText without op, the
  // refused edit it was made after.
  withdraw(op) {
    let inv = invert(op, this.serverText);
    return this.queue.map((q) => {
      if (!q.op) return q;
      const [q2, inv2] = transform(q.op, inv, RIGHT);
      inv = inv2;
      return { type: 'submit', op: q2 };
    });
  }

  // localText is base with the ops of queue applied.
  localText(queue, base) {
    let t = base;
    for (const q of queue) if (q.op) t = apply(t, q.op);
    return t;
  }

  /**
   * rebase moves to snapshot s (of our epoch) with the pending requests
   * queue, made on this.serverText: their edits are transformed onto s by
   * the difference between the two texts, so nothing typed is lost.
   */
  rebase(s, queue) {
    this.stats.rebased++;
    const old = this.text;
    let d = diff(this.serverText, s.text);
    const moved = [];
    for (const q of queue) {
      if (!q.op) {
        moved.push(q);
        continue;
      }
      const [op, d2] = transform(q.op, d, RIGHT);
      d = d2;
      if (op.some((c) => typeof c !== 'number' || c < 0)) moved.push({ type: 'submit', op });
    }
    Object.assign(this, { version: s.version, serverText: s.text, outstanding: null, queue: moved, log: [] });
    this.loadNotes(s);
    this.text = this.localText(moved, s.text);
    this.phase = 'live';
    if (!this.wasReady) {
      // The first snapshot of this page (after a reload with pending edits).
      this.wasReady = true;
      this.emit('ready', { text: this.text, version: this.version });
    } else {
      const op = diff(old, this.text);
      if (op.some((c) => typeof c !== 'number' || c < 0)) this.emit('change', { op, origin: 'resync' });
    }
    this.flush();
  }

  onAck(m) {
    const o = this.outstanding;
    if (!o || m.seq !== o.seq) {
      if (m.version === this.version + 1) {
        // An ack of a version we did not send: another session uses our
        // client id (a duplicated tab). Take a fresh id and resync.
        this.clientId = randomId();
        this.seq = 0;
        this.emit('notice', { code: 'duplicate_client', message: 'this tab shared its editor id with another; it resynchronised' });
        this.open();
      }
      return;
    }
    if (m.version !== this.version + 1 || o.type !== 'submit') {
      this.open(); // a gap in the stream
      return;
    }
    this.commit(m.version, o.op);
    this.outstanding = null;
    this.errors = 0;
    this.afterAnswer();
  }

  onOp(m) {
    if (m.version <= this.version) return;
    if (m.version !== this.version + 1) {
      this.open(); // a gap: the server stopped our stream
      return;
    }
    let op = m.op;
    const o = this.outstanding;
    const mine = this.isMine(m);
    this.commit(m.version, op, m);
    if (mine) this.outstanding = null;
    if (this.outstanding?.op) [this.outstanding.op, op] = transform(this.outstanding.op, op, RIGHT);
    for (const q of this.queue) if (q.op) [q.op, op] = transform(q.op, op, RIGHT);
    this.text = apply(this.text, op);
    this.emit('change', { op, origin: m.action === 'edit' ? 'remote' : m.action, client: m.client, mine });
    if (mine) this.afterAnswer();
    else this.saveSoon();
  }

  // isMine reports whether op message m is the result of our request in
  // flight (undo, redo, restore, accept), which we did not apply ourselves.
  isMine(m) {
    const o = this.outstanding;
    if (!o || o.type === 'submit' || m.client !== this.me) return false;
    return m.seq !== undefined ? m.seq === o.seq : m.action === o.type;
  }

  // commit records version v whose server form is op; m, the op message,
  // may carry a comment or suggestion note.
  commit(v, op, m = null) {
    this.serverText = apply(this.serverText, op);
    this.version = v;
    this.log.push({ version: v, op });
    if (this.log.length > LOG_KEEP) this.log.splice(0, this.log.length - LOG_KEEP);
    const action = m?.action ?? 'edit';
    if (action === 'accept') this.applyNote(m);
    if (NOTE_ACTIONS.has(action)) this.applyNote(m);
    else if (this.moveNotes(op)) this.emit('notes');
  }

  // --- comments and suggestions (PROTOCOL.md, "Comments and suggestions")

  loadNotes(s) {
    this.threads = (Array.isArray(s.threads) ? s.threads : []).map((t) => ({ ...t, comments: [...(t.comments ?? [])] }));
    this.suggestions = (Array.isArray(s.suggestions) ? s.suggestions : []).map((x) => ({ ...x }));
    this.emit('notes');
  }

  // moveNotes moves the anchors and suggestions past op, committed after
  // them; it reports whether a thread became orphaned.
  moveNotes(op) {
    let orphaned = false;
    for (const t of this.threads) {
      const was = t.orphaned;
      [t.from, t.to, t.orphaned] = moveRange(t.from, t.to, t.orphaned, op);
      if (t.orphaned && !was) orphaned = true;
    }
    for (const x of this.suggestions) x.op = transform(x.op, op, RIGHT)[0];
    return orphaned;
  }

  // applyNote records the effect of a note op (or an accept) m.
  applyNote(m) {
    const n = m.note ?? {};
    const time = n.time ?? 0;
    const thread = (id) => this.threads.find((t) => t.id === id);
    switch (m.action) {
      case 'comment':
        this.threads.push({
          id: n.thread ?? m.version, from: n.from, to: n.to, quote: n.quote ?? '', resolved: false, orphaned: n.from >= n.to,
          comments: [{ client: m.client, name: n.name, text: n.text, time }],
        });
        break;
      case 'reply':
        thread(n.thread)?.comments.push({ client: m.client, name: n.name, text: n.text, time });
        break;
      case 'resolve':
      case 'reopen': {
        const t = thread(n.thread);
        if (t) t.resolved = m.action === 'resolve';
        break;
      }
      case 'suggest':
        this.suggestions.push({ id: n.suggestion ?? m.version, client: m.client, name: n.name, op: n.op, time });
        break;
      case 'accept':
      case 'reject':
        this.suggestions = this.suggestions.filter((x) => x.id !== n.suggestion);
        break;
      default:
    }
    this.emit('notes');
  }

  /** serverPosition maps a position in .text to the server's version. */
  serverPosition(pos, side = LEFT) {
    const p = this.pendingOp();
    return p ? transformPosition(pos, invert(p, this.serverText), side) : pos;
  }

  /**
   * notes returns the threads and open suggestions placed in .text (past
   * our own pending edits): {threads, suggestions}, suggestion ops on .text.
   */
  notes() {
    const p = this.pendingOp();
    const threads = this.threads.map((t) => {
      if (!p) return { ...t };
      const [from, to, orphaned] = moveRange(t.from, t.to, t.orphaned, p);
      return { ...t, from, to, orphaned };
    });
    const suggestions = this.suggestions.map((x) => (p ? { ...x, op: transform(x.op, p, RIGHT)[0] } : { ...x }));
    return { threads, suggestions };
  }

  // sendNote sends a comment or suggestion request, which is not
  // deduplicated: only when live.
  sendNote(m) {
    if (this.phase !== 'live') {
      this.emit('notice', { code: 'not_connected', message: 'not connected to the document; try again in a moment' });
      return false;
    }
    this.send(m);
    return true;
  }

  /** comment opens a thread on from..to (code points in .text). */
  comment(from, to, text) {
    const f = this.serverPosition(Math.min(from, to), RIGHT);
    const t = this.serverPosition(Math.max(from, to), LEFT);
    if (f >= t) {
      this.emit('notice', { code: 'out_of_range', message: 'select some saved text to comment on' });
      return false;
    }
    return this.sendNote({ type: 'comment', base: this.version, from: f, to: t, text });
  }

  reply(thread, text) {
    return this.sendNote({ type: 'reply', thread, text });
  }

  resolve(thread, resolved = true) {
    return this.sendNote({ type: resolved ? 'resolve' : 'reopen', thread });
  }

  /** suggest proposes op (on .text) without applying it. */
  suggest(op) {
    const p = this.pendingOp();
    let o = op;
    if (p) o = transform(op, invert(p, this.serverText), RIGHT)[0];
    if (!o.some((c) => typeof c !== 'number' || c < 0)) return false;
    return this.sendNote({ type: 'suggest', base: this.version, op: o });
  }

  /** accept applies a suggestion (a request with a seq, like undo). */
  accept(suggestion) {
    this.queue.push({ type: 'accept', suggestion });
    this.flush();
  }

  reject(suggestion) {
    return this.sendNote({ type: 'reject', suggestion });
  }

  onError(m) {
    const o = this.outstanding;
    if (m.code === 'too_far_behind' && m.snapshot) {
      this.stats.behind++;
      const committed = o && (m.last_seq ?? 0) >= o.seq;
      this.resync = { committed: !!committed, dropped: false };
      if (o) this.finishResync(m.snapshot);
      else this.rebase(m.snapshot, this.queue);
      return;
    }
    if (!o || m.seq !== o.seq) {
      this.emit('notice', { code: m.code, message: m.message });
      return;
    }
    this.outstanding = null;
    if (m.code === 'nothing_to_undo') {
      this.emit('notice', { code: m.code, message: o.type === 'redo' ? 'Nothing to redo' : 'Nothing to undo' });
      this.afterAnswer();
      return;
    }
    this.emit('notice', { code: m.code, message: m.message });
    if (o.type !== 'submit') {
      this.afterAnswer();
      return;
    }
    // Our edit was refused: withdraw it (and what was typed after it, which
    // builds on it) from the local text. Keep what still applies.
    if (m.code !== 'permission_denied' && ++this.errors < 3) {
      // Our state may be off: resync, resubmitting the edit onto a snapshot.
      this.queue.unshift({ type: 'submit', op: o.op });
      this.outstanding = null;
      this.phase = 'rejoin';
      this.send({ type: 'hello', client: this.clientId });
      return;
    }
    const old = this.text;
    this.queue = this.queue.filter((q) => !q.op);
    this.text = this.serverText;
    this.emit('change', { op: diff(old, this.text), origin: 'resync' });
    this.emit('lost', { text: old, reason: m.message });
    this.afterAnswer();
  }

  afterAnswer() {
    this.flush();
    this.saveSoon();
    this.emit('state', this.state);
  }

  // --- requests

  request(o) {
    const msg = { type: o.type, seq: o.seq };
    if (o.type === 'submit') Object.assign(msg, { base: o.base, op: o.op });
    if (o.type === 'restore') msg.version = o.version;
    if (o.type === 'accept') msg.suggestion = o.suggestion;
    return msg;
  }

  // flush sends the next queued request when nothing is in flight.
  flush() {
    if (this.outstanding || !this.queue.length || this.phase !== 'live') {
      this.saveSoon();
      return;
    }
    let next = this.queue.shift();
    if (next.op) {
      // Keep a message under the channel's limit: a large paste goes in parts.
      const max = Math.max(64, Math.floor((this.maxMessage - ENVELOPE) / 6));
      const [first, rest] = splitOp(next.op, max);
      if (rest) {
        this.stats.split++;
        next = { type: 'submit', op: first };
        this.queue.unshift({ type: 'submit', op: rest });
      }
    }
    this.outstanding = { ...next, seq: ++this.seq, base: this.version };
    this.save();
    this.send(this.request(this.outstanding));
    this.emit('state', this.state);
  }

  /** edit applies a local op to .text and sends or queues it. */
  edit(op) {
    if (!op.some((c) => typeof c !== 'number' || c < 0)) return; // changes nothing
    this.text = apply(this.text, op);
    const last = this.queue[this.queue.length - 1];
    if (last && last.type === 'submit') last.op = compose(last.op, op);
    else this.queue.push({ type: 'submit', op });
    this.flush();
    this.emit('state', this.state);
  }

  /** undo asks the server to revert this editor's newest operation. */
  undo() {
    this.queue.push({ type: 'undo' });
    this.flush();
  }

  /** redo asks the server to revert this editor's newest undo. */
  redo() {
    this.queue.push({ type: 'redo' });
    this.flush();
  }

  /** restore brings back the text of a past version, as a new version. */
  restore(version) {
    this.queue.push({ type: 'restore', version });
    this.flush();
  }

  /** requestHistory asks for versions from..to (default: the last 100). */
  requestHistory(from = 0, to = 0) {
    const m = { type: 'history' };
    if (from) m.from = from;
    if (to) m.to = to;
    if (this.phase !== 'closed') this.sendRaw(m);
  }

  // --- cursors

  /** pendingOp returns our unacknowledged edits as one op on serverText, or null. */
  pendingOp() {
    let p = null;
    for (const q of [this.outstanding, ...this.queue]) {
      if (q?.op) p = p ? compose(p, q.op) : q.op;
    }
    return p;
  }

  /**
   * cursorMessage returns what to send on the cursor channel for a local
   * selection (code points in .text): the same selection in the server's
   * version, or null before the first snapshot.
   */
  cursorMessage(anchor, head) {
    if (this.version < 0) return null;
    const p = this.pendingOp();
    if (p) {
      const inv = invert(p, this.serverText);
      anchor = transformPosition(anchor, inv, LEFT);
      head = transformPosition(head, inv, LEFT);
    }
    return { version: this.version, anchor, head };
  }

  /** receiveCursor stores a relayed cursor (from the cursor channel). */
  receiveCursor(c) {
    if (!c || typeof c.sid !== 'string' || !Number.isInteger(c.anchor) || !Number.isInteger(c.head) || !Number.isInteger(c.version)) return;
    const have = this.cursors.get(c.sid);
    if (have && have.sent > c.version) return; // an older one, overtaken (the channel is unordered)
    this.cursors.set(c.sid, { ...c, sent: c.version, at: this.now() });
    this.emit('cursors');
  }

  /** dropCursor forgets the cursor of a participant who left. */
  dropCursor(sid) {
    if (this.cursors.delete(sid)) this.emit('cursors');
  }

  /**
   * remoteCursors returns the others' cursors placed in .text (code
   * points): [{sid, identity, name, color, anchor, head}]. A cursor of a
   * version we do not have yet is placed as it is, clamped.
   */
  remoteCursors() {
    const out = [];
    const p = this.pendingOp();
    const n = codePoints(this.text);
    for (const c of this.cursors.values()) {
      if (c.version < this.version) {
        const first = this.log.length ? this.log[0].version : this.version + 1;
        if (c.version + 1 >= first) {
          for (const e of this.log) {
            if (e.version <= c.version) continue;
            try {
              c.anchor = transformPosition(c.anchor, e.op, RIGHT);
              c.head = transformPosition(c.head, e.op, RIGHT);
            } catch {
              break;
            }
          }
        }
        c.version = this.version;
      }
      let { anchor, head } = c;
      if (p && c.version === this.version) {
        try {
          anchor = transformPosition(anchor, p, LEFT);
          head = transformPosition(head, p, LEFT);
        } catch {
          // out of range: clamped below
        }
      }
      anchor = Math.max(0, Math.min(n, anchor));
      head = Math.max(0, Math.min(n, head));
      out.push({ sid: c.sid, identity: c.identity, name: c.name, color: c.color, anchor, head });
    }
    return out;
  }
}
