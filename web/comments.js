// comments.js: the Comments tab of the shared notes. Comment threads
// anchored to ranges of the text (add, reply, resolve, reopen; a thread
// whose text was deleted stays, marked), and suggested changes shown with
// accept and reject. The state is doc.js's (session.notes()); this file
// only draws it and sends requests.

import { Builder, codePoints, toCodePoints, toUTF16 } from './ot.js';

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return e;
}

function clip(s, n = 80) {
  const cps = [...s];
  return cps.length > n ? `${cps.slice(0, n).join('')}…` : s;
}

function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleDateString() === new Date().toLocaleDateString() ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : d.toLocaleString();
}

/**
 * describe summarises a suggested op on text: [{kind: 'del'|'ins', text}]
 * in order, with where it starts.
 */
export function describe(op, text) {
  const parts = [];
  let at = 0;
  let i16 = 0;
  for (const c of op) {
    if (typeof c === 'string') parts.push({ kind: 'ins', text: c, at });
    else if (c > 0) {
      at += c;
      i16 = toUTF16(text, at);
    } else {
      const j16 = toUTF16(text, at - c);
      parts.push({ kind: 'del', text: text.slice(i16, j16), at });
      at -= c;
      i16 = j16;
    }
  }
  return parts;
}

/**
 * mountComments draws the Comments tab and its compose box.
 * @param {{session: import('./doc.js').DocSession, ta: HTMLTextAreaElement, canEdit: boolean,
 *          canSuggest: boolean, me: () => string, toast: (s: string) => void,
 *          showTab: (name: string) => void, render: () => void}} o
 */
export function mountComments({ session, ta, canEdit, canSuggest, me, toast, showTab, render }) {
  const root = $('doc-comments');
  const list = $('doc-comments-list');
  const compose = $('doc-compose');
  const quote = compose.querySelector('.quote');
  const input = compose.querySelector('textarea');
  const commentBtn = compose.querySelector('[data-act="comment"]');
  const suggestBtn = compose.querySelector('[data-act="suggest"]');
  const badge = $('doc-comments-count');
  compose.hidden = !canSuggest;

  // The selection the compose box acts on, in code points of session.text.
  const selection = () => {
    const text = ta.value;
    return { from: toCodePoints(text, ta.selectionStart), to: toCodePoints(text, ta.selectionEnd), text: text.slice(ta.selectionStart, ta.selectionEnd) };
  };
  const updateQuote = () => {
    const s = selection();
    quote.textContent = s.from < s.to ? `On “${clip(s.text, 60)}”` : 'Select text in the notes to comment on it or suggest a change.';
    commentBtn.disabled = s.from >= s.to || !input.value.trim();
    suggestBtn.disabled = s.from >= s.to && !input.value;
    suggestBtn.textContent = s.from < s.to ? (input.value ? 'Suggest replacing' : 'Suggest deleting') : 'Suggest inserting';
  };
  for (const ev of ['select', 'keyup', 'mouseup', 'input']) ta.addEventListener(ev, updateQuote);
  input.addEventListener('input', updateQuote);
  commentBtn.addEventListener('click', () => {
    const s = selection();
    const text = input.value.trim();
    if (!text || s.from >= s.to) return;
    if (session.comment(s.from, s.to, text)) {
      input.value = '';
      updateQuote();
    }
  });
  suggestBtn.addEventListener('click', () => {
    const s = selection();
    const n = codePoints(session.text);
    const op = new Builder().retain(s.from).insert(input.value).delete(s.to - s.from).retain(n - s.to).done();
    if (session.suggest(op)) {
      input.value = '';
      updateQuote();
      toast('Suggestion sent');
    }
  });
  updateQuote();

  // selectRange shows a range of the text in the editor.
  const selectRange = (from, to) => {
    showTab('notes');
    const text = ta.value;
    const n = codePoints(text);
    ta.focus();
    ta.setSelectionRange(toUTF16(text, Math.min(from, n)), toUTF16(text, Math.min(to, n)));
  };

  function draw() {
    const { threads, suggestions } = session.notes();
    const open = threads.filter((t) => !t.resolved).length;
    badge.textContent = String(open + suggestions.length);
    badge.hidden = open + suggestions.length === 0;
    if (root.hidden) return;
    const active = document.activeElement;
    const keep = active && list.contains(active) && active.dataset.key ? { key: active.dataset.key, value: active.value } : null;
    const items = [];
    for (const x of suggestions) items.push(drawSuggestion(x));
    const sorted = [...threads].sort((a, b) => Number(a.resolved) - Number(b.resolved) || a.from - b.from || a.id - b.id);
    for (const t of sorted) items.push(drawThread(t));
    if (!items.length) items.push(el('li', { class: 'empty', textContent: 'No comments or suggestions yet.' }));
    list.replaceChildren(...items);
    if (keep) {
      const again = list.querySelector(`[data-key="${keep.key}"]`);
      if (again) {
        again.value = keep.value;
        again.focus();
      }
    }
  }

  function drawSuggestion(x) {
    const text = session.text;
    // What is deleted reads before what is inserted in its place.
    const parts = describe(x.op, text).sort((a, b) => a.at - b.at || (a.kind === 'del' ? -1 : 1));
    const body = el('div', { class: 'change' });
    if (parts.length) {
      const cps = [...text];
      const first = parts[0].at;
      const last = parts.reduce((m, p) => Math.max(m, p.kind === 'del' ? p.at + [...p.text].length : p.at), 0);
      const before = cps.slice(Math.max(0, first - 24), first).join('');
      const after = cps.slice(last, last + 24).join('');
      body.append(el('span', { class: 'ctx', textContent: (first > 24 ? '…' : '') + before }));
      for (const p of parts) body.append(el(p.kind, { textContent: clip(p.text, 200) || ' ' }));
      body.append(el('span', { class: 'ctx', textContent: after + (last + 24 < cps.length ? '…' : '') }));
    }
    const mine = x.client === me();
    const at = parts.length ? parts[0].at : 0;
    return el(
      'li',
      { class: 'suggestion', data: { suggestion: String(x.id) } },
      el('div', { class: 'who' }, el('strong', { textContent: x.name || 'Someone' }), ` suggests · ${when(x.time)}`),
      el('button', { type: 'button', class: 'link', title: 'Show where', onclick: () => selectRange(at, at) }, body),
      el(
        'div',
        { class: 'actions' },
        canEdit && el('button', { type: 'button', class: 'primary small', textContent: 'Accept', onclick: () => session.accept(x.id) }),
        (canEdit || mine) && el('button', { type: 'button', class: 'ghost small', textContent: 'Reject', onclick: () => session.reject(x.id) }),
      ),
    );
  }

  function drawThread(t) {
    const reply = el('textarea', { rows: 1, placeholder: 'Reply…', data: { key: `reply-${t.id}` } });
    const send = () => {
      const text = reply.value.trim();
      if (text && session.reply(t.id, text)) reply.value = '';
    };
    reply.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey) {
        ev.preventDefault();
        send();
      }
    });
    return el(
      'li',
      { class: `thread${t.resolved ? ' resolved' : ''}${t.orphaned ? ' orphaned' : ''}`, data: { thread: String(t.id) } },
      el(
        'button',
        { type: 'button', class: 'link quote', title: t.orphaned ? 'The commented text was deleted' : 'Show in the notes', onclick: () => selectRange(t.from, t.to) },
        `“${clip(t.quote, 80)}”`,
        t.orphaned && el('span', { class: 'tag', textContent: 'text deleted' }),
        t.resolved && el('span', { class: 'tag', textContent: 'resolved' }),
      ),
      el(
        'ol',
        { class: 'comments' },
        ...t.comments.map((c) => el('li', {}, el('div', { class: 'who' }, el('strong', { textContent: c.name || 'Someone' }), ` · ${when(c.time)}`), el('p', { textContent: c.text }))),
      ),
      canSuggest &&
        el(
          'div',
          { class: 'actions' },
          reply,
          el('button', { type: 'button', class: 'ghost small', textContent: 'Reply', onclick: send }),
          el('button', { type: 'button', class: 'ghost small', textContent: t.resolved ? 'Reopen' : 'Resolve', onclick: () => session.resolve(t.id, !t.resolved) }),
        ),
    );
  }

  let queued = false;
  const schedule = () => {
    if (queued) return;
    queued = true;
    setTimeout(() => {
      queued = false;
      draw();
    }, 30);
  };
  session.on('notes', () => {
    schedule();
    render();
  });
  session.on('ready', schedule);
  session.on('change', () => {
    if (session.suggestions.length) schedule(); // what a suggestion deletes may change
  });
  return { draw };
}
