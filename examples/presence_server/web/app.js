// The presence page: a live roster over WS /presence/stream, overrides with
// POST/DELETE /presence/override, and a history panel from
// GET /presence/history. Plain JavaScript, no build step.
'use strict';

// The token comes in the URL's fragment (#token=..., never sent to a
// server); it moves to this tab's session storage and leaves the address
// bar, so that it is in no history, bookmark or screenshot.
const fromUrl = new URLSearchParams(location.hash.slice(1)).get('token') ||
                new URLSearchParams(location.search).get('token');
if (fromUrl) {
  sessionStorage.setItem('presence.token', fromUrl);
  history.replaceState(null, '', location.pathname);
}
const token = sessionStorage.getItem('presence.token') || '';
// One device per tab; a reload keeps it, so the server sees a new session
// of the same device (inside the reconnect grace nobody sees a thing).
let deviceId = sessionStorage.getItem('presence.device');
if (!deviceId) {
  deviceId = 'web-' + Math.random().toString(36).slice(2, 10);
  sessionStorage.setItem('presence.device', deviceId);
}

const el = (id) => document.getElementById(id);
const view = {
  me: null,
  friends: [],          // the list, the user first
  list: new Map(),      // user -> entry, from the subscriber's own list
  topics: new Map(),    // topic -> {members: Map(user -> entry), counts}
  overrides: [],        // the user's own override stack
  selected: null,
};
let ws = null;
let heartbeat = null;
let activity = 'active';
let lastInput = Date.now();
let renderQueued = false;
let retryMs = 500;

function authHeaders() { return { 'Authorization': 'Bearer ' + token }; }
function showError(msg) { el('error').textContent = msg || ''; }

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}/presence/stream` +
              `?device_id=${encodeURIComponent(deviceId)}&platform=web`;
  ws = new WebSocket(url);
  el('conn').textContent = 'connecting…';
  ws.onopen = () => {
    // A browser cannot set headers on a WebSocket: the token is the first
    // message.
    ws.send(JSON.stringify({ type: 'auth', token }));
    el('conn').textContent = 'connected';
    retryMs = 500;
  };
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    clearInterval(heartbeat);
    el('conn').textContent = `disconnected (${ev.code}${ev.reason ? ' ' + ev.reason : ''}); retrying`;
    if (ev.code === 1008 && !view.me) showError('refused: is the token right? (open the URL the server printed)');
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

function send(msg) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); }

function onMessage(m) {
  switch (m.type) {
    case 'welcome':
      view.me = m.user_id;
      view.friends = m.friends;
      el('me-name').textContent = m.user_id;
      send({ type: 'subscribe', id: 1, users: m.friends, topics: m.topics });
      clearInterval(heartbeat);
      heartbeat = setInterval(() => send({ type: 'heartbeat', activity }), m.heartbeat_interval_ms || 1000);
      refreshMe();
      break;
    case 'snapshot':
      view.list.clear();
      view.topics.clear();
      apply(m);
      break;
    case 'diff': {
      const shown = stateOf(view.selected);
      apply(m);
      // The history panel follows its user: reload it when that user moves.
      if (view.selected && stateOf(view.selected) !== shown) showHistory(view.selected);
      break;
    }
    case 'error':
      showError(`${m.code}: ${m.message}`);
      break;
  }
  queueRender();
}

function stateOf(user) {
  if (!user) return undefined;
  const u = view.list.get(user);
  if (u) return u.state;
  for (const t of view.topics.values()) if (t.members.has(user)) return t.members.get(user).state;
  return undefined;
}

function newer(old, u) { return !old || !(u.version <= old.version); }

function apply(batch) {
  for (const u of batch.users) {
    if (u.removed) view.list.delete(u.user_id);
    else if (newer(view.list.get(u.user_id), u)) view.list.set(u.user_id, u);
  }
  for (const t of batch.topics) {
    if (t.left) { view.topics.delete(t.topic); continue; }
    let topic = view.topics.get(t.topic);
    if (!topic || t.full) {
      topic = { members: new Map(), counts: null };
      view.topics.set(t.topic, topic);
    }
    if (t.counts) topic.counts = t.counts;
    for (const u of t.users) {
      if (u.removed) topic.members.delete(u.user_id);
      else if (newer(topic.members.get(u.user_id), u)) topic.members.set(u.user_id, u);
    }
  }
}

async function refreshMe() {
  if (!view.me) return;
  try {
    const r = await fetch(`/presence?user_ids=${encodeURIComponent(view.me)}`, { headers: authHeaders() });
    const body = await r.json();
    if (!r.ok) { showError(`${body.error}: ${body.message}`); return; }
    view.overrides = body.users[0].overrides || [];
    queueRender();
  } catch (e) { /* the stream's retry will tell */ }
}

async function setOverride(state) {
  const r = await fetch('/presence/override', {
    method: 'POST', headers: { ...authHeaders(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ state }),
  });
  const body = await r.json();
  if (!r.ok) showError(`${body.error}: ${body.message}`); else showError('');
  refreshMe();
}

async function clearOverrides() {
  const r = await fetch('/presence/override?all=true', { method: 'DELETE', headers: authHeaders() });
  const body = await r.json();
  if (!r.ok) showError(`${body.error}: ${body.message}`); else showError('');
  refreshMe();
}

async function showHistory(user) {
  view.selected = user;
  queueRender();
  el('history-user').textContent = '· ' + user;
  const list = el('history-list');
  const to = Date.now();
  const r = await fetch(`/presence/history?user_id=${encodeURIComponent(user)}&from=${to - 3600e3}&to=${to + 60e3}`,
                        { headers: authHeaders() });
  const body = await r.json();
  list.textContent = '';
  if (!r.ok) { showError(`${body.error}: ${body.message}`); return; }
  const items = body.transitions.slice().reverse();
  if (items.length === 0) list.innerHTML = '<li class="state">no transitions in this window</li>';
  for (const t of items) {
    const li = document.createElement('li');
    const when = document.createElement('span');
    when.className = 'when';
    when.textContent = new Date(t.at_ms).toLocaleTimeString();
    li.appendChild(when);
    li.appendChild(dot(t.state));
    li.appendChild(document.createTextNode(` ${t.previous} → ${t.state}` + (t.cause ? ` (${t.cause})` : '')));
    list.appendChild(li);
  }
  if (body.time_in_states_ms) {
    const d = body.time_in_states_ms, li = document.createElement('li');
    const f = (ms) => (ms / 60000).toFixed(1) + ' min';
    li.className = 'state';
    li.textContent = `this hour: online ${f(d.online)}, away ${f(d.away)}, dnd ${f(d.dnd)}, offline ${f(d.offline)}`;
    list.prepend(li);
  }
}

function dot(state, extra) {
  const s = document.createElement('span');
  s.className = 'dot ' + state + (extra ? ' ' + extra : '');
  s.title = state;
  return s;
}

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 2) return 'now';
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  return Math.floor(s / 3600) + ' h ago';
}

function devices(d) {
  if (!d) return '';
  return Object.entries(d).filter(([, n]) => n > 0).map(([p, n]) => `${p} ${n}`).join(', ');
}

const rowOf = new Map();  // user -> its <tr>
function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  // The list first (the user, then friends), then topic members not in it.
  const rows = [];
  const seen = new Set();
  for (const id of view.friends) {
    // A friend the server says nothing of was never seen (or was erased):
    // shown offline, last seen never.
    rows.push(view.list.get(id) || { user_id: id, state: 'offline', last_seen_ms: 0, devices: null });
    seen.add(id);
  }
  const counts = { online: 0, away: 0, dnd: 0, offline: 0 };
  const topicNames = [...view.topics.keys()].sort();
  for (const name of topicNames) {
    const members = [...view.topics.get(name).members.values()].sort((a, b) => a.user_id.localeCompare(b.user_id));
    for (const u of members) {
      if (!seen.has(u.user_id)) { rows.push(u); seen.add(u.user_id); }
    }
  }
  for (const u of rows) counts[u.state] = (counts[u.state] || 0) + 1;
  const countsText = topicNames.map((n) => {
    const c = view.topics.get(n).counts;
    return c ? ` · ${n}: ${c.online} online, ${c.away} away, ${c.dnd} dnd, ${c.offline} offline` : '';
  }).join('');
  el('counts').textContent = `${rows.length} users: ${counts.online} online, ${counts.away} away, ` +
                             `${counts.dnd} dnd, ${counts.offline} offline` +
                             (topicNames.length ? ` · topics: ${topicNames.join(', ')}` : '') + countsText;

  const invisible = view.overrides.some((o) => o.state === 'invisible');
  // Rows are kept per user and updated in place, so that they stay put
  // under the pointer while diffs stream in.
  const tbody = el('roster');
  const keep = new Set();
  rows.forEach((u, i) => {
    keep.add(u.user_id);
    let tr = rowOf.get(u.user_id);
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset.user = u.user_id;
      for (let k = 0; k < 5; k++) tr.appendChild(document.createElement('td'));
      tr.cells[0].appendChild(dot('offline'));
      tr.cells[2].className = tr.cells[3].className = tr.cells[4].className = 'state';
      tr.onclick = () => showHistory(u.user_id);
      rowOf.set(u.user_id, tr);
    }
    const isMe = u.user_id === view.me;
    const cls = 'user' + (u.user_id === view.selected ? ' selected' : '');
    if (tr.className !== cls) tr.className = cls;
    if (tr.dataset.state !== u.state) tr.dataset.state = u.state;
    const dotCls = 'dot ' + u.state + (isMe && invisible ? ' invisible' : '');
    if (tr.cells[0].firstChild.className !== dotCls) {
      tr.cells[0].firstChild.className = dotCls;
      tr.cells[0].firstChild.title = u.state;
    }
    const name = u.user_id + (isMe ? (invisible ? ' (you, invisible)' : ' (you)') : '');
    setText(tr.cells[1], name);
    setText(tr.cells[2], u.state);
    setText(tr.cells[3], u.state === 'offline' ? ago(u.last_seen_ms) : (u.last_seen_ms ? 'now' : ''));
    setText(tr.cells[4], devices(u.devices));
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
  for (const [id, tr] of rowOf) {
    if (!keep.has(id)) { tr.remove(); rowOf.delete(id); }
  }

  const me = view.list.get(view.me);
  const meDot = el('me-dot');
  const meState = me ? me.state : 'offline';
  meDot.className = 'dot ' + meState + (invisible ? ' invisible' : '');
  meDot.dataset.state = meState;
  el('me-state').textContent = meState + (invisible ? ' (invisible)' : '');
  el('btn-dnd').classList.toggle('active', view.overrides.some((o) => o.state === 'dnd'));
  el('btn-invisible').classList.toggle('active', invisible);
}

// Activity: idle when the tab is hidden or nobody touched it for a minute.
function setActivity(a) {
  if (a === activity) return;
  activity = a;
  send({ type: 'activity', activity: a });
}
for (const ev of ['mousemove', 'keydown', 'pointerdown', 'scroll']) {
  addEventListener(ev, () => { lastInput = Date.now(); if (!document.hidden) setActivity('active'); }, { passive: true });
}
document.addEventListener('visibilitychange', () => setActivity(document.hidden ? 'idle' : 'active'));
setInterval(() => {
  if (Date.now() - lastInput > 60000) setActivity('idle');
  queueRender();      // "last seen" moves on
}, 1000);
setInterval(refreshMe, 5000);  // overrides with an end time expire

el('btn-dnd').onclick = () => setOverride('dnd');
el('btn-invisible').onclick = () => setOverride('invisible');
el('btn-clear').onclick = () => clearOverrides();
// No "bye" on pagehide: a reload or a closed tab is an abrupt end, so a
// reload inside the reconnect grace shows nothing to anyone.

if (!token) showError('no token: open the URL that presence_server printed (it ends in #token=...)');
connect();
