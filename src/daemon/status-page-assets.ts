/**
 * The status page's three files (proposals/daemon.md §Status page). The script builds every cell
 * with `textContent` — nothing the relay or another device wrote is ever parsed as HTML — and the
 * page's Content-Security-Policy allows only these files and `/status/data`.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>opsync</title>
<link rel="stylesheet" href="/status/app.css">
<script src="/status/app.js" defer></script>
</head>
<body>
<header><h1>opsync <span id="device"></span></h1><p id="summary">Loading…</p></header>
<main>
<section><h2>Devices</h2><table id="devices"><thead><tr><th>Device</th><th>Status</th><th>Behind</th><th>Last seen</th></tr></thead><tbody></tbody></table></section>
<section><h2>Activity, last 10 minutes</h2><div class="charts"><figure><figcaption id="caption-appends">Appends</figcaption><div id="chart-appends"></div></figure><figure><figcaption id="caption-pumps">Pumps</figcaption><div id="chart-pumps"></div></figure></div></section>
<section><h2>Leases</h2><table id="leases"><thead><tr><th>Agent</th><th>Holder</th><th>Epoch</th><th>Expires</th></tr></thead><tbody></tbody></table></section>
<section><h2>Conversations</h2><table id="conversations"><thead><tr><th>Conversation</th><th>Turns</th><th>Last turn</th></tr></thead><tbody></tbody></table></section>
<section><h2>Recent warnings and errors</h2><table id="errors"><thead><tr><th>When</th><th>Level</th><th>What</th></tr></thead><tbody></tbody></table></section>
</main>
</body>
</html>
`;

export const PAGE_CSS = `:root { color-scheme: light dark; --muted: #777; --ok: #2a7d46; --warn: #b26b00; --bad: #b3261e; --line: #8884; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1.5rem; }
h1 { font-size: 1.4rem; margin: 0; } h1 span { color: var(--muted); font-weight: normal; }
h2 { font-size: 1rem; margin: 1.6rem 0 .5rem; }
#summary { color: var(--muted); margin: .3rem 0 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
th { font-weight: 600; color: var(--muted); }
td.empty { color: var(--muted); font-style: italic; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
figure { margin: 0; } figcaption { color: var(--muted); font-size: .85rem; }
svg { width: 100%; height: 70px; } svg path { fill: none; stroke: currentColor; stroke-width: 1.5; } svg rect { fill: #8881; }
`;

export const PAGE_JS = `'use strict';
const $ = (id) => document.getElementById(id);
const ago = (ms) => ms < 1500 ? 'just now' : ms < 90000 ? Math.round(ms / 1000) + ' s ago' : ms < 5400000 ? Math.round(ms / 60000) + ' min ago' : Math.round(ms / 3600000) + ' h ago';
const cell = (text, cls) => { const td = document.createElement('td'); td.textContent = String(text); if (cls) td.className = cls; return td; };
function fill(id, rows, empty, columns) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...(rows.length ? rows.map((row) => { const tr = document.createElement('tr'); tr.append(...row); return tr; })
    : [(() => { const tr = document.createElement('tr'); const td = cell(empty, 'empty'); td.colSpan = columns; tr.append(td); return tr; })()]));
}
function chart(name, label, values, intervalMs) {
  const total = values.reduce((sum, v) => sum + v, 0);
  const span = values.length * intervalMs;
  $('caption-' + name).textContent = label + ': ' + total + ' in the last ' + (span < 120000 ? Math.round(span / 1000) + ' s' : Math.round(span / 60000) + ' min');
  const id = 'chart-' + name;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 300 70'); svg.setAttribute('preserveAspectRatio', 'none');
  const back = document.createElementNS(ns, 'rect'); back.setAttribute('width', '300'); back.setAttribute('height', '70'); svg.append(back);
  const max = Math.max(1, ...values);
  const path = document.createElementNS(ns, 'path');
  const points = values.length > 1 ? values : [values[0] || 0, values[0] || 0];
  const stride = 300 / (points.length - 1);
  path.setAttribute('d', points.map((v, i) => (i ? 'L' : 'M') + (i * stride).toFixed(1) + ' ' + (66 - (v / max) * 62).toFixed(1)).join(' '));
  svg.append(path);
  const title = document.createElementNS(ns, 'title');
  title.textContent = 'peak ' + (max * 1000 / intervalMs).toFixed(1) + '/s';
  svg.append(title);
  $(id).replaceChildren(svg);
}
function render(d) {
  $('device').textContent = d.device_id;
  const behind = d.devices.filter((x) => !x.self && x.lag > 0).length;
  $('summary').textContent = 'version ' + d.version + ' · up ' + ago(d.uptime_ms).replace(' ago', '') + ' · relay ' + d.relay + ' · leases ' + d.lease_backend
    + ' · ' + d.counts.unpushed + ' unpushed · ' + (behind ? behind + ' device(s) behind' : 'every device caught up') + (d.last_error ? ' · last error: ' + d.last_error : '');
  fill('devices', d.devices.map((x) => [cell(x.device_id + (x.self ? ' (this device)' : '')), cell(x.status, x.status === 'active' ? 'ok' : 'warn'),
    cell(x.lag ? x.lag + ' ops' : 'caught up', x.lag ? 'warn' : 'ok'), cell(x.self ? 'now' : ago(d.now_ms - x.last_seen_ms))]), 'No device has registered yet.', 4);
  fill('leases', d.leases.map((l) => [cell(l.agent_id), cell(l.live ? l.holder : '(free)', l.live ? 'ok' : ''), cell(l.epoch),
    cell(l.live ? 'in ' + Math.round((l.expires_at_ms - d.now_ms) / 1000) + ' s' : 'expired')]), 'No lease asked for through this daemon.', 4);
  fill('conversations', d.conversations.map((c) => [cell(c.conversation_id), cell(c.turns), cell(ago(d.now_ms - c.last_ms))]), 'No conversations yet.', 3);
  fill('errors', d.errors.slice().reverse().map((e) => [cell(ago(d.now_ms - e.at_ms)), cell(e.level, e.level === 'warn' ? 'warn' : 'bad'),
    cell((e.code ? e.code + ': ' : '') + e.message)]), 'None.', 3);
  chart('appends', 'Appends', d.rates.series.appends || [], d.rates.interval_ms);
  chart('pumps', 'Pumps', d.rates.series.pumps || [], d.rates.interval_ms);
  document.body.dataset.loaded = 'true';
}
async function refresh() {
  try {
    const response = await fetch('/status/data', { credentials: 'same-origin', cache: 'no-store' });
    if (!response.ok) { $('summary').textContent = response.status === 401 ? 'This page has expired: run opsync status --web for a new link.' : 'The daemon answered ' + response.status + '.'; return; }
    render(await response.json());
  } catch (error) {
    $('summary').textContent = 'The daemon does not answer (stopped?). Retrying…';
  }
}
refresh();
setInterval(refresh, 5000);
`;
