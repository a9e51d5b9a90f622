// Sentinel dashboard: polls /admin/dashboard.json and draws it. No framework, no build step,
// nothing loaded from elsewhere (the Content-Security-Policy allows this file, the stylesheet
// and the feed only). Text goes in with textContent, never as HTML.
'use strict';

(function () {
  const FEED = 'admin/dashboard.json';
  const TOKEN_KEY = 'sentinel-admin-token';
  const MIN_POLL_MS = 1000;
  const CHART_SERIES = 8;
  const PALETTE = ['#0969da', '#1a7f37', '#bf3989', '#9a6700', '#8250df', '#0a7ea4', '#cf222e', '#57606a'];

  // What each state is called on the page, its colour class and how bad it is (sort order).
  const STATES = {
    down: ['down', 's-bad', 'bad', 0],
    ejected: ['ejected', 's-bad', 'bad', 1],
    breaker_open: ['breaker open', 's-bad', 'bad', 2],
    half_open: ['half-open', 's-warn', 'warn', 3],
    kept_by_ejection_limit: ['kept (ejection limit)', 's-warn', 'warn', 4],
    probing: ['probing (slow)', 's-info', 'info', 5],
    healthy: ['healthy', 's-ok', 'ok', 6],
  };
  const stateOf = (s) => STATES[s] || [s, 's-warn', 'warn', 3];

  // Columns: key, header, sort value, numeric.
  const COLUMNS = [
    ['name', 'Backend', (b) => b.name, false],
    ['address', 'Address', (b) => b.address, false],
    ['state', 'State', (b) => stateOf(b.state)[3], false],
    ['reason', 'Why', (b) => b.reason, false],
    ['in_flight', 'In-flight', (b) => b.in_flight, true],
    ['rps', 'Req/s', (b) => b.requests_per_sec, true],
    ['eps', 'Err/s', (b) => b.errors_per_sec, true],
    ['latency', 'Mean ms', (b) => (b.mean_latency_ms == null ? -1 : b.mean_latency_ms), true],
    ['ewma', 'EWMA ms', (b) => b.latency_ewma_ms, true],
    ['trend', 'Trend', null, false],
    ['cost', 'Cost', (b) => b.cost, true],
    ['weight', 'Weight', (b) => b.weight * b.slow_start_factor, true],
    ['breaker', 'Breaker', (b) => b.breaker, false],
    ['ejections', 'Ejected', (b) => b.ejections, true],
    ['requests', 'Requests', (b) => b.requests, true],
    ['errors', 'Errors', (b) => b.errors, true],
    ['idle', 'Idle', (b) => b.idle_connections, true],
  ];

  const HINTS = {
    in_flight: 'attempts in progress now',
    rps: 'attempts per second over the last sample',
    eps: 'failed attempts per second over the last sample',
    latency: 'mean attempt duration over the last sample (from the metrics histogram)',
    ewma: "the balancer's peak-EWMA latency estimate",
    cost: 'what the adaptive strategy compares: lower wins',
    weight: 'configured weight; while warming up, the slow-start share',
    ejections: 'times passive health ejected it',
    requests: 'attempts since it joined (or its settings last changed)',
    errors: 'failed attempts since then',
    idle: 'idle pooled connections',
  };
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  };

  let token = readToken();
  let since = 0;
  let startedMs = null;
  let feed = null;
  const history = new Map(); // "upstream/backend" -> [[at_ms, rps, eps, mean, ewma, inflight], ...]
  let sort = { key: null, asc: true };
  const expanded = new Set(); // rows whose reason shows whole, as 'upstream/backend'
  let timer = null;
  let lastOk = 0;

  function readToken() {
    // A token in the fragment (#token=...) never reaches a server or a log: take it, keep it
    // for this tab, and clear it from the address bar.
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      const t = decodeURIComponent(m[1]);
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* private mode */ }
      clearFragment();
      return t;
    }
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function clearFragment() {
    try { window.history.replaceState(null, '', location.pathname + location.search); } catch (e) { /* ignore */ }
  }

  async function poll() {
    clearTimeout(timer);
    let next = MIN_POLL_MS;
    try {
      const headers = { Accept: 'application/json' };
      if (token) headers.Authorization = 'Bearer ' + token;
      const res = await fetch(FEED + '?since=' + since, { headers, cache: 'no-store', credentials: 'omit' });
      if (res.status === 401) {
        showLogin(!!token);
        setLive('down', 'token required');
        return; // the form starts polling again
      }
      if (!res.ok) throw new Error('HTTP ' + res.status);
      const data = await res.json();
      $('login').hidden = true;
      if (!absorb(data)) {
        timer = setTimeout(poll, 0); // a restarted process: fetch its whole history
        return;
      }
      render();
      lastOk = Date.now();
      setLive('ok', 'live · ' + new Date(data.now_ms).toLocaleTimeString());
      next = Math.max(MIN_POLL_MS, data.sample_interval_ms || MIN_POLL_MS);
    } catch (err) {
      const ago = lastOk ? Math.round((Date.now() - lastOk) / 1000) + ' s ago' : 'never';
      setLive(lastOk ? 'stale' : 'down', 'unreachable · last update ' + ago);
      next = 2000;
    }
    timer = setTimeout(poll, next);
  }

  // Take a poll's answer in; false when it must be asked again from the start.
  function absorb(data) {
    // A restarted process numbers its samples from 1 again.
    // The history after our `since` was asked of the old one: ask again from the start.
    if ((startedMs !== null && data.started_ms !== startedMs) || data.seq < since) {
      history.clear();
      since = 0;
      startedMs = data.started_ms;
      return false;
    }
    startedMs = data.started_ms;
    const keep = Math.max(1, data.history_samples || 300);
    const present = new Set();
    for (const u of data.upstreams) {
      for (const b of u.backends) {
        const key = u.name + '/' + b.name;
        present.add(key);
        let points = history.get(key);
        if (!points) { points = []; history.set(key, points); }
        for (const p of b.history) points.push(p);
        if (points.length > keep) points.splice(0, points.length - keep);
      }
    }
    for (const key of Array.from(history.keys())) if (!present.has(key)) history.delete(key);
    since = data.seq;
    feed = data;
    return true;
  }

  function setLive(cls, text) {
    const live = $('live');
    live.className = 'live ' + cls;
    live.textContent = text;
  }

  function showLogin(refused) {
    $('login').hidden = false;
    $('login-error').hidden = !refused;
    $('token').focus();
  }

  // ---------- formatting ----------
  const fmtRate = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const fmtMs = (v) => (v == null ? '–' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const fmtCount = (v) => (v >= 1e9 ? (v / 1e9).toFixed(2) + 'G' : v >= 1e6 ? (v / 1e6).toFixed(2) + 'M' : v >= 1e4 ? (v / 1e3).toFixed(1) + 'k' : String(v));
  function fmtDuration(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + s + 's';
    return s + 's';
  }

  // ---------- rendering ----------
  function render() {
    $('version').textContent = 'v' + feed.version;
    $('uptime').textContent = feed.started_ms ? 'up ' + fmtDuration(feed.now_ms - feed.started_ms) : '';
    const full = feed.history_samples * feed.sample_interval_ms;
    const shown = chartSpan();
    const label = (ms) => (ms >= 60000 ? Math.round(ms / 60000) + ' min' : Math.round(ms / 1000) + ' s');
    $('window-label').textContent = 'last ' + label(shown) + (shown < full ? ' (keeps ' + label(full) + ')' : '');
    renderSummary();
    renderCharts();
    renderUpstreams();
    renderReloads();
  }

  function tile(label, value, unit, cls) {
    const t = el('div', 'tile' + (cls ? ' ' + cls : ''));
    t.appendChild(el('div', 'label', label));
    const v = el('div', 'value', value);
    if (unit) v.appendChild(el('small', null, ' ' + unit));
    t.appendChild(v);
    return t;
  }

  function renderSummary() {
    let total = 0, healthy = 0, rps = 0, eps = 0, inflight = 0, latSum = 0, latW = 0;
    for (const u of feed.upstreams) {
      for (const b of u.backends) {
        total++;
        if (b.state === 'healthy' || b.state === 'probing') healthy++;
        rps += b.requests_per_sec; eps += b.errors_per_sec; inflight += b.in_flight;
        if (b.mean_latency_ms != null && b.requests_per_sec > 0) { latSum += b.mean_latency_ms * b.requests_per_sec; latW += b.requests_per_sec; }
      }
    }
    const r = feed.reloads;
    const box = $('summary');
    box.replaceChildren(
      tile('Backends healthy', healthy + ' / ' + total, null, healthy < total ? (healthy === 0 ? 'bad' : 'warn') : null),
      tile('Upstreams', String(feed.upstreams.length)),
      tile('Requests / s', fmtRate(rps)),
      tile('Errors / s', fmtRate(eps), null, eps > 0 ? 'bad' : null),
      tile('Mean latency', latW ? fmtMs(latSum / latW) : '–', 'ms'),
      tile('In flight', String(inflight)),
      tile('Open connections', String(feed.connections_open)),
      tile('Reloads', String(r.applied), r.rejected ? '· ' + r.rejected + ' rejected' : null, r.rejected ? 'warn' : null),
    );
  }

  // The few backends with the most traffic in the window get a line each.
  function chartSeries() {
    const all = [];
    for (const u of feed.upstreams) {
      for (const b of u.backends) {
        const key = u.name + '/' + b.name;
        const points = history.get(key) || [];
        let sum = 0;
        for (const p of points) sum += p[1];
        all.push({ key, label: feed.upstreams.length > 1 ? key : b.name, points, sum, bad: stateOf(b.state)[2] === 'bad' });
      }
    }
    all.sort((a, b) => b.sum - a.sum || a.key.localeCompare(b.key));
    return { shown: all.slice(0, CHART_SERIES), hidden: Math.max(0, all.length - CHART_SERIES) };
  }

  // The span the charts cover: the samples there are, up to the configured window, so the
  // first minutes after a start are not squeezed against the right edge.
  function chartSpan() {
    const full = feed.history_samples * feed.sample_interval_ms;
    let oldest = feed.now_ms;
    for (const points of history.values()) if (points.length) oldest = Math.min(oldest, points[0][0]);
    return Math.min(full, Math.max(60000, feed.now_ms - oldest + feed.sample_interval_ms));
  }

  function renderCharts() {
    const { shown, hidden } = chartSeries();
    const now = feed.now_ms;
    const span = chartSpan();
    drawChart($('chart-rps'), shown, 1, now, span, fmtRate);
    drawChart($('chart-latency'), shown, 3, now, span, fmtMs);
    const legend = $('legend');
    legend.replaceChildren();
    shown.forEach((s, i) => {
      const item = el('span', null, s.label);
      item.style.setProperty('--swatch', PALETTE[i % PALETTE.length]);
      legend.appendChild(item);
    });
    if (hidden) legend.appendChild(el('span', 'muted', '+ ' + hidden + ' more with less traffic (see the tables)'));
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // More samples than the chart has room for are averaged into `count` buckets across the
  // span: a rate by its mean, a latency weighted by the requests behind it. Each bucket is
  // [time, requests/s, errors/s, mean latency or null].
  function downsample(points, now, span, count) {
    const width = span / count;
    const buckets = [];
    let current = null;
    for (const p of points) {
      if (p[0] < now - span) continue;
      const index = Math.min(count - 1, Math.floor((p[0] - (now - span)) / width));
      if (!current || current.index !== index) {
        if (current) buckets.push(current);
        current = { index, n: 0, rps: 0, eps: 0, lat: 0, weight: 0, t: 0 };
      }
      current.n++;
      current.t = p[0];
      current.rps += p[1];
      current.eps += p[2];
      if (p[3] != null) {
        const w = p[1] > 0 ? p[1] : 1e-9;
        current.lat += p[3] * w;
        current.weight += w;
      }
    }
    if (current) buckets.push(current);
    return buckets.map((b) => [b.t, b.rps / b.n, b.eps / b.n, b.weight ? b.lat / b.weight : null]);
  }

  function drawChart(canvas, series, field, now, span, fmt) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const lineColor = css.getPropertyValue('--line').trim();
    const muted = css.getPropertyValue('--muted').trim();
    const pad = { l: 48, r: 12, t: 10, b: 22 };
    const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
    const samples = Math.max(1, Math.round(span / (feed.sample_interval_ms || 1000)));
    const room = Math.max(10, Math.floor(pw / 3));
    series = series.map((s) => ({ ...s, points: samples > room ? downsample(s.points, now, span, room) : s.points }));
    let max = 0;
    for (const s of series) for (const p of s.points) if (p[field] != null && p[0] >= now - span) max = Math.max(max, p[field]);
    max = niceMax(max);
    const x = (t) => pad.l + pw * (1 - (now - t) / span);
    const y = (v) => pad.t + ph * (1 - v / max);
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.textBaseline = 'middle';
    ctx.fillStyle = muted;
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = lineColor;
      ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
      ctx.textAlign = 'right';
      ctx.fillText(fmt(v), pad.l - 6, yy);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const minutes = span / 60000;
    const step = minutes > 30 ? 10 : minutes > 10 ? 5 : minutes > 2.5 ? 1 : 0.5;
    for (let m = 0; m <= minutes + 1e-9; m += step) {
      const t = now - m * 60000;
      const text = m === 0 ? 'now' : m < 1 ? '−' + Math.round(m * 60) + ' s' : '−' + m + ' min';
      ctx.textAlign = m === 0 ? 'right' : 'center';
      ctx.fillText(text, Math.max(pad.l + 14, x(t)), h - pad.b + 6);
    }
    series.forEach((s, i) => {
      ctx.strokeStyle = PALETTE[i % PALETTE.length];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false, prevT = 0;
      for (const p of s.points) {
        const t = p[0], v = p[field];
        if (t < now - span) continue;
        // A gap (no value, or samples missing) lifts the pen.
        if (v == null || (pen && t - prevT > 3 * Math.max(feed.sample_interval_ms || 1000, span / room))) { pen = false; if (v == null) continue; }
        const xx = x(t), yy = y(Math.min(v, max));
        if (pen) ctx.lineTo(xx, yy); else ctx.moveTo(xx, yy);
        pen = true; prevT = t;
      }
      ctx.stroke();
    });
    if (!series.some((s) => s.points.length)) {
      ctx.fillStyle = muted; ctx.textAlign = 'center'; ctx.textBaseline = 'middle';
      ctx.fillText('collecting samples…', pad.l + pw / 2, pad.t + ph / 2);
    }
  }

  function sparkline(points, now, span) {
    const W = 100, H = 24;
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('width', W); svg.setAttribute('height', H);
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('class', 'spark');
    const samples = Math.max(1, Math.round(span / (feed.sample_interval_ms || 1000)));
    if (samples > W / 2) points = downsample(points, now, span, W / 2);
    let max = 0;
    for (const p of points) if (p[3] != null && p[0] >= now - span) max = Math.max(max, p[3]);
    max = niceMax(max);
    const title = document.createElementNS(ns, 'title');
    title.textContent = 'mean latency, scale 0–' + fmtMs(max) + ' ms; red: errors';
    svg.appendChild(title);
    let line = '', fail = '';
    let pen = false;
    for (const p of points) {
      if (p[0] < now - span) continue;
      const xx = (W * (1 - (now - p[0]) / span)).toFixed(1);
      if (p[3] == null) { pen = false; } else {
        const yy = (H - 1 - (H - 3) * Math.min(p[3], max) / max).toFixed(1);
        line += (pen ? 'L' : 'M') + xx + ' ' + yy;
        pen = true;
      }
      if (p[2] > 0) fail += 'M' + xx + ' ' + H + 'V' + (H - 6);
    }
    if (line) {
      const path = document.createElementNS(ns, 'path');
      path.setAttribute('class', 'line'); path.setAttribute('d', line);
      svg.appendChild(path);
    }
    if (fail) {
      const path = document.createElementNS(ns, 'path');
      path.setAttribute('class', 'fail'); path.setAttribute('d', fail);
      svg.appendChild(path);
    }
    return svg;
  }

  function matchesFilter(u, b, text, problemsOnly) {
    if (problemsOnly && b.state === 'healthy' && b.errors_per_sec === 0) return false;
    if (!text) return true;
    const hay = (u.name + ' ' + b.name + ' ' + b.address + ' ' + stateOf(b.state)[0] + ' ' + b.state + ' ' + b.reason).toLowerCase();
    return hay.includes(text);
  }

  function headerRow() {
    const tr = el('tr');
    for (const [key, label, value, numeric] of COLUMNS) {
      const th = el('th', (numeric ? 'num ' : '') + (value ? 'sortable' : ''), label);
      if (value) {
        th.dataset.sort = key;
        if (sort.key === key) th.classList.add('sorted', ...(sort.asc ? ['asc'] : []));
        th.title = (HINTS[key] ? HINTS[key] + '; ' : '') + 'click to sort';
      }
      if (key === 'name') th.classList.add('first');
      tr.appendChild(th);
    }
    return tr;
  }

  function cell(tr, cls, text) {
    const td = el('td', cls, text);
    tr.appendChild(td);
    return td;
  }

  function backendRow(u, b, span) {
    const [label, rowCls, badgeCls] = stateOf(b.state);
    const tr = el('tr', rowCls);
    tr.dataset.backend = b.name;
    tr.dataset.upstream = u.name;
    tr.dataset.state = b.state;
    cell(tr, 'name first', b.name);
    cell(tr, 'addr', b.address);
    const st = cell(tr, 'state');
    st.appendChild(el('span', 'badge ' + badgeCls, label));
    if (!b.in_rotation) st.title = 'out of rotation';
    let why = b.reason;
    if (b.active_check && b.active_check.last_error && b.active_check.state === 'down' && !why.includes(b.active_check.last_error)) why += ' (' + b.active_check.last_error + ')';
    const reason = cell(tr, 'why', why);
    reason.title = why + ' (click to show it whole)';
    if (expanded.has(u.name + '/' + b.name)) tr.classList.add('expanded');
    cell(tr, 'num' + (b.in_flight ? '' : ' zero'), String(b.in_flight));
    cell(tr, 'num' + (b.requests_per_sec ? '' : ' zero'), fmtRate(b.requests_per_sec));
    cell(tr, 'num' + (b.errors_per_sec ? ' errs' : ' zero'), fmtRate(b.errors_per_sec));
    cell(tr, 'num', fmtMs(b.mean_latency_ms));
    cell(tr, 'num', fmtMs(b.latency_ewma_ms));
    const trend = cell(tr, 'trend');
    trend.title = 'mean latency over the window; red ticks: errors';
    trend.appendChild(sparkline(history.get(u.name + '/' + b.name) || [], feed.now_ms, span));
    cell(tr, 'num', b.cost.toFixed(2));
    const weight = cell(tr, 'num', String(b.weight));
    if (b.slow_start_factor < 1) weight.appendChild(el('span', 'warm', ' · ' + Math.round(b.slow_start_factor * 100) + '% warm'));
    const breaker = cell(tr, 'breaker');
    breaker.appendChild(el('span', 'badge ' + (b.breaker === 'closed' ? 'ok' : b.breaker === 'open' ? 'bad' : 'warn'), b.breaker.replace('_', '-')));
    cell(tr, 'num' + (b.ejections ? '' : ' zero'), String(b.ejections));
    cell(tr, 'num', fmtCount(b.requests));
    cell(tr, 'num' + (b.errors ? ' errs' : ' zero'), fmtCount(b.errors));
    cell(tr, 'num', String(b.idle_connections));
    return tr;
  }

  function renderUpstreams() {
    const text = $('filter').value.trim().toLowerCase();
    const problemsOnly = $('problems').checked;
    const column = COLUMNS.find((c) => c[0] === sort.key);
    const span = chartSpan();
    const box = $('upstreams');
    const cards = [];
    for (const u of feed.upstreams) {
      const card = el('section', 'card upstream');
      card.dataset.upstream = u.name;
      const head = el('div', 'card-head');
      const left = el('div', 'group-head');
      left.appendChild(el('h2', null, u.name));
      left.appendChild(el('span', 'muted', u.strategy.replace(/_/g, ' ')));
      const counts = el('span', 'counts');
      const byState = new Map();
      let rps = 0, eps = 0;
      for (const b of u.backends) { byState.set(b.state, (byState.get(b.state) || 0) + 1); rps += b.requests_per_sec; eps += b.errors_per_sec; }
      for (const [s, n] of Array.from(byState.entries()).sort((a, b) => stateOf(a[0])[3] - stateOf(b[0])[3])) {
        counts.appendChild(el('span', 'badge ' + stateOf(s)[2], n + ' ' + stateOf(s)[0]));
      }
      left.appendChild(counts);
      if (u.fail_open) left.appendChild(el('span', 'badge bad', 'failing open: no backend passes, every pick ignores health'));
      head.appendChild(left);
      head.appendChild(el('span', 'muted', fmtRate(rps) + ' req/s · ' + fmtRate(eps) + ' err/s · ' + u.backends.length + ' backends'));
      card.appendChild(head);
      let rows = u.backends.filter((b) => matchesFilter(u, b, text, problemsOnly));
      if (column) {
        const get = column[2];
        rows = rows.slice().sort((a, b) => {
          const va = get(a), vb = get(b);
          const c = typeof va === 'string' ? va.localeCompare(vb) : va - vb;
          return sort.asc ? c : -c;
        });
      }
      if (!rows.length) {
        card.appendChild(el('div', 'empty', u.backends.length ? 'No backend matches the filter.' : 'No backends.'));
      } else {
        const scroll = el('div', 'scroll');
        const table = el('table', 'backends');
        const thead = el('thead');
        thead.appendChild(headerRow());
        table.appendChild(thead);
        const tbody = el('tbody');
        for (const b of rows) tbody.appendChild(backendRow(u, b, span));
        table.appendChild(tbody);
        scroll.appendChild(table);
        card.appendChild(scroll);
      }
      cards.push(card);
    }
    if (!cards.length) cards.push(el('div', 'card empty', 'No upstream groups are configured.'));
    box.replaceChildren(...cards);
    $('sort-label').textContent = column ? 'sorted by ' + column[1].toLowerCase() + (sort.asc ? ', ascending' : ', descending') + ' (click again to flip, a third time for config order)' : 'in config order; click a column to sort';
  }

  function renderReloads() {
    const r = feed.reloads;
    $('reload-counts').textContent = r.applied + ' applied · ' + r.rejected + ' rejected' + (r.last_success_ms ? ' · last success ' + new Date(r.last_success_ms).toLocaleString() : '');
    const body = $('reloads');
    const rows = r.recent.map((e) => {
      const tr = el('tr');
      const when = cell(tr, 'when', new Date(e.at_ms).toLocaleString());
      when.title = fmtDuration(feed.now_ms - e.at_ms) + ' ago';
      const res = cell(tr, 'result');
      res.appendChild(el('span', 'badge ' + (e.result === 'rejected' ? 'bad' : e.result === 'applied' ? 'ok' : 'info'), e.result));
      cell(tr, 'trigger', e.trigger);
      cell(tr, 'detail', e.detail || (e.result === 'loaded' ? 'the config the process started with' : ''));
      return tr;
    });
    if (!rows.length) {
      const tr = el('tr');
      const td = cell(tr, 'empty', 'No config load recorded yet.');
      td.colSpan = 4;
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  // ---------- wiring ----------
  function start() {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      token = $('token').value.trim();
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode */ }
      $('token').value = '';
      poll();
    });
    $('upstreams').addEventListener('click', (ev) => {
      const why = ev.target.closest('td.why');
      if (why) {
        const tr = why.parentElement;
        const key = tr.dataset.upstream + '/' + tr.dataset.backend;
        if (expanded.has(key)) expanded.delete(key); else expanded.add(key);
        tr.classList.toggle('expanded', expanded.has(key));
        return;
      }
      const th = ev.target.closest('th[data-sort]');
      if (!th) return;
      const key = th.dataset.sort;
      if (sort.key !== key) sort = { key, asc: key === 'name' || key === 'reason' || key === 'state' };
      else if (sort.asc === (key === 'name' || key === 'reason' || key === 'state')) sort.asc = !sort.asc;
      else sort = { key: null, asc: true };
      if (feed) renderUpstreams();
    });
    $('filter').addEventListener('input', () => feed && renderUpstreams());
    $('problems').addEventListener('change', () => feed && renderUpstreams());
    window.addEventListener('resize', () => feed && renderCharts());
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
