// editor.js: the shared notes beside the call. A textarea edited by
// everyone in the room (doc.js keeps it in step with the server), other
// people's cursors and selections drawn in their colours on an overlay that
// mirrors the textarea's text layout, undo/redo of one's own edits, and the
// history of versions with restore. The call page mounts it with
// mountDoc(client, {toast}); the returned object is window.huddle.doc.

import { RIGHT, diff, compose, transform, transformPosition, toUTF16, toCodePoints } from './ot.js';
import { DocSession } from './doc.js';
import { describe, mountComments } from './comments.js';

const $ = (id) => document.getElementById(id);

/** How often one's cursor is sent again when it does not move (ms). */
const CURSOR_HEARTBEAT = 3000;
/** The least time between two cursor messages (ms). */
const CURSOR_MIN_GAP = 40;

/**
 * claimId resolves once session.clientId is known to be this tab's alone:
 * it asks the other tabs of this origin over a BroadcastChannel, answers
 * their questions from then on, and forks the session when another tab
 * already uses the id (a duplicated tab).
 */
function claimId(session) {
  if (typeof BroadcastChannel !== 'function') return Promise.resolve();
  const bc = new BroadcastChannel('huddle.doc.ids');
  bc.onmessage = (ev) => {
    if (ev.data?.type === 'who' && ev.data.id === session.clientId) bc.postMessage({ type: 'mine', id: ev.data.id });
  };
  return new Promise((resolve) => {
    const asked = session.clientId;
    const taken = (ev) => {
      if (ev.data?.type === 'mine' && ev.data.id === asked && session.clientId === asked) session.fork();
    };
    bc.addEventListener('message', taken);
    bc.postMessage({ type: 'who', id: asked });
    setTimeout(() => {
      bc.removeEventListener('message', taken);
      resolve();
    }, 200);
  });
}

/**
 * setupDocPanel wires the Notes button that shows and hides the panel
 * (shown at first on wide screens; the choice is remembered).
 */
export function setupDocPanel() {
  const panel = $('doc');
  const btn = $('notes');
  let open;
  try {
    open = localStorage.getItem('huddle.notes');
  } catch {
    open = null;
  }
  const show = (on) => {
    panel.hidden = !on;
    $('stage').classList.toggle('with-doc', on);
    btn.setAttribute('aria-pressed', String(on));
    btn.title = on ? 'Hide the shared notes' : 'Show the shared notes';
  };
  show(open === null ? window.matchMedia('(min-width: 900px)').matches : open === '1');
  btn.addEventListener('click', () => {
    const on = panel.hidden;
    show(on);
    try {
      localStorage.setItem('huddle.notes', on ? '1' : '0');
    } catch {
      // not remembered
    }
    if (on) $('doc-text').focus();
  });
}

/**
 * mountDoc connects the editor in #doc to the room client. It returns a
 * small API for tests and the console.
 * @param {import('./huddle.js').Client} client
 */
export function mountDoc(client, { toast = () => {} } = {}) {
  const ta = $('doc-text');
  const overlay = $('doc-overlay');
  const grants = client.you?.grants ?? [];
  const canEdit = grants.includes('edit');
  const canSuggest = canEdit || grants.includes('suggest');
  let storage = null;
  try {
    storage = window.sessionStorage;
  } catch {
    // No session storage (a sandboxed frame): exactly-once within the page only.
  }
  const session = new DocSession({
    identity: client.you?.identity ?? '',
    storage,
    storageKey: `huddle.doc:${client.roomName ?? ''}`,
    maxMessage: client.maxDataMessage,
    send: (m) => {
      const ch = client.channels.get('doc');
      if (ch && ch.readyState === 'open') ch.send(JSON.stringify(m));
    },
  });

  // --- the channels ------------------------------------------------------

  // A duplicated tab starts with a copy of its original's session storage,
  // so the same editor id: ask the other tabs first, and fork if taken.
  const claimed = claimId(session);

  const attach = (ch) => {
    if (ch.label === 'doc') {
      ch.addEventListener('message', (ev) => {
        let m;
        try {
          m = JSON.parse(typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data));
        } catch {
          return;
        }
        session.receive(m);
      });
      const open = () => claimed.then(() => ch.readyState === 'open' && session.open());
      ch.addEventListener('open', open);
      ch.addEventListener('close', () => {
        session.closed();
        setStatus();
      });
      if (ch.readyState === 'open') open();
    } else if (ch.label === 'cursor') {
      ch.addEventListener('message', (ev) => {
        try {
          session.receiveCursor(JSON.parse(typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data)));
        } catch {
          // The cursor channel is lossy anyway.
        }
      });
      ch.addEventListener('open', () => sendCursor(true));
    }
  };
  for (const ch of client.channels.values()) attach(ch);
  client.on('datachannel', attach);
  client.on('participant_left', (p) => session.dropCursor(p.sid));
  // Edits typed since the last request are saved when the page goes away.
  window.addEventListener('pagehide', () => session.save());
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') session.save();
  });
  client.on('participant_updated', () => scheduleRender());

  // --- text in and out -----------------------------------------------------

  let composing = false;
  let deferred = null; // remote ops applied to session.text during an IME composition
  let shown = ''; // what the textarea shows, as far as the session knows

  ta.readOnly = true;
  ta.placeholder = 'Loading the document…';

  session.on('ready', () => {
    ta.value = shown = session.text;
    ta.readOnly = !canEdit;
    ta.placeholder = canEdit
      ? 'Shared notes. Everyone in the call can edit them; your changes are saved as you type.'
      : 'Shared notes (read only for you).';
    setStatus();
    scheduleRender();
    if (!historyEl.hidden) session.requestHistory();
  });

  // A local edit: the difference between what the textarea showed and
  // what it shows now.
  const onLocalInput = () => {
    // While reconnecting the session queues edits: only before the first
    // snapshot is there nothing to edit (the textarea is read-only then).
    if (!session.wasReady || composing) return;
    const op = diff(shown, ta.value);
    shown = ta.value;
    session.edit(op);
    if (session.text !== shown) render(true); // a refused or split edit: show the truth
    sendCursor();
  };
  ta.addEventListener('input', (ev) => {
    if (ev.isComposing) return;
    onLocalInput();
  });
  ta.addEventListener('compositionstart', () => {
    composing = true;
    deferred = null;
  });
  ta.addEventListener('compositionend', () => {
    composing = false;
    if (!session.wasReady) return;
    // The composed text is an op on what the textarea showed; remote ops
    // that arrived meanwhile are on the same text: transform the two.
    const local = diff(shown, ta.value);
    if (deferred) {
      const [local2, remote2] = transform(local, deferred, RIGHT);
      deferred = null;
      shown = ta.value;
      applyToTextarea(remote2);
      session.edit(local2);
    } else {
      shown = ta.value;
      session.edit(local);
    }
    if (session.text !== shown) render(true);
  });

  session.on('change', ({ op, origin, mine }) => {
    if (composing) {
      deferred = deferred ? compose(deferred, op) : op;
      scheduleRender();
      return;
    }
    applyToTextarea(op, mine && origin !== 'resync');
    scheduleHistory();
  });
  session.on('state', (st) => {
    if (st === 'synchronized') scheduleHistory();
  });

  // applyToTextarea applies op (on the shown text) to the textarea and
  // moves the selection with it. With focusChange, the caret goes to the
  // end of the change (one's own undo, redo or restore).
  function applyToTextarea(op, focusChange = false) {
    const old = shown;
    const next = session.text;
    if (next === old) return;
    const s16 = ta.selectionStart;
    const e16 = ta.selectionEnd;
    const dir = ta.selectionDirection;
    const top = ta.scrollTop;
    let s = toCodePoints(old, Math.min(s16, old.length));
    let e = toCodePoints(old, Math.min(e16, old.length));
    try {
      s = transformPosition(s, op, RIGHT);
      e = transformPosition(e, op, RIGHT);
    } catch {
      s = e = 0;
    }
    if (focusChange) s = e = changeEnd(op);
    ta.value = shown = next;
    const n = [...next].length;
    if (document.activeElement === ta || focusChange) {
      ta.setSelectionRange(toUTF16(next, Math.min(s, n)), toUTF16(next, Math.min(e, n)), dir);
    } else {
      ta.setSelectionRange(toUTF16(next, Math.min(s, n)), toUTF16(next, Math.min(e, n)));
    }
    ta.scrollTop = top;
    scheduleRender();
  }

  // changeEnd returns the position just after the last change op makes.
  function changeEnd(op) {
    let at = 0;
    let end = 0;
    for (const c of op) {
      if (typeof c === 'string') {
        at += [...c].length;
        end = at;
      } else if (c > 0) at += c;
      else end = at;
    }
    return end;
  }

  // render re-shows the whole text (after a refused edit) and the cursors.
  function render(text = false) {
    if (text && !composing) {
      const s = Math.min(ta.selectionStart, session.text.length);
      ta.value = shown = session.text;
      ta.setSelectionRange(s, s);
    }
    scheduleRender();
  }

  // --- undo, redo, keys ----------------------------------------------------

  const undo = () => {
    if (canEdit && session.ready) session.undo();
  };
  const redo = () => {
    if (canEdit && session.ready) session.redo();
  };
  $('doc-undo').addEventListener('click', undo);
  $('doc-redo').addEventListener('click', redo);
  $('doc-undo').hidden = $('doc-redo').hidden = !canEdit;
  ta.addEventListener('keydown', (ev) => {
    const mod = ev.ctrlKey || ev.metaKey;
    if (!mod || ev.altKey) return;
    const k = ev.key.toLowerCase();
    if (k === 'z' && !ev.shiftKey) {
      ev.preventDefault();
      undo();
    } else if ((k === 'z' && ev.shiftKey) || k === 'y') {
      ev.preventDefault();
      redo();
    }
  });
  // The browser's own undo (menus, gestures) would fight the server's.
  ta.addEventListener('beforeinput', (ev) => {
    if (ev.inputType === 'historyUndo') {
      ev.preventDefault();
      undo();
    } else if (ev.inputType === 'historyRedo') {
      ev.preventDefault();
      redo();
    }
  });

  // --- status and notices --------------------------------------------------

  const statusEl = $('doc-status');
  function setStatus() {
    let text;
    let state;
    if (session.phase === 'closed' && session.version < 0) [text, state] = ['Connecting…', 'wait'];
    else if (session.phase !== 'live') [text, state] = ['Reconnecting…', 'wait'];
    else if (session.state === 'synchronized') [text, state] = ['Saved', 'ok'];
    else [text, state] = ['Saving…', 'wait'];
    statusEl.textContent = text;
    statusEl.dataset.state = state;
  }
  session.on('state', setStatus);
  setInterval(() => {
    session.checkStalled();
    setStatus();
  }, 1000);

  session.on('notice', ({ code, message }) => {
    if (code === 'nothing_to_undo') toast(message);
    else toast(`Notes: ${message || code}`);
  });
  session.on('lost', ({ text, reason }) => {
    const box = $('doc-lost');
    box.querySelector('.why').textContent = `Some of your text could not be saved (${reason}). Copy it from here:`;
    box.querySelector('textarea').value = text;
    box.hidden = false;
  });
  $('doc-lost').querySelector('button').addEventListener('click', () => ($('doc-lost').hidden = true));

  // --- cursors: ours out, theirs drawn -----------------------------------

  let focusedOnce = false;
  let lastSent = '';
  let lastSentAt = 0;
  let cursorTimer = 0;
  function sendCursor(force = false) {
    if (!focusedOnce || !session.ready) return;
    const ch = client.channels.get('cursor');
    if (!ch || ch.readyState !== 'open') return;
    const now = performance.now();
    if (now - lastSentAt < CURSOR_MIN_GAP) {
      clearTimeout(cursorTimer);
      cursorTimer = setTimeout(() => sendCursor(force), CURSOR_MIN_GAP);
      return;
    }
    const text = ta.value;
    let a = ta.selectionStart;
    let h = ta.selectionEnd;
    if (ta.selectionDirection === 'backward') [a, h] = [h, a];
    let m;
    try {
      m = session.cursorMessage(toCodePoints(text, a), toCodePoints(text, h));
    } catch {
      return;
    }
    if (!m) return;
    const key = `${m.version}:${m.anchor}:${m.head}`;
    if (key === lastSent && !force) return;
    lastSent = key;
    lastSentAt = now;
    ch.send(JSON.stringify(m));
  }
  ta.addEventListener('focus', () => {
    focusedOnce = true;
    sendCursor();
  });
  for (const ev of ['select', 'keyup', 'mouseup', 'click']) ta.addEventListener(ev, () => sendCursor());
  document.addEventListener('selectionchange', () => {
    if (document.activeElement === ta) sendCursor();
  });
  session.on('state', (st) => {
    if (st === 'synchronized') sendCursor();
  });
  setInterval(() => sendCursor(true), CURSOR_HEARTBEAT);

  let renderQueued = false;
  session.on('cursors', () => scheduleRender());
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    const run = () => {
      renderQueued = false;
      drawCursors();
    };
    // A hidden tab gets no animation frames; it still keeps its overlay.
    if (document.hidden) setTimeout(run, 50);
    else requestAnimationFrame(run);
  }

  // drawCursors rebuilds the overlay: the text (invisible) with the others'
  // selections highlighted and their carets, each with a name label.
  function drawCursors() {
    const text = shown;
    let cursors = composing ? [] : session.remoteCursors();
    const names = new Map();
    for (const p of client.participants.values()) names.set(p.sid, p.name || p.identity);
    cursors = cursors.map((c) => ({ ...c, name: names.get(c.sid) || c.name || c.identity }));
    const n = [...text].length;
    // Ranges to highlight: others' selections, open comment threads, what
    // suggestions delete; points: others' carets, where suggestions insert.
    const ranges = [];
    const marks = [];
    for (const c of cursors) {
      if (c.anchor !== c.head) ranges.push({ from: Math.min(c.anchor, c.head), to: Math.max(c.anchor, c.head), kind: 'sel', c });
      marks.push({ at: c.head, kind: 'caret', c });
    }
    if (!composing && text === session.text) {
      const { threads, suggestions } = session.notes();
      for (const t of threads) if (!t.resolved && !t.orphaned) ranges.push({ from: t.from, to: t.to, kind: 'cmt', id: t.id });
      for (const x of suggestions) {
        for (const part of describe(x.op, text)) {
          if (part.kind === 'del') ranges.push({ from: part.at, to: part.at + [...part.text].length, kind: 'del', id: x.id });
          else marks.push({ at: part.at, kind: 'ins', id: x.id, text: part.text });
        }
      }
    }
    const points = new Set([0, n]);
    for (const r of ranges) {
      points.add(r.from);
      points.add(r.to);
    }
    for (const m of marks) points.add(m.at);
    const sorted = [...points].filter((p) => p >= 0 && p <= n).sort((a, b) => a - b);
    const at16 = new Map(sorted.map((p) => [p, toUTF16(text, p)]));
    const frag = document.createDocumentFragment();
    for (let i = 0; i < sorted.length; i++) {
      const p = sorted[i];
      for (const m of marks) {
        if (m.at !== p) continue;
        if (m.kind === 'ins') {
          const ins = document.createElement('span');
          ins.className = 'ins';
          ins.dataset.suggestion = String(m.id);
          frag.append(ins);
          continue;
        }
        const caret = document.createElement('span');
        caret.className = 'caret';
        caret.style.setProperty('--c', m.c.color);
        caret.dataset.sid = m.c.sid;
        const label = document.createElement('span');
        label.className = 'caret-label';
        label.textContent = m.c.name;
        caret.append(label);
        frag.append(caret);
      }
      if (i + 1 === sorted.length) break;
      const q = sorted[i + 1];
      const chunk = text.slice(at16.get(p), at16.get(q));
      const over = ranges.filter((r) => r.from <= p && r.to >= q);
      if (over.length) {
        const mark = document.createElement('mark');
        const kinds = new Set(over.map((r) => r.kind));
        mark.className = [...kinds].join(' ');
        const sel = over.filter((r) => r.kind === 'sel');
        if (sel.length) {
          mark.style.setProperty('--c', sel[sel.length - 1].c.color);
          mark.dataset.sid = sel.map((r) => r.c.sid).join(' ');
        }
        const cmt = over.filter((r) => r.kind === 'cmt');
        if (cmt.length) mark.dataset.thread = cmt.map((r) => r.id).join(' ');
        mark.textContent = chunk;
        frag.append(mark);
      } else {
        frag.append(chunk);
      }
    }
    frag.append('\u200b'); // a last line the textarea has after a final newline
    overlay.replaceChildren(frag);
    syncOverlay();
    drawPeople(cursors);
  }

  // drawPeople lists who is in the notes, in their colours.
  function drawPeople(cursors) {
    const el = $('doc-people');
    el.replaceChildren(
      ...cursors.map((c) => {
        const s = document.createElement('span');
        s.className = 'person';
        s.style.setProperty('--c', c.color);
        s.textContent = c.name;
        s.title = `${c.name} is in the notes`;
        return s;
      }),
    );
  }

  // syncOverlay lays the overlay exactly over the textarea's text area.
  function syncOverlay() {
    overlay.style.left = `${ta.offsetLeft + ta.clientLeft}px`;
    overlay.style.top = `${ta.offsetTop + ta.clientTop}px`;
    overlay.style.width = `${ta.clientWidth}px`;
    overlay.style.height = `${ta.clientHeight}px`;
    overlay.scrollTop = ta.scrollTop;
    overlay.scrollLeft = ta.scrollLeft;
  }
  ta.addEventListener('scroll', () => {
    overlay.scrollTop = ta.scrollTop;
    overlay.scrollLeft = ta.scrollLeft;
  });
  new ResizeObserver(() => syncOverlay()).observe(ta);

  // --- tabs and history ----------------------------------------------------

  const historyEl = $('doc-history');
  const editorEl = $('doc-editor');
  for (const tab of document.querySelectorAll('#doc [role="tab"]')) {
    tab.addEventListener('click', () => showTab(tab.dataset.tab));
  }
  function showTab(name) {
    for (const tab of document.querySelectorAll('#doc [role="tab"]')) {
      tab.setAttribute('aria-selected', String(tab.dataset.tab === name));
    }
    editorEl.hidden = name !== 'notes';
    historyEl.hidden = name !== 'history';
    $('doc-comments').hidden = name !== 'comments';
    if (name === 'comments') comments.draw();
    if (name === 'history') session.requestHistory();
    if (name === 'notes') scheduleRender();
  }

  let historyTimer = 0;
  function scheduleHistory() {
    if (historyEl.hidden) return;
    clearTimeout(historyTimer);
    historyTimer = setTimeout(() => session.requestHistory(), 400);
  }

  const actionText = {
    edit: 'edited',
    undo: 'undid an edit',
    redo: 'redid an edit',
    restore: 'restored',
    comment: 'commented',
    reply: 'replied to a comment',
    resolve: 'resolved a comment',
    reopen: 'reopened a comment',
    suggest: 'suggested a change',
    accept: 'accepted a suggestion',
    reject: 'rejected a suggestion',
  };
  function author(clientId) {
    const identity = clientId.includes('/') ? clientId.slice(0, clientId.indexOf('/')) : null;
    if (identity !== null && identity === client.you?.identity) return 'You';
    for (const p of client.participants.values()) {
      if (identity !== null ? p.identity === identity : p.sid === clientId) return p.name || p.identity;
    }
    if (clientId === client.you?.sid) return 'You';
    return identity ?? 'Someone';
  }
  let historyEntries = [];
  session.on('history', (entries) => {
    historyEntries = entries;
    const list = $('doc-history-list');
    const latest = session.version;
    const items = [...entries].reverse().map((e) => {
      const li = document.createElement('li');
      li.dataset.version = String(e.version);
      const head = document.createElement('div');
      head.className = 'who';
      const name = document.createElement('strong');
      name.textContent = author(e.client);
      const what = document.createElement('span');
      what.textContent = ` ${actionText[e.action] ?? e.action}${e.action === 'restore' && e.ref ? ` version ${e.ref}` : ''}`;
      head.append(name, what);
      const meta = document.createElement('div');
      meta.className = 'meta';
      const when = new Date(e.time);
      meta.textContent = `Version ${e.version} · ${when.toLocaleDateString() === new Date().toLocaleDateString() ? when.toLocaleTimeString() : when.toLocaleString()}`;
      meta.title = when.toString();
      li.append(head, meta);
      if (e.version === latest) {
        const cur = document.createElement('span');
        cur.className = 'current';
        cur.textContent = 'Current';
        li.append(cur);
      } else if (canEdit) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'ghost restore';
        b.textContent = 'Restore';
        b.title = `Make the text what it was at version ${e.version} (a new version; it can be undone)`;
        b.addEventListener('click', () => {
          session.restore(e.version);
          toast(`Restoring version ${e.version}`);
          scheduleHistory();
        });
        li.append(b);
      }
      return li;
    });
    if (!items.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'No versions yet: the notes are empty.';
      items.push(li);
    }
    list.replaceChildren(...items);
  });

  const comments = mountComments({ session, ta, canEdit, canSuggest, me: () => session.me, toast, showTab, render: scheduleRender });

  setStatus();
  return {
    session,
    get text() {
      return session.text;
    },
    get shown() {
      return ta.value;
    },
    get version() {
      return session.version;
    },
    get state() {
      return session.state;
    },
    get ready() {
      return session.ready;
    },
    cursors: () => session.remoteCursors(),
    history: () => historyEntries,
    showTab,
  };
}
