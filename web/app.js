// app.js drives the call page, /r/<room>: it starts the camera and the
// microphone, joins the room straight away (a meeting link is all one
// needs), and shows a tile per participant. window.huddle exposes the
// client and a little state for tests and for the console.

import { connect, devToken, describeError, fatalJoinError, Source } from './huddle.js';
import { mountDoc, setupDocPanel } from './editor.js';

const $ = (id) => document.getElementById(id);

const room = decodeURIComponent(location.pathname.replace(/^\/r\//, ''));
const params = new URLSearchParams(location.search);
const givenToken = params.get('token');
let myName = (params.get('name') || localStorage.getItem('huddle.name') || '').trim();
if (!myName) myName = `Guest ${Math.floor(Math.random() * 900 + 100)}`;
if (givenToken) {
  // Keep the token out of the address bar, the history and copied links.
  params.delete('token');
  const q = params.toString();
  history.replaceState(null, '', location.pathname + (q ? `?${q}` : ''));
}

// A page loaded by a failover carries the dead node it left (lost), and in
// dev mode the tab's identity (session storage is per origin).
const lostNode = params.get('lost');
if (params.has('identity')) {
  try {
    sessionStorage.setItem('huddle.identity', params.get('identity'));
  } catch {
    // not remembered: the dev token gets a new identity
  }
  params.delete('identity');
  const q = params.toString();
  history.replaceState(null, '', location.pathname + (q ? `?${q}` : ''));
}

const meetingLink = `${location.origin}/r/${encodeURIComponent(room)}`;

/** What this page sends: tracks from getUserMedia and getDisplayMedia. */
const local = { stream: null, mic: null, cam: null, screen: null };

/** @type {import('./huddle.js').Client | null} */
let client = null;
let leaving = false;
let soundBlocked = false;

/** Tiles by key: "self", "self:screen", a participant SID, or "<sid>:screen". */
const tiles = new Map();

// Adaptive video: each remote video tells the server the size it is shown
// at (device pixels) and whether it can be seen, so that the server sends
// the simulcast layer that covers the tile and nothing for a tile off
// screen or a page in the background.

const resizeWatch = new ResizeObserver(() => viewsChanged());
const visibleWatch = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const t = [...tiles.values()].find((x) => x.video === e.target);
    if (t) t.onScreen = e.isIntersecting;
  }
  viewsChanged();
});
document.addEventListener('visibilitychange', () => viewsChanged());
let viewsTimer = null;

/** Automatic rejoins after a lost connection, counted per tab. */
const RETRIES_KEY = 'huddle.rejoins';
const MAX_AUTO_REJOIN = 6;
/** Joins retried while a dead node's room lease runs out (about 25 s). */
const MAX_PLACEMENT_WAITS = 8;

// ---------------------------------------------------------------------------
// Test and console hooks

window.huddle = {
  room,
  get name() {
    return client?.you?.name ?? myName;
  },
  get client() {
    return client;
  },
  state: 'starting',
  error: null,
  mediaError: null,
  /** participants counts everyone in the call, oneself included. */
  participants: () => (client ? client.participants.size + 1 : 0),
  /** tiles describes the tiles on screen. */
  tiles: () =>
    [...tiles.values()].map((t) => ({
      key: t.key,
      sid: t.spec.sid,
      name: t.spec.name,
      self: t.spec.self,
      screen: t.spec.screen,
      micMuted: t.spec.micMuted,
      camOff: t.spec.camOff,
      hasVideo: !!t.spec.video,
      hasAudio: !!t.spec.audio,
      /** view is what the tile told the server: "WxH" or "paused". */
      view: t.el.dataset.view ?? '',
      videoWidth: t.video.videoWidth,
      videoHeight: t.video.videoHeight,
    })),
  /** inbound lists inbound-rtp statistics, each with the publisher's name. */
  inbound: async () => {
    if (!client) return [];
    const stats = await client.inboundStats();
    return stats.map((s) => ({ ...s, name: participantName(s.participant) }));
  },
  /** outbound lists outbound-rtp statistics of what this page sends. */
  outbound: async () => (client ? client.outboundStats() : []),
  leave: () => leave(),
};

function setState(state, error = null) {
  window.huddle.state = state;
  window.huddle.error = error;
  const el = $('status');
  el.dataset.state = state;
  el.textContent =
    {
      starting: 'Starting…',
      connecting: 'Connecting…',
      joined: 'Connected',
      media: 'Connected',
      disconnected: 'Disconnected',
      left: 'Left',
      failed: 'Not connected',
    }[state] ?? state;
}

// ---------------------------------------------------------------------------
// Messages to the person

function banner(text, action = null) {
  $('banner-text').textContent = text;
  const btn = $('banner-action');
  btn.hidden = !action;
  if (action) {
    btn.textContent = action.label;
    btn.onclick = () => {
      hideBanner();
      action.run();
    };
  }
  $('banner').hidden = false;
}

function hideBanner() {
  $('banner').hidden = true;
}

let toastTimer = 0;
function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 2500);
}

function overlay(title, text, { rejoin = true } = {}) {
  $('overlay-title').textContent = title;
  $('overlay-text').textContent = text;
  $('rejoin').hidden = !rejoin;
  $('overlay').hidden = false;
  for (const id of ['mic', 'cam', 'screen', 'leave']) $(id).disabled = true;
}

function mediaErrorText(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Camera and microphone are blocked, so you joined without them. Allow them in the address bar and rejoin to be seen and heard.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found, so you joined to watch and listen.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The camera or microphone is in use by another application, so you joined without them.';
    default:
      return `Camera and microphone are unavailable (${err?.message ?? err}), so you joined to watch and listen.`;
  }
}

// ---------------------------------------------------------------------------
// Local media

async function startMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    return 'This page cannot use a camera here (it needs HTTPS or localhost), so you joined to watch and listen.';
  }
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  let first = null;
  for (const constraints of [{ audio: true, video }, { audio: true }, { video }]) {
    try {
      local.stream = await navigator.mediaDevices.getUserMedia(constraints);
      break;
    } catch (err) {
      first ??= err;
      if (err.name === 'NotAllowedError' || err.name === 'SecurityError') break;
    }
  }
  if (!local.stream) return mediaErrorText(first);
  local.mic = local.stream.getAudioTracks()[0] ?? null;
  local.cam = local.stream.getVideoTracks()[0] ?? null;
  if (!local.mic) return 'No microphone was found; you joined with your camera only.';
  if (!local.cam) return 'No camera was found; you joined with your microphone only.';
  return null;
}

function stopMedia() {
  for (const t of [local.mic, local.cam, local.screen]) t?.stop();
  local.stream = null;
  local.mic = local.cam = local.screen = null;
}

// ---------------------------------------------------------------------------
// Joining

async function start() {
  document.title = `${room} · Huddle`;
  $('room-name').textContent = room;
  render();

  const mediaProblem = await startMedia();
  window.huddle.mediaError = mediaProblem;
  if (mediaProblem) banner(mediaProblem);
  render();

  setState('connecting');
  try {
    let token = givenToken;
    if (!token) token = await devTokenForTab();
    for (let attempt = 0; ; attempt++) {
      try {
        // ?ice=relay connects through the server's TURN relay only (to check TURN).
        client = await connect({
          token,
          room,
          iceTransportPolicy: params.get('ice') === 'relay' ? 'relay' : 'all',
          // ?simulcast=0 sends the camera as one stream (the server then caps it with REMB).
          simulcast: params.get('simulcast') !== '0',
          followRedirects: false, // the page moves to the node instead (its CSP allows only its own origin)
        });
        break;
      } catch (err) {
        // The room's node died: until its lease runs out the cluster cannot
        // place the room (unavailable) or still names the dead node. Wait.
        const deadOwner = err.code === 'redirect' && lostNode && sameOrigin(err.url, lostNode);
        if (!(err.code === 'unavailable' || deadOwner) || attempt >= MAX_PLACEMENT_WAITS) throw err;
        overlay('Connection lost', 'Moving the call to another server…');
        await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 4000)));
      }
    }
    $('overlay').hidden = true;
  } catch (err) {
    if (err.code === 'redirect' && !(lostNode && sameOrigin(err.url, lostNode))) {
      if (!sameOrigin(err.url, location.origin) && !(await reachable(new URL('/healthz', err.url).toString()))) {
        // The room's node does not answer (it died since it was chosen):
        // try again shortly, from here, until the room is placed anew.
        console.warn(`huddle: the room's node ${err.url} does not answer; trying again`);
        reconnectLater();
        return;
      }
      if (rejoinPage(err.url)) return;
    }
    console.error('huddle: join failed:', err);
    setState('failed', err.code ?? 'error');
    const final = fatalJoinError(err.code) || err.code === 'no_token';
    overlay("Couldn't join the call", describeError(err), { rejoin: !final });
    return;
  }
  wire(client);
  window.huddle.doc = mountDoc(client, { toast });
  setState('joined');
  sessionStorage.removeItem(RETRIES_KEY);
  if (params.has('hop') || params.has('lost')) {
    params.delete('hop');
    params.delete('lost');
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? `?${q}` : ''));
  }
  updateControls();
  render();

  if (local.stream && local.stream.getTracks().length) {
    try {
      await client.publishMedia(local.stream);
    } catch (err) {
      console.error('huddle: publish failed:', err);
      if (err.code === 'permission_denied') {
        banner('This link lets you watch and listen, but not send your camera or microphone.');
        stopMedia();
      } else if (client.connectionState === 'joined') {
        banner(`Your camera and microphone could not be sent: ${describeError(err)}`);
      }
    }
    updateControls();
    render();
  }
}

function wire(c) {
  // A new connection starts with the server's defaults: send every view.
  for (const t of tiles.values()) t.sentView = null;
  const rerender = () => render();
  for (const ev of [
    'participant_joined',
    'participant_updated',
    'participant_left',
    'track_published',
    'track_unpublished',
    'track_muted',
    'track_subscribed',
    'track_unsubscribed',
    'local_published',
    'local_muted',
  ]) {
    c.on(ev, rerender);
  }
  c.on('presence', () => tiles.forEach(paintPresence));
  c.setActivity('in_call');
  c.on('local_published', ({ source }) => source === Source.SCREEN && c.setActivity('screen_sharing'));
  c.on('local_unpublished', ({ source }) => source === Source.SCREEN && c.setActivity('in_call'));
  c.on('quality', onQuality);
  c.on('participant_joined', (p) => toast(`${p.name || p.identity} joined`));
  c.on('participant_left', (p) => toast(`${p.name || p.identity} left`));
  c.on('error', (err) => {
    console.warn('huddle: server error:', err.code, err.message);
    if (err.code !== 'rate_limited') banner(describeError(err));
  });
  c.on('ice', ({ transport, state }) => {
    if (state === 'connected' && transport === 'subscribe') setState('media');
    if (state === 'failed') {
      banner(`Media could not connect (${transport}). A firewall may be blocking UDP.`, {
        label: 'Rejoin',
        run: () => location.reload(),
      });
    }
  });
  c.on('bye', (reason) => {
    if (leaving) return;
    const text = {
      removed: 'You were removed from the call.',
      room_closed: 'The room was closed.',
      shutdown: 'The server is shutting down.',
    }[reason];
    if (text) {
      setState('disconnected', reason);
      overlay('The call ended', text);
    }
  });
  // The room moved to another node of the cluster (drain, lost lease):
  // join again; the page's server redirects the join to the new node.
  c.on('redirect', ({ url }) => {
    if (!leaving) rejoinPage(url);
  });
  c.on('connection', ({ state }) => {
    if (leaving) return;
    if (state === 'disconnected') {
      setState('disconnected', 'disconnected');
      stopScreen();
      // The node may have died: a cluster places the room elsewhere once
      // its lease expires. Join again with backoff (1, 2, 4 … 10 s), a few
      // times.
      reconnectLater();
    }
  });
}

// reconnectLater joins again after a lost connection, with backoff (1, 2,
// 4 … 10 s), a few times: from this server when it answers, else (it
// died) from another live node of the cluster, which places the room
// again once the dead node's lease expires.
function reconnectLater() {
  const tries = Number(sessionStorage.getItem(RETRIES_KEY) || 0);
  if (tries >= MAX_AUTO_REJOIN) {
    overlay('Connection lost', 'The connection to the server was lost.');
    return;
  }
  overlay('Connection lost', 'Reconnecting…');
  sessionStorage.setItem(RETRIES_KEY, String(tries + 1));
  setTimeout(async () => {
    if (await answers('/healthz')) {
      rejoinPage();
      return;
    }
    // Another node, in random order so that the tabs of a dead node
    // spread: the first that answers (a cluster's pages may connect to
    // its nodes: their origins are in the page's CSP).
    const others = (client?.nodes ?? []).filter((u) => !sameOrigin(u, location.origin));
    others.sort(() => Math.random() - 0.5);
    for (const node of others) {
      if (await reachable(new URL('/healthz', node).toString())) {
        console.warn(`huddle: ${location.origin} does not answer; joining again from ${node}`);
        rejoinPage(node, location.origin);
        return;
      }
    }
    reconnectLater();
  }, Math.min(1000 * 2 ** tries, 10000));
}

// answers tells whether this page's server answers path within 2 s.
async function answers(path) {
  try {
    const res = await fetch(path, { cache: 'no-store', signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch {
    return false;
  }
}

// reachable tells whether a server of another origin answers url within
// 2 s: a no-cors request gets an opaque answer from a live server and a
// network error from a dead one.
async function reachable(url) {
  try {
    await fetch(url, { mode: 'no-cors', cache: 'no-store', signal: AbortSignal.timeout(2000) });
    return true;
  } catch {
    return false;
  }
}

function sameOrigin(a, b) {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

// devTokenForTab gets a dev token whose identity stays the same for this
// tab across reloads (session storage), so that the shared notes recognise
// an edit resubmitted after a reload as the same editor's.
async function devTokenForTab() {
  let identity;
  try {
    identity = sessionStorage.getItem('huddle.identity') || undefined;
  } catch {
    identity = undefined;
  }
  const t = await devToken({ room, name: myName, identity });
  try {
    sessionStorage.setItem('huddle.identity', t.identity);
  } catch {
    // not remembered: a reload is a new identity
  }
  return t.token;
}

// rejoinPage loads the call page again, with the token it was given, to
// join anew: from node (a cluster node's base URL, where the room moved)
// or from this server (the node went away). It refuses (false) after a
// few hops in a row, so that placement that keeps moving cannot loop.
// lost names a dead node the page leaves (the next page waits for the
// room's lease there to expire). Without a token, the dev identity goes
// along.
function rejoinPage(node, lost) {
  const q = new URLSearchParams(params);
  if (givenToken) q.set('token', givenToken);
  if (lost) q.set('lost', lost);
  if (node && !givenToken && !sameOrigin(node, location.origin)) {
    const identity = client?.you?.identity || sessionStorage.getItem('huddle.identity');
    if (identity) q.set('identity', identity);
  }
  const hops = Number(q.get('hop') || 0);
  if (node) {
    if (hops >= 4) return false;
    q.set('hop', String(hops + 1));
  } else {
    q.delete('hop');
  }
  const s = q.toString();
  location.replace(new URL(location.pathname + (s ? `?${s}` : ''), node || location.href).toString());
  return true;
}

async function leave() {
  if (leaving) return;
  leaving = true;
  try {
    await client?.leave();
  } finally {
    stopMedia();
    render();
    setState('left');
    overlay('You left the call', 'Rejoin whenever you like, or start a new call.');
  }
}

// ---------------------------------------------------------------------------
// Controls

function updateControls() {
  const joined = client?.connectionState === 'joined';
  const mic = $('mic');
  mic.disabled = !local.mic || !joined;
  mic.setAttribute('aria-pressed', String(!!local.mic && !local.mic.enabled));
  mic.title = !local.mic ? 'No microphone' : local.mic.enabled ? 'Mute microphone (m)' : 'Unmute microphone (m)';
  const cam = $('cam');
  cam.disabled = !local.cam || !joined;
  cam.setAttribute('aria-pressed', String(!!local.cam && !local.cam.enabled));
  cam.title = !local.cam ? 'No camera' : local.cam.enabled ? 'Turn camera off (v)' : 'Turn camera on (v)';
  const screen = $('screen');
  screen.disabled = !joined || !navigator.mediaDevices?.getDisplayMedia;
  screen.setAttribute('aria-pressed', String(!!local.screen));
  screen.title = local.screen ? 'Stop sharing your screen' : 'Share your screen';
  $('leave').disabled = !client || leaving;
}

function toggle(track) {
  if (!track || !client) return;
  client.setMuted(track, track.enabled);
  updateControls();
  render();
}

async function toggleScreen() {
  if (local.screen) {
    await stopScreen();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  } catch (err) {
    if (err.name !== 'NotAllowedError') banner(`Screen sharing failed: ${err.message}`);
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (!track) return;
  track.contentHint = 'detail';
  track.addEventListener('ended', () => stopScreen());
  local.screen = track;
  updateControls();
  render();
  try {
    await client.publish(track, { source: Source.SCREEN, stream });
  } catch (err) {
    banner(`Screen sharing failed: ${describeError(err)}`);
    await stopScreen();
  }
  render();
}

async function stopScreen() {
  const track = local.screen;
  if (!track) return;
  local.screen = null;
  track.stop();
  updateControls();
  render();
  try {
    if (client?.connectionState === 'joined') await client.unpublish(track);
  } catch (err) {
    console.warn('huddle: unpublish screen:', err);
  }
}

async function copyLink() {
  try {
    await navigator.clipboard.writeText(meetingLink);
    toast('Meeting link copied');
  } catch {
    banner(`Meeting link: ${meetingLink}`);
  }
}

function enableSound() {
  soundBlocked = false;
  for (const t of tiles.values()) {
    if (!t.spec.self) {
      t.video.muted = false;
      t.video.play().catch(() => {});
    }
  }
}

// ---------------------------------------------------------------------------
// Tiles

function participantName(sid) {
  if (!client || !sid) return '';
  const p = client.state.participant(sid);
  return p?.name || p?.identity || '';
}

/** wanted computes the tiles the call should show now. */
function wanted() {
  const want = new Map();
  const left = leaving || !client || client.connectionState !== 'joined';
  const selfName = client?.you?.name ?? myName;
  want.set('self', {
    sid: client?.you?.sid ?? '',
    name: selfName,
    self: true,
    screen: false,
    video: local.cam && local.cam.enabled && local.cam.readyState === 'live' ? local.cam : null,
    audio: null,
    micMuted: !local.mic || !local.mic.enabled,
    camOff: !local.cam || !local.cam.enabled,
  });
  if (local.screen) {
    want.set('self:screen', {
      sid: client?.you?.sid ?? '',
      name: `${selfName} (your screen)`,
      self: true,
      screen: true,
      video: local.screen,
      audio: null,
      micMuted: false,
      camOff: false,
    });
  }
  if (left) return want;
  for (const [sid, p] of client.participants) {
    const published = client.state.tracksOf(sid);
    const got = client.tracksOfParticipant(sid);
    const find = (pred) => got.find((b) => pred(b.source, b.kind));
    const cam = find((s, k) => k === 'video' && s !== Source.SCREEN);
    const mic = find((s, k) => k === 'audio' && s !== Source.SCREEN_AUDIO);
    const camInfo = published.find((t) => t.kind === 'video' && t.source !== Source.SCREEN);
    const micInfo = published.find((t) => t.kind === 'audio' && t.source !== Source.SCREEN_AUDIO);
    const name = p.name || p.identity;
    want.set(sid, {
      sid,
      name,
      self: false,
      screen: false,
      video: cam && !camInfo?.muted ? cam.track : null,
      videoSid: cam?.sid ?? null,
      audio: mic?.track ?? null,
      micMuted: !micInfo || !!micInfo.muted,
      camOff: !camInfo || !!camInfo.muted || !cam,
    });
    const screen = find((s, k) => k === 'video' && s === Source.SCREEN);
    if (screen) {
      const screenAudio = find((s, k) => k === 'audio' && s === Source.SCREEN_AUDIO);
      want.set(`${sid}:screen`, {
        sid,
        name: `${name} (screen)`,
        self: false,
        screen: true,
        video: screen.track,
        videoSid: screen.sid,
        audio: screenAudio?.track ?? null,
        micMuted: false,
        camOff: false,
      });
    }
  }
  return want;
}

function makeTile(key) {
  const el = $('tile-template').content.firstElementChild.cloneNode(true);
  const t = { key, el, video: el.querySelector('video'), spec: {}, tracks: [] };
  t.video.addEventListener('click', () => {
    if (soundBlocked) enableSound();
  });
  tiles.set(key, t);
  resizeWatch.observe(t.video);
  visibleWatch.observe(t.video);
  return t;
}

/** viewsChanged sends the tiles' views soon (layout settles first). */
function viewsChanged() {
  clearTimeout(viewsTimer);
  viewsTimer = setTimeout(sendViews, 250);
}

/** sendViews tells the server what changed in how remote videos are shown. */
function sendViews() {
  if (!client || leaving) return;
  const dpr = window.devicePixelRatio || 1;
  for (const t of tiles.values()) {
    const sid = t.spec.videoSid;
    if (!sid || t.spec.self || !t.spec.video) continue;
    const r = t.video.getBoundingClientRect();
    const w = Math.round(r.width * dpr);
    const h = Math.round(r.height * dpr);
    const paused = document.visibilityState === 'hidden' || t.onScreen === false || w === 0 || h === 0;
    const sent = t.sentView;
    if (sent && sent.sid === sid && sent.paused === paused) {
      // A change under 10 % does not move a layer boundary enough to matter.
      if (paused || (Math.abs(w - sent.w) <= sent.w / 10 && Math.abs(h - sent.h) <= sent.h / 10)) continue;
    }
    t.sentView = { sid, w, h, paused };
    t.el.dataset.view = paused ? 'paused' : `${w}x${h}`;
    client.subscribe([sid], paused ? { paused: true } : { paused: false, maxWidth: w, maxHeight: h });
  }
}

function updateTile(t, spec) {
  t.spec = spec;
  const el = t.el;
  el.dataset.key = t.key;
  el.dataset.sid = spec.sid;
  el.dataset.name = spec.name;
  el.classList.toggle('self', spec.self);
  el.classList.toggle('screen', spec.screen);
  el.classList.toggle('cam-off', !spec.video);
  el.classList.toggle('mirrored', spec.self && !spec.screen);
  el.querySelector('.name').textContent = spec.self && !spec.screen ? `${spec.name} (you)` : spec.name;
  el.querySelector('.mic-off').hidden = spec.screen || !spec.micMuted;
  el.querySelector('.avatar').textContent = initials(spec.name);
  paintPresence(t);
  showQuality(t);

  // The own tile is a muted preview; the others play their audio.
  t.video.muted = spec.self || soundBlocked;
  const tracks = [spec.video, spec.audio].filter(Boolean);
  const same = tracks.length === t.tracks.length && tracks.every((x, i) => x === t.tracks[i]);
  if (!same) {
    t.tracks = tracks;
    t.video.srcObject = tracks.length ? new MediaStream(tracks) : null;
    if (tracks.length) play(t);
  }
}

function play(t) {
  t.video.play().catch((err) => {
    if (err.name !== 'NotAllowedError' || t.video.muted) return;
    // Autoplay with sound is blocked until the person interacts: play
    // muted and offer to turn the sound on.
    soundBlocked = true;
    t.video.muted = true;
    t.video.play().catch(() => {});
    banner('Your browser blocked the sound.', { label: 'Turn sound on', run: enableSound });
  });
}

function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2);
  return s.toUpperCase();
}

function render() {
  const want = wanted();
  const grid = $('tiles');
  for (const [key, t] of tiles) {
    if (!want.has(key)) {
      t.video.srcObject = null;
      resizeWatch.unobserve(t.video);
      visibleWatch.unobserve(t.video);
      t.el.remove();
      tiles.delete(key);
    }
  }
  for (const [key, spec] of want) {
    const t = tiles.get(key) ?? makeTile(key);
    updateTile(t, spec);
    if (t.el.parentNode !== grid) grid.append(t.el);
  }
  viewsChanged();
  grid.dataset.count = String(Math.min(want.size, 10));
  grid.classList.toggle('has-screen', [...want.values()].some((s) => s.screen));
  $('count').textContent = String(client && !leaving ? client.participants.size + 1 : 1);
  updateControls();
}

// ---------------------------------------------------------------------------
// Wiring

$('mic').addEventListener('click', () => toggle(local.mic));
$('cam').addEventListener('click', () => toggle(local.cam));
$('screen').addEventListener('click', () => toggleScreen());
$('leave').addEventListener('click', () => leave());
$('copy-link').addEventListener('click', () => copyLink());
$('banner-close').addEventListener('click', () => hideBanner());
$('rejoin').addEventListener('click', () => location.reload());
setupDocPanel();
document.addEventListener('keydown', (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === 'm') toggle(local.mic);
  else if (ev.key === 'v') toggle(local.cam);
});
window.addEventListener('pagehide', () => client?.close({ goodbye: true }));

// Presence on the tiles: a dot (online, busy, away) and the status text.
function paintPresence(t) {
  if (!client || t.spec.screen) return;
  const identity = t.spec.self ? client.you?.identity : client.participants.get(t.spec.sid)?.identity;
  const p = identity ? client.presence.get(identity) : null;
  const caption = t.el.querySelector('figcaption');
  let dot = caption.querySelector('.presence-dot');
  let text = caption.querySelector('.presence-text');
  if (!dot) {
    dot = document.createElement('span');
    dot.className = 'presence-dot';
    text = document.createElement('span');
    text.className = 'presence-text';
    caption.prepend(dot);
    caption.append(text);
  }
  dot.dataset.state = p?.state ?? '';
  dot.title = p ? [p.state, p.activity?.replace('_', ' ')].filter(Boolean).join(' · ') : '';
  text.textContent = p?.text ?? '';
  t.el.dataset.presence = p?.state ?? '';
}

// ---------------------------------------------------------------------------
// Connection quality: the server's quality messages, shown on each tile

/** qualityBySid holds the latest quality message by participant SID ("self": one's own). */
const qualityBySid = new Map();
const qualityBars = { excellent: 3, good: 2, poor: 1, lost: 0 };

function onQuality(q) {
  const mine = !!q.stats;
  qualityBySid.set(mine ? 'self' : q.participant, q);
  for (const t of tiles.values()) {
    if (t.spec.self ? mine : t.spec.sid === q.participant) showQuality(t);
  }
}

/** showQuality puts a signal-bars indicator (level, score) in the tile's caption. */
function showQuality(t) {
  const q = qualityBySid.get(t.spec.self ? 'self' : t.spec.sid);
  let el = t.el.querySelector('.quality');
  if (!q || t.spec.screen) {
    if (el) el.hidden = true;
    return;
  }
  if (!el) {
    el = document.createElement('span');
    el.className = 'quality';
    el.innerHTML = '<i></i><i></i><i></i>';
    t.el.querySelector('figcaption').prepend(el);
  }
  el.hidden = false;
  el.dataset.level = q.level;
  el.dataset.bars = String(qualityBars[q.level] ?? 0);
  const parts = [`Connection: ${q.level} (${q.score.toFixed(1)} of 5)`];
  if (q.audio) parts.push(`audio ${q.audio.level} ${q.audio.score.toFixed(1)}`);
  if (q.video) parts.push(`video ${q.video.level} ${q.video.score.toFixed(1)}`);
  if (q.stats) parts.push(`estimate ${q.stats.est_kbps} kbit/s, loss ${q.stats.loss_pct}%, rtt ${q.stats.rtt_ms} ms`);
  el.title = parts.join('; ');
  el.setAttribute('aria-label', parts[0]);
}

start();
