// dashboard.js drives /dashboard: the rooms of this server, their
// participants with presence and statistics, and live uPlot charts of bit
// rate, loss and round-trip time per participant and for the server, all
// fed by the admin event feed (GET /events, Server-Sent Events).
// window.dashboard exposes its state for tests and the console.

/* global uPlot */

const $ = (id) => document.getElementById(id);

/** How many samples the charts keep (stats come every 2 s: 4 minutes). */
const HISTORY = 120;
const COLORS = ['#5b8cff', '#3ecf8e', '#f5b84a', '#ef4c5a', '#b57bff', '#4fd1e8', '#ff8f5b', '#c8d45b'];

/** Rooms by name: { name, el, people: Map<sid, person>, charts, series }. */
const rooms = new Map();
/** Presence by identity, as the feed told it. */
const presence = new Map();
/** Latest quality report by participant SID. */
const quality = new Map();
let token = '';
let source = null;
const server = { times: [], bitIn: [], bitOut: [], loss: [], rtt: [], chart: null, qualityChart: null, last: null };

window.dashboard = {
  state: 'starting',
  error: null,
  events: 0,
  gaps: 0,
  /** log records feed and room lifecycle notes, for tests and the console. */
  log: [],
  rooms: () =>
    [...rooms.values()].map((r) => ({
      name: r.name,
      participants: [...r.people.values()].map((p) => ({
        sid: p.sid,
        identity: p.identity,
        name: p.name,
        state: presence.get(p.identity)?.state ?? '',
      })),
    })),
  /** serverScales returns the scale of each series of the server's loss and RTT chart. */
  serverScales: () => server.qualityChart?.series.slice(1).map((x) => x.scale) ?? [],
  /** points returns how many data points a room's charts (or the server's) hold. */
  points: (room) => {
    const chart = room == null ? server.chart : rooms.get(room)?.charts?.bitrate;
    return chart ? chart.data[0].length : 0;
  },
  /** series returns the number of series with at least one value in a room's bit-rate chart. */
  series: (room) => {
    const chart = rooms.get(room)?.charts?.bitrate;
    if (!chart) return 0;
    return chart.data.slice(1).filter((s) => s.some((v) => v != null)).length;
  },
};

function setFeed(state, error = null) {
  window.dashboard.state = state;
  window.dashboard.error = error;
  const el = $('feed');
  el.dataset.state = state;
  el.textContent = { starting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', failed: 'No access' }[state] ?? state;
  if (error) el.title = error;
}

async function getToken() {
  const frag = new URLSearchParams(location.hash.slice(1));
  if (frag.get('token')) return frag.get('token');
  // Dev mode only: the server mints an admin token for every room.
  const res = await fetch('/dev/token?room=*&admin=1&name=dashboard');
  if (!res.ok) throw new Error('no admin token: open /dashboard#token=<admin token> (huddle token --room "*" --identity ops --grant admin)');
  return (await res.json()).token;
}

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${(await res.text()).slice(0, 200)}`);
  return res.json();
}

// ---------------------------------------------------------------------------
// Rooms and people

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function room(name) {
  let r = rooms.get(name);
  if (r) return r;
  const title = el('h3', {}, name);
  const meta = el('span', { class: 'meta' });
  const body = el('tbody');
  const table = el(
    'table',
    { class: 'people' },
    el('thead', {}, el('tr', {}, ...['Participant', 'Presence', 'Up kbit/s', 'Down kbit/s', 'Loss %', 'RTT ms', 'Downlink', 'Uplink'].map((h) => el('th', {}, h)))),
    body,
  );
  const charts = el('div', { class: 'charts' });
  const section = el('article', { class: 'room', dataset: { room: name } }, el('header', {}, title, meta), table, charts);
  $('rooms').append(section);
  r = { name, el: section, meta, body, chartsEl: charts, people: new Map(), times: [], data: new Map(), charts: null, chartKey: '' };
  rooms.set(name, r);
  $('empty').hidden = true;
  return r;
}

function note(s) {
  const log = window.dashboard.log;
  log.push(`${new Date().toISOString()} ${s}`);
  if (log.length > 200) log.splice(0, log.length - 200);
}

function dropRoom(name, why) {
  const r = rooms.get(name);
  if (!r) return;
  note(`drop room ${name}: ${why}`);
  destroyCharts(r);
  r.el.remove();
  rooms.delete(name);
  $('empty').hidden = rooms.size > 0;
}

function fmt(v, digits = 0) {
  return v == null || Number.isNaN(v) ? '–' : v.toFixed(digits);
}

function renderRoom(r) {
  r.meta.textContent = `${r.people.size} participant${r.people.size === 1 ? '' : 's'}`;
  const rows = [];
  for (const p of [...r.people.values()].sort((a, b) => (a.name || a.identity).localeCompare(b.name || b.identity))) {
    const pr = presence.get(p.identity);
    const st = p.stats ?? {};
    const q = quality.get(p.sid);
    const who = el('td', {}, el('span', { class: 'dot', dataset: { state: pr?.state ?? '' } }), p.name || p.identity);
    const pres = el('td', {}, pr ? pr.state : '–');
    if (pr?.activity) pres.append(` · ${pr.activity.replace('_', ' ')}`);
    if (pr?.text) pres.append(el('span', { class: 'status-text' }, pr.text));
    rows.push(
      el(
        'tr',
        { dataset: { sid: p.sid, identity: p.identity } },
        who,
        pres,
        el('td', { class: 'num' }, fmt(st.bitrate_in / 1000)),
        el('td', { class: 'num' }, fmt(st.bitrate_out / 1000)),
        el('td', { class: 'num' }, st.reports ? fmt(st.loss * 100, 1) : '–'),
        el('td', { class: 'num' }, st.rtt_ms ? fmt(st.rtt_ms, 1) : '–'),
        downlinkCell(q),
        uplinkCell(q?.uplink),
      ),
    );
  }
  r.body.replaceChildren(...rows);
}

/**
 * downlinkCell shows what a participant receives, from a quality report
 * {score, level, audio, video, uplink}: the worse of audio and video; its
 * title also gives the overall score (the lowest of all three).
 */
function downlinkCell(q) {
  if (q == null || typeof q !== 'object') return el('td', {}, '–');
  const kinds = [q.audio, q.video].filter((m) => m && m.level);
  if (kinds.length === 0) return el('td', {}, '–');
  const worst = kinds.reduce((a, b) => (b.score < a.score ? b : a));
  const part = (name, m) => (m ? `${name} ${fmt(m.score, 1)}` : null);
  const title = [part('audio', q.audio), part('video', q.video), q.level ? `overall ${fmt(q.score, 1)} ${q.level}` : null].filter(Boolean).join(' · ');
  return el('td', { class: 'quality', title, dataset: { level: worst.level } }, `${fmt(worst.score, 1)} ${worst.level}`);
}

/**
 * uplinkCell shows what the server receives of a participant's published
 * tracks {score, level, loss_pct, jitter_ms, rtt_ms, kbps}: the score and
 * the loss after retransmissions (the worst track's).
 */
function uplinkCell(u) {
  if (u == null || typeof u !== 'object' || !u.level) return el('td', { class: 'uplink' }, '–');
  const title = `loss ${fmt(u.loss_pct, 1)} % after retransmissions · jitter ${fmt(u.jitter_ms, 1)} ms · RTT ${fmt(u.rtt_ms, 1)} ms · ${fmt(u.kbps)} kbit/s`;
  return el(
    'td',
    { class: 'quality uplink', title, dataset: { level: u.level } },
    `${fmt(u.score, 1)} ${u.level}`,
    el('span', { class: 'uplink-loss' }, `${fmt(u.loss_pct, 1)} % loss`),
  );
}

async function loadRoom(name) {
  try {
    const d = await api(`/admin/rooms/${encodeURIComponent(name)}`);
    const r = room(name);
    const keep = new Map(r.people);
    r.people.clear();
    for (const p of d.participants ?? []) {
      r.people.set(p.sid, { sid: p.sid, identity: p.identity, name: p.name, stats: keep.get(p.sid)?.stats });
      if (p.quality != null) quality.set(p.sid, p.quality);
    }
    for (const pr of d.presence ?? []) presence.set(pr.identity, pr);
    renderRoom(r);
  } catch (err) {
    console.warn('dashboard: load room', name, err);
  }
}

async function loadAll() {
  const { rooms: list } = await api('/admin/rooms');
  const names = new Set(list.map((r) => r.name));
  for (const name of [...rooms.keys()]) if (!names.has(name)) dropRoom(name, 'not listed by /admin/rooms');
  await Promise.all(list.map((r) => loadRoom(r.name)));
}

// ---------------------------------------------------------------------------
// Charts

function chartWidth(container) {
  return Math.max(300, Math.floor(container.clientWidth || 400));
}

/**
 * makeChart draws labels' series on one axis of unit; with units (one per
 * label, at most two distinct), each unit gets its own scale and axis (the
 * second on the right), so that a loss in % is not flattened by an RTT in
 * ms.
 */
function makeChart(container, title, unit, labels, data, units) {
  const scaleOf = (i) => (units ? units[i] : unit);
  const distinct = [...new Set(labels.map((_, i) => scaleOf(i)))];
  const opts = {
    title,
    width: chartWidth(container),
    height: 170,
    series: [
      {},
      ...labels.map((label, i) => ({ label, scale: scaleOf(i), stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true })),
    ],
    axes: [
      { stroke: '#9aa3b2', grid: { stroke: '#2a2f3a' } },
      ...distinct.map((u, i) => ({ scale: u, side: i === 0 ? 3 : 1, stroke: '#9aa3b2', grid: { stroke: '#2a2f3a', show: i === 0 }, label: u, size: 55 })),
    ],
    scales: { x: { time: true } },
    legend: { live: false },
    cursor: { show: false },
  };
  return new uPlot(opts, data, container);
}

function destroyCharts(r) {
  if (!r.charts) return;
  for (const c of Object.values(r.charts)) c.destroy();
  r.charts = null;
  r.chartsEl.replaceChildren();
}

/** roomSeries returns the chart data of a room for metric m. */
function roomSeries(r, sids, m) {
  return [r.times, ...sids.map((sid) => r.data.get(sid)?.[m] ?? r.times.map(() => null))];
}

function drawRoom(r) {
  const sids = [...r.data.keys()];
  const key = sids.join(',');
  if (key !== r.chartKey) {
    // The set of participants changed: new charts with one series each.
    destroyCharts(r);
    r.chartKey = key;
    const labels = sids.map((sid) => {
      const p = r.people.get(sid) ?? r.data.get(sid);
      return p?.name || p?.identity || sid;
    });
    const holders = ['bitrate', 'loss', 'rtt'].map(() => el('div', { class: 'chart' }));
    r.chartsEl.replaceChildren(...holders);
    r.charts = {
      bitrate: makeChart(holders[0], 'Bit rate (up + down)', 'kbit/s', labels, roomSeries(r, sids, 'kbps')),
      loss: makeChart(holders[1], 'Loss', '%', labels, roomSeries(r, sids, 'loss')),
      rtt: makeChart(holders[2], 'Round-trip time', 'ms', labels, roomSeries(r, sids, 'rtt')),
    };
    return;
  }
  r.charts.bitrate.setData(roomSeries(r, sids, 'kbps'));
  r.charts.loss.setData(roomSeries(r, sids, 'loss'));
  r.charts.rtt.setData(roomSeries(r, sids, 'rtt'));
}

function trim(arr) {
  if (arr.length > HISTORY) arr.splice(0, arr.length - HISTORY);
}

function roomStats(name, t, d) {
  const r = room(name);
  r.times.push(t);
  const seen = new Set();
  for (const p of d.participants ?? []) {
    seen.add(p.sid);
    let s = r.data.get(p.sid);
    if (!s) {
      // Earlier samples had no value for this participant.
      s = { identity: p.identity, name: p.name, kbps: r.times.slice(0, -1).map(() => null), loss: [], rtt: [] };
      s.loss = s.kbps.slice();
      s.rtt = s.kbps.slice();
      r.data.set(p.sid, s);
    }
    s.kbps.push((p.bitrate_in + p.bitrate_out) / 1000);
    s.loss.push(p.reports ? p.loss * 100 : null);
    s.rtt.push(p.rtt_ms > 0 ? p.rtt_ms : null);
    const known = r.people.get(p.sid);
    if (known) known.stats = p;
    else r.people.set(p.sid, { sid: p.sid, identity: p.identity, name: p.name, stats: p });
  }
  for (const [sid, s] of r.data) {
    if (!seen.has(sid)) {
      s.kbps.push(null);
      s.loss.push(null);
      s.rtt.push(null);
    }
    for (const a of [s.kbps, s.loss, s.rtt]) trim(a);
    // A participant gone for the whole window leaves the charts.
    if (s.kbps.every((v) => v == null)) r.data.delete(sid);
  }
  trim(r.times);
  drawRoom(r);
  renderRoom(r);
}

function serverStats(t, d) {
  server.last = d;
  server.times.push(t);
  server.bitIn.push(d.bitrate_in / 1000);
  server.bitOut.push(d.bitrate_out / 1000);
  server.loss.push(d.loss * 100);
  server.rtt.push(d.rtt_ms || null);
  for (const a of [server.times, server.bitIn, server.bitOut, server.loss, server.rtt]) trim(a);
  const rates = [server.times, server.bitIn, server.bitOut];
  const quality = [server.times, server.loss, server.rtt];
  if (!server.chart) {
    server.chart = makeChart($('server-chart'), 'Server bit rate', 'kbit/s', ['in', 'out'], rates);
    server.qualityChart = makeChart($('server-quality-chart'), 'Server loss and RTT', '', ['loss %', 'RTT ms'], quality, ['%', 'ms']);
  } else {
    server.chart.setData(rates);
    server.qualityChart.setData(quality);
  }
  const totals = [
    ['Rooms', d.rooms],
    ['Participants', d.participants],
    ['Tracks', d.tracks],
    ['In', `${fmt(d.bitrate_in / 1000)} kbit/s`],
    ['Out', `${fmt(d.bitrate_out / 1000)} kbit/s`],
    ['Loss', `${fmt(d.loss * 100, 1)} %`],
    ['RTT', d.rtt_ms ? `${fmt(d.rtt_ms, 1)} ms` : '–'],
    ['Forwarded', `${d.forwarded_packets} packets`],
  ];
  $('totals').replaceChildren(...totals.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', { dataset: { total: k.toLowerCase() } }, String(v)))));
}

// ---------------------------------------------------------------------------
// The feed

const pending = new Set();
let reloadTimer = null;
/** refresh reloads a room's participants soon, coalescing bursts. */
function refresh(name) {
  pending.add(name);
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    const names = [...pending];
    pending.clear();
    for (const n of names) loadRoom(n);
  }, 300);
}

function onEvent(e) {
  window.dashboard.events++;
  const ev = JSON.parse(e.data);
  const d = ev.data ?? {};
  switch (ev.type) {
    case 'room_started':
      room(ev.room);
      break;
    case 'room_closed':
      dropRoom(ev.room, `room_closed event ${ev.id}`);
      break;
    case 'participant_joined':
    case 'participant_updated': {
      const r = room(ev.room);
      const old = r.people.get(d.sid);
      r.people.set(d.sid, { sid: d.sid, identity: d.identity, name: d.name, stats: old?.stats });
      renderRoom(r);
      break;
    }
    case 'participant_left': {
      const r = rooms.get(ev.room);
      if (r) {
        r.people.delete(d.sid);
        quality.delete(d.sid);
        renderRoom(r);
      }
      break;
    }
    case 'presence':
      presence.set(d.identity, d);
      for (const name of ev.rooms ?? []) if (rooms.has(name)) renderRoom(rooms.get(name));
      break;
    case 'quality':
      quality.set(d.participant, d.quality);
      if (rooms.has(ev.room)) renderRoom(rooms.get(ev.room));
      break;
    case 'stats':
      if (d.scope === 'server') serverStats(ev.time / 1000, d);
      else roomStats(ev.room, ev.time / 1000, d);
      break;
    default:
      if (ev.room) refresh(ev.room);
  }
}

const TYPES = ['room_started', 'room_closed', 'participant_joined', 'participant_left', 'participant_updated', 'track_published', 'track_unpublished', 'track_muted', 'presence', 'quality', 'stats'];

function openFeed() {
  source = new EventSource(`/events?token=${encodeURIComponent(token)}`);
  for (const t of TYPES) source.addEventListener(t, onEvent);
  source.addEventListener('gap', () => {
    // Events were lost: start again from the server's state.
    window.dashboard.gaps++;
    note('gap: reloading');
    loadAll().catch((err) => console.warn('dashboard: reload', err));
  });
  source.onopen = () => {
    note('feed open');
    setFeed('live');
  };
  source.onerror = () => {
    note(`feed error, readyState ${source.readyState}`);
    setFeed(source.readyState === EventSource.CLOSED ? 'failed' : 'reconnecting');
  };
}

async function start() {
  try {
    token = await getToken();
    // Subscribe first, then load: what happens meanwhile comes on the feed.
    openFeed();
    await loadAll();
  } catch (err) {
    setFeed('failed', String(err.message ?? err));
    $('empty').textContent = String(err.message ?? err);
  }
}

window.addEventListener('resize', () => {
  for (const r of rooms.values()) {
    if (!r.charts) continue;
    for (const c of Object.values(r.charts)) c.setSize({ width: chartWidth(c.root.parentElement), height: 170 });
  }
  if (server.chart) server.chart.setSize({ width: chartWidth($('server-chart')), height: 170 });
  if (server.qualityChart) server.qualityChart.setSize({ width: chartWidth($('server-quality-chart')), height: 170 });
});

start();
