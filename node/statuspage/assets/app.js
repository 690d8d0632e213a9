// The live status page of a distcache node. It polls the node's open admin
// reads (/v1/status, /v1/members, /metrics, /readyz), keeps the last minutes of
// figures in this browser for the plots, and says what is wrong and what to do
// about it. The node keeps nothing for the page. Plain DOM and hand-made SVG:
// no library, no build step.
'use strict';

(function () {
  // How often each read is made, and what is kept.
  const POLL_MS = 1000;          // status, metrics, readiness
  const MEMBERS_MS = 2000;       // members (the node asks every member for it)
  const FETCH_TIMEOUT_MS = 4000;
  const WINDOW_MS = 5 * 60 * 1000; // the plots show the last five minutes
  const LATENCY_WINDOW_MS = 5000;  // write latency quantiles over the last seconds
  const GAP_MS = 5000;             // samples further apart than this are not joined

  // When a figure becomes trouble.
  const LAG_WARN = 1000;           // log entries behind the leader
  const CONTACT_WARN_MS = 3000;    // since a follower heard from the leader
  const CAP_WARN = 0.9;            // share of -sessions or -max-bytes
  const ELECTIONS_WARN = 4;        // leaders elected in the last hour
  const WRITE_ERRORS_HOLD_MS = 10000; // keep the warning up this long after the last error
  const UNREACHABLE_AFTER_MS = 3000;

  const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#475569'];
  const PROTOCOLS = ['distcache', 'memcache', 'resp', 'sessiond'];
  const RESULTS = [
    { key: 'hit', color: '#16a34a' },
    { key: 'miss', color: '#8b95a5' },
    { key: 'stored', color: '#2563eb' },
    { key: 'exists', color: '#d97706' },
    { key: 'error', color: '#dc2626' },
  ];
  // Commands that go through the Raft log: their latency is the write latency.
  const WRITES = new Set(['add', 'set', 'remove', 'take']);
  // Commands whose success is a hit (a session was found) rather than a store.
  const READS = new Set(['get', 'have', 'take']);

  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';

  const state = {
    status: null,
    members: null,
    ready: null,        // true, false, or null when unknown
    readyText: '',
    error: '',          // the last failed read, '' after a good one
    lastOK: 0,          // when the node last answered
    prev: null,         // the previous metrics sample
    latency: [],        // recent cumulative write-latency histograms
    series: new Map(),  // key -> [[time, value|null]]
    total: 0,           // requests/s in the last interval
    writeErrors: { rate: 0, reasons: '', at: 0 },
    paused: false,
  };

  // ---- reading the node ----

  async function get(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      return await fetch(path, { cache: 'no-store', signal: ctl.signal });
    } finally {
      clearTimeout(timer);
    }
  }

  async function getJSON(path) {
    const r = await get(path);
    if (!r.ok) {
      throw new Error(path + ': HTTP ' + r.status + ' ' + (await r.text()).trim());
    }
    return r.json();
  }

  function failed(err) {
    state.error = err && err.name === 'AbortError' ? 'no answer within ' + FETCH_TIMEOUT_MS / 1000 + ' s' : String(err && err.message || err);
  }

  async function pollNode() {
    try {
      const [status, metrics, ready] = await Promise.all([
        getJSON('../v1/status'),
        get('../metrics').then((r) => {
          if (!r.ok) throw new Error('/metrics: HTTP ' + r.status);
          return r.text();
        }),
        get('../readyz').then(async (r) => ({ ok: r.ok, text: (await r.text()).trim() })),
      ]);
      const now = Date.now();
      state.status = status;
      state.ready = ready.ok;
      state.readyText = ready.text;
      state.error = '';
      state.lastOK = now;
      takeMetrics(now, parseMetrics(metrics));
    } catch (err) {
      failed(err);
    }
    render();
  }

  async function pollMembers() {
    try {
      state.members = await getJSON('../v1/members');
      const now = Date.now();
      for (const m of state.members.members || []) {
        push('sessions:' + m.id, now, m.reached ? m.sessions : null);
        push('bytes:' + m.id, now, m.reached ? m.payload_bytes : null);
      }
    } catch (err) {
      failed(err);
    }
    render();
  }

  // loop runs poll every interval, one at a time, while the tab is visible: a
  // page nobody looks at asks the node nothing.
  function loop(poll, interval) {
    let idle = false; // stopped while the tab is hidden
    const run = async () => {
      if (document.hidden) {
        idle = true;
        state.paused = true;
        renderLive();
        return;
      }
      const started = Date.now();
      try {
        await poll();
      } finally {
        setTimeout(run, Math.max(200, interval - (Date.now() - started)));
      }
    };
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && idle) {
        idle = false;
        state.paused = false;
        run();
      }
    });
    run();
  }

  // ---- the Prometheus text format ----

  // parseMetrics returns every sample of the exposition as {name, labels, value};
  // lines it cannot read are skipped.
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split('\n')) {
      if (line === '' || line[0] === '#') continue;
      const m = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
      if (!m) continue;
      const name = m[0];
      let i = name.length;
      const labels = {};
      let ok = true;
      if (line[i] === '{') {
        i++;
        while (i < line.length && line[i] !== '}') {
          const lm = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(i));
          if (!lm) { ok = false; break; }
          i += lm[0].length;
          let v = '';
          while (i < line.length && line[i] !== '"') {
            if (line[i] === '\\' && i + 1 < line.length) {
              i++;
              v += line[i] === 'n' ? '\n' : line[i];
            } else {
              v += line[i];
            }
            i++;
          }
          labels[lm[1]] = v;
          i++; // the closing quote
          while (line[i] === ',' || line[i] === ' ') i++;
        }
        i++; // the closing brace
      }
      if (!ok) continue;
      const value = parseFloat(line.slice(i).trim().split(/\s+/)[0].replace(/^\+?Inf$/, 'Infinity'));
      out.push({ name, labels, value });
    }
    return out;
  }

  // takeMetrics turns one scrape into rates and quantiles against the previous one.
  function takeMetrics(now, samples) {
    const cur = { t: now, counters: new Map(), writeErrors: new Map() };
    const add = (k, v) => cur.counters.set(k, (cur.counters.get(k) || 0) + v);
    const hist = new Map(); // le -> cumulative count of write requests
    for (const s of samples) {
      switch (s.name) {
        case 'distcache_requests_total': {
          const res = s.labels.result === 'ok' ? (READS.has(s.labels.command) ? 'hit' : 'stored') : s.labels.result;
          add('proto:' + s.labels.protocol, s.value);
          add('result:' + res, s.value);
          add('total', s.value);
          break;
        }
        case 'distcache_request_duration_seconds_bucket':
          if (WRITES.has(s.labels.command)) {
            const le = parseFloat(s.labels.le.replace(/^\+?Inf$/, 'Infinity'));
            hist.set(le, (hist.get(le) || 0) + s.value);
          }
          break;
        case 'distcache_write_errors_total':
          add('write_errors', s.value);
          cur.writeErrors.set(s.labels.reason, s.value);
          break;
        case 'distcache_evictions_total':
          add('churn:evictions', s.value);
          break;
        case 'distcache_expirations_total':
          add('churn:expirations', s.value);
          break;
      }
    }
    const prev = state.prev;
    state.prev = cur;
    state.latency.push({ t: now, hist });
    while (state.latency.length > 2 && state.latency[1].t <= now - LATENCY_WINDOW_MS) state.latency.shift();
    if (!prev) return;
    const dt = (now - prev.t) / 1000;
    const rate = (k) => Math.max(0, (cur.counters.get(k) || 0) - (prev.counters.get(k) || 0)) / dt;
    for (const p of PROTOCOLS) push('proto:' + p, now, rate('proto:' + p));
    for (const r of RESULTS) push('result:' + r.key, now, rate('result:' + r.key));
    push('churn:evictions', now, rate('churn:evictions'));
    push('churn:expirations', now, rate('churn:expirations'));
    state.total = rate('total');
    const errs = rate('write_errors');
    if (errs > 0) {
      const reasons = [];
      for (const [reason, v] of cur.writeErrors) {
        const d = v - (prev.writeErrors.get(reason) || 0);
        if (d > 0) reasons.push(reason);
      }
      state.writeErrors = { rate: errs, reasons: reasons.join(', '), at: now };
    }
    const old = state.latency[0];
    push('latency:p50', now, quantile(0.5, old.hist, hist));
    push('latency:p99', now, quantile(0.99, old.hist, hist));
  }

  // quantile estimates the q-quantile in milliseconds of the requests between
  // two cumulative histograms, interpolating within a bucket as Prometheus'
  // histogram_quantile does; null when there were none.
  function quantile(q, before, after) {
    const les = [...after.keys()].sort((a, b) => a - b);
    const counts = les.map((le) => Math.max(0, after.get(le) - (before.get(le) || 0)));
    const total = counts[counts.length - 1];
    if (!total) return null;
    const rank = q * total;
    for (let i = 0; i < les.length; i++) {
      if (counts[i] >= rank) {
        if (!isFinite(les[i])) return 1000 * les[i - 1];
        const lo = i === 0 ? 0 : les[i - 1];
        const below = i === 0 ? 0 : counts[i - 1];
        const inBucket = counts[i] - below;
        const frac = inBucket > 0 ? (rank - below) / inBucket : 1;
        return 1000 * (lo + (les[i] - lo) * frac);
      }
    }
    return null;
  }

  // push appends a point to a series, with a gap when the last one is old,
  // and forgets what has left the window.
  function push(key, t, v) {
    let s = state.series.get(key);
    if (!s) state.series.set(key, (s = []));
    const last = s[s.length - 1];
    if (last && t - last[0] > GAP_MS) s.push([t - 1, null]);
    s.push([t, v]);
    while (s.length && s[0][0] < t - WINDOW_MS - GAP_MS) s.shift();
  }

  // ---- formatting ----

  function fmtNum(v) {
    if (v == null || !isFinite(v)) return '–';
    const a = Math.abs(v);
    const trim = (s) => s.replace(/\.0$/, '');
    if (a >= 1e9) return trim((v / 1e9).toFixed(1)) + 'G';
    if (a >= 1e6) return trim((v / 1e6).toFixed(1)) + 'M';
    if (a >= 1e4) return trim((v / 1e3).toFixed(1)) + 'k';
    if (a >= 100 || v === 0) return Math.round(v).toLocaleString('en-US');
    if (a >= 10) return trim(v.toFixed(1));
    return String(+v.toPrecision(2));
  }
  const fmtInt = (v) => (v == null ? '–' : Math.round(v).toLocaleString('en-US'));
  function fmtBytes(v) {
    if (v == null || !isFinite(v)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 || v >= 10 ? Math.round(v) : v.toFixed(1).replace(/\.0$/, '')) + ' ' + units[i];
  }
  function fmtMS(ms) {
    if (ms == null || ms < 0) return '–';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1).replace(/\.0$/, '') + ' s';
    return Math.round(ms / 60000) + ' min';
  }
  function fmtDuration(sec) {
    if (sec < 60) return Math.round(sec) + ' s';
    if (sec < 3600) return Math.floor(sec / 60) + ' min';
    if (sec < 86400) return Math.floor(sec / 3600) + ' h ' + Math.floor((sec % 3600) / 60) + ' min';
    return Math.floor(sec / 86400) + ' d ' + Math.floor((sec % 86400) / 3600) + ' h';
  }
  const fmtClock = (t) => new Date(t).toTimeString().slice(0, 8);
  const pct = (f) => (f * 100 < 10 ? (f * 100).toFixed(1).replace(/\.0$/, '') : Math.round(f * 100)) + '%';

  // el builds an element with attributes and children (strings become text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v != null && v !== false) e.setAttribute(k, v === true ? 'true' : v);
    }
    for (const c of children) {
      if (c != null) e.append(c);
    }
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  // code renders `text` spans of a message as <code>.
  function withCode(text) {
    const f = document.createDocumentFragment();
    text.split(/`([^`]*)`/).forEach((part, i) => f.append(i % 2 ? el('code', {}, part) : part));
    return f;
  }

  // Members keep their colour while they are members: by their place in id order.
  function memberColors() {
    const ids = (state.members && state.members.members || []).map((m) => m.id).sort();
    const colors = new Map();
    ids.forEach((id, i) => colors.set(id, PALETTE[i % PALETTE.length]));
    return colors;
  }

  // ---- what is wrong ----

  // isDown: gossip gave up on the member, or it announces an admin endpoint that
  // does not answer (a crash shows there first, gossip takes a few seconds).
  function isDown(m) {
    if (m.status === 'left') return false;
    return m.status === 'failed' || m.status === 'unknown' || (!m.reached && !!(m.meta && m.meta.admin));
  }

  function troubles(now) {
    const out = [];
    const st = state.status;
    const id = st ? st.id : 'this node';
    if (state.error && (!state.lastOK || now - state.lastOK > UNREACHABLE_AFTER_MS)) {
      out.push({
        level: 'crit', kind: 'unreachable',
        what: 'No answer from ' + id + ': ' + state.error,
        todo: 'The node may have stopped: check its process and its log. This page keeps asking every second; what it shows below is from ' +
          (state.lastOK ? fmtClock(state.lastOK) : 'nothing yet') + '.',
      });
      return out;
    }
    if (!st) return out;
    if (!st.leader_id) {
      out.push({
        level: 'crit', kind: 'no-leader',
        what: 'No leader: the cluster cannot take writes',
        todo: 'An election takes about a second. If this lasts, a majority of the voters is down or cannot reach each other: start the stopped members, or mend the network between their cluster (Raft) ports. `dcctl members` shows who is missing.',
      });
    }
    const ms = state.members ? state.members.members || [] : [];
    const voters = ms.filter((m) => m.suffrage === 'voter');
    const up = voters.filter((m) => !isDown(m)).length;
    const majority = Math.floor(voters.length / 2) + 1;
    for (const m of ms) {
      if (isDown(m)) {
        const why = m.status === 'failed' ? 'gossip has marked it failed'
          : m.status === 'unknown' ? 'gossip has never seen it'
            : 'its admin endpoint does not answer (' + shortError(m.status_error) + ')';
        let quorum = '';
        if (m.suffrage === 'voter') {
          quorum = up >= majority
            ? up + ' of ' + voters.length + ' voters are up: the cluster keeps its majority and works on. '
            : 'Only ' + up + ' of ' + voters.length + ' voters are up: no majority, so no writes. ';
        }
        out.push({
          level: up >= majority ? 'warn' : 'crit', kind: 'member-down', member: m.id,
          what: 'Member ' + m.id + ' is down: ' + why,
          todo: quorum + 'Start dcnode on ' + m.id + ' again; it catches up by itself. If its machine is gone for good, remove it with `dcctl remove-node ' + m.id + '` and start a replacement with -join.',
        });
        continue;
      }
      if (m.leader || m.status === 'left') continue;
      if (m.lag >= LAG_WARN || m.last_contact_ms > CONTACT_WARN_MS) {
        out.push({
          level: 'warn', kind: 'member-lagging', member: m.id,
          what: m.lag >= LAG_WARN
            ? 'Member ' + m.id + ' is ' + fmtInt(m.lag) + ' log entries behind the leader'
            : 'Member ' + m.id + ' has not heard from the leader for ' + fmtMS(m.last_contact_ms),
          todo: 'It catches up by itself while its disk and network keep pace. If the lag keeps growing, look at its disk (full or slow: its /readyz says so), its CPU, and the network between it and the leader.',
        });
      }
      const fill = Math.max(m.max_sessions ? m.sessions / m.max_sessions : 0, m.max_bytes ? m.payload_bytes / m.max_bytes : 0);
      if (m.reached && fill >= CAP_WARN) {
        const which = m.max_sessions && m.sessions / m.max_sessions >= fill ? '-sessions' : '-max-bytes';
        out.push({
          level: 'warn', kind: 'near-cap', member: m.id,
          what: 'Member ' + m.id + ' holds ' + pct(fill) + ' of its ' + which + ' cap',
          todo: 'At the cap, the sessions due to expire soonest are evicted, and their clients make full handshakes. Raise -sessions or -max-bytes on every node (each holds every session), with the memory to match.',
        });
      }
    }
    if (now - state.writeErrors.at < WRITE_ERRORS_HOLD_MS) {
      const unavailable = /unavailable/.test(state.writeErrors.reasons);
      out.push({
        level: 'crit', kind: 'write-errors',
        what: 'Writes are failing on ' + id + ' (' + fmtNum(state.writeErrors.rate) + '/s' + (state.writeErrors.reasons ? ': ' + state.writeErrors.reasons : '') + ')',
        todo: unavailable
          ? 'No leader, no quorum, or the leader too slow to commit within -write-timeout: clients get errors (distcache 0x02, memcache SERVER_ERROR) and retry or do full handshakes. See the cluster below.'
          : 'The cluster refused the writes: this node\'s log says why.',
      });
    }
    if (state.ready === false) {
      out.push({
        level: 'warn', kind: 'not-ready',
        what: 'This node (' + id + ') is not ready: ' + (state.readyText || 'no reason given'),
        todo: 'Load balancers that probe /readyz send clients elsewhere meanwhile. A node that is catching up becomes ready by itself within seconds; if it stays not ready, look at the trouble above and at its log.',
      });
    }
    const elections = (st.leader_changes || []).filter((c) => c.leader_id).length;
    if (elections >= ELECTIONS_WARN) {
      out.push({
        level: 'warn', kind: 'leader-changes',
        what: 'The leader changed ' + elections + ' times in the last hour',
        todo: 'Members restart, or heartbeats arrive late: an overloaded host (CPU, swap, stalled disk) or a lossy network. Look at the members\' load and logs; -heartbeat-timeout and -election-timeout say how late is too late.',
      });
    }
    const versions = [...new Set(ms.filter((m) => m.version).map((m) => m.version))];
    if (versions.length > 1) {
      out.push({
        level: 'info', kind: 'versions',
        what: 'Members run different versions: ' + versions.join(', '),
        todo: 'Expected during a rolling upgrade; finish it so that every node runs the same build.',
      });
    }
    const order = { crit: 0, warn: 1, info: 2 };
    out.sort((a, b) => order[a.level] - order[b.level]);
    if (!out.length && state.members) {
      out.push({
        level: 'ok', kind: 'ok',
        what: 'All well: ' + ms.length + ' member' + (ms.length === 1 ? '' : 's') + ' up, ' + st.leader_id + ' leads, ' + id + ' is ready',
        todo: '',
      });
    }
    return out;
  }

  function shortError(s) {
    if (!s) return 'no answer';
    const m = /(connection refused|no route to host|timeout|deadline exceeded|EOF|reset by peer|HTTP \d+)/i.exec(s);
    return m ? m[1] : s.length > 80 ? s.slice(0, 77) + '…' : s;
  }

  // ---- drawing ----

  function render() {
    const now = Date.now();
    renderLive();
    renderHeader();
    renderTrouble(now);
    renderMembers();
    renderLeaders(now);
    renderPlots(now);
  }

  function renderLive() {
    const live = $('live');
    let s = 'wait';
    let text = 'connecting';
    if (state.paused) {
      s = 'paused';
      text = 'paused while hidden';
    } else if (state.error) {
      s = 'fail';
      text = 'no answer' + (state.lastOK ? ' since ' + fmtClock(state.lastOK) : '');
    } else if (state.lastOK) {
      s = 'ok';
      text = 'live · ' + fmtClock(state.lastOK);
    }
    live.dataset.state = s;
    $('live-text').textContent = text;
  }

  function renderHeader() {
    const st = state.status;
    if (!st) return;
    const who = $('who');
    who.replaceChildren('node ', el('b', {}, st.id), ' · ' + st.state + ' · term ' + st.term + ' · up ' + fmtDuration(st.uptime_seconds) +
      ' · reads ' + st.read_consistency);
    document.title = st.id + ' · distcache status';
    $('traffic-node').textContent = 'on ' + st.id;
    $('footer-version').textContent = st.id + ' runs ' + st.version + '.';
    const t = $('req-total');
    t.textContent = fmtNum(state.total);
    t.dataset.value = String(Math.round(state.total * 10) / 10);
  }

  function renderTrouble(now) {
    const items = troubles(now).map((t) =>
      el('li', { 'data-level': t.level, 'data-kind': t.kind, 'data-member': t.member },
        el('div', { class: 'what' }, t.what),
        t.todo ? el('div', { class: 'todo' }, withCode(t.todo)) : null));
    $('trouble-list').replaceChildren(...items);
  }

  function usage(v, cap, fmt) {
    if (v == null) return '–';
    const f = cap > 0 ? Math.min(1, v / cap) : 0;
    const fill = el('span');
    fill.style.width = (f * 100).toFixed(1) + '%';
    return el('div', { class: 'usage', title: cap > 0 ? pct(v / cap) + ' of the cap' : null },
      el('div', { class: 'bar', 'data-level': f >= CAP_WARN ? 'crit' : f >= 0.75 ? 'warn' : null }, fill),
      el('span', { class: 'label' }, fmt(v) + (cap > 0 ? ' / ' + fmt(cap) : '')));
  }

  function renderMembers() {
    if (!state.members) return;
    const self = state.status && state.status.id;
    const ms = [...(state.members.members || [])].sort((a, b) => a.id.localeCompare(b.id));
    const rows = ms.map((m) => {
      const down = isDown(m);
      const name = m.meta && m.meta.admin && m.id !== self
        ? el('a', { href: 'http://' + m.meta.admin + '/ui/', title: 'open its status page' }, m.id)
        : m.id;
      const gossip = down && m.status === 'alive' ? 'not answering' : m.status;
      const gossipState = down ? 'down' : m.status === 'alive' && !m.reached ? 'unreached' : m.status;
      return el('tr', { 'data-member': m.id, 'data-leader': m.leader ? 'true' : 'false', 'data-down': down ? 'true' : 'false' },
        el('td', { class: 'first', 'data-label': 'Member' },
          el('span', {},
            el('span', { class: 'id' }, name),
            m.leader ? el('span', { class: 'badge leader', title: 'the Raft leader' }, '★ leader') : null,
            m.id === self ? el('span', { class: 'badge self' }, 'this node') : null)),
        el('td', { 'data-label': 'Role' }, m.reached ? m.state : '–'),
        el('td', { 'data-label': 'Suffrage' }, m.suffrage),
        el('td', { 'data-label': 'Gossip' }, el('span', { class: 'state', 'data-state': gossipState }, gossip)),
        el('td', { 'data-label': 'Version' }, m.version || '–'),
        el('td', { class: 'num', 'data-label': 'Last contact' }, m.leader ? '–' : fmtMS(m.last_contact_ms)),
        el('td', { class: 'num', 'data-label': 'Lag' }, m.lag < 0 ? '?' : fmtInt(m.lag)),
        el('td', { 'data-label': 'Sessions' }, m.reached ? usage(m.sessions, m.max_sessions, fmtNum) : '–'),
        el('td', { 'data-label': 'Payload' }, m.reached ? usage(m.payload_bytes, m.max_bytes, fmtBytes) : '–'));
    });
    $('members-body').replaceChildren(...rows);
    const st = state.status;
    const voters = ms.filter((m) => m.suffrage === 'voter').length;
    const up = ms.filter((m) => !isDown(m)).length;
    $('cluster-summary').textContent = ms.length + ' members (' + voters + ' voters), ' + up + ' up · ' +
      (st && st.leader_id ? 'leader ' + st.leader_id : 'no leader') + (st ? ' · term ' + st.term : '');
    if (st) {
      $('caps').textContent = 'caps on ' + st.id + ': -sessions ' + fmtInt(st.max_sessions) + ', -max-bytes ' + fmtBytes(st.max_bytes);
    }
  }

  function renderLeaders(now) {
    const st = state.status;
    if (!st) return;
    const changes = st.leader_changes || [];
    const elections = changes.filter((c) => c.leader_id).length;
    $('leader-count').textContent = '· ' + (elections === 1 ? '1 leader elected' : elections + ' leaders elected') +
      (changes.length > elections ? ', ' + (changes.length - elections) + ' without a leader' : '');
    const colors = memberColors();
    const box = $('leader-timeline');
    const w = Math.max(200, box.clientWidth || 600);
    const h = 34;
    const span = 3600 * 1000;
    const x = (t) => Math.max(0, Math.min(w, w * (1 - (now - t) / span)));
    const s = svg('svg', { viewBox: '0 0 ' + w + ' ' + h, role: 'img', 'aria-label': 'leaders over the last hour' });
    s.append(svg('rect', { x: 0, y: 4, width: w, height: 12, rx: 3, fill: '#eef0f3' }));
    changes.forEach((c, i) => {
      const t0 = Date.parse(c.at);
      const t1 = i + 1 < changes.length ? Date.parse(changes[i + 1].at) : now;
      const color = c.leader_id ? colors.get(c.leader_id) || '#94a3b8' : '#dc2626';
      const band = svg('rect', { x: x(t0), y: 4, width: Math.max(1, x(t1) - x(t0)), height: 12, fill: color, 'fill-opacity': c.leader_id ? 0.35 : 0.6 });
      const title = svg('title', {});
      title.textContent = fmtClock(t0) + ' ' + (c.leader_id ? c.leader_id + ' leads (term ' + c.term + ')' : 'no leader (term ' + c.term + ')');
      band.append(title);
      s.append(band, svg('rect', { x: x(t0) - 1, y: 2, width: 2, height: 16, fill: color }));
    });
    [[0, '−60 min'], [w / 2, '−30 min'], [w, 'now']].forEach(([px, label], i) => {
      const t = svg('text', { x: px, y: 30, class: 'axis', 'text-anchor': i === 0 ? 'start' : i === 2 ? 'end' : 'middle' });
      t.textContent = label;
      s.append(t);
    });
    box.replaceChildren(s);
    const recent = changes.slice(-6).reverse().map((c) => el('li', {},
      fmtClock(Date.parse(c.at)) + ' ', c.leader_id ? el('b', {}, c.leader_id) : el('b', {}, 'no leader'),
      c.leader_id ? ' leads, term ' + c.term : ', term ' + c.term));
    $('leader-changes').replaceChildren(...recent);
  }

  function renderPlots(now) {
    const st = state.status;
    const listening = st && st.listeners ? PROTOCOLS.filter((p) => (st.listeners[p] || []).length) : PROTOCOLS;
    plot('plot-proto', now, listening.map((p) => ({ key: 'proto:' + p, name: p, color: PALETTE[PROTOCOLS.indexOf(p)] })), fmtNum);
    plot('plot-result', now, RESULTS.map((r) => ({ key: 'result:' + r.key, name: r.key, color: r.color })), fmtNum);
    plot('plot-latency', now, [
      { key: 'latency:p50', name: 'p50', color: '#2563eb' },
      { key: 'latency:p99', name: 'p99', color: '#7c3aed' },
    ], (v) => fmtNum(v) + ' ms');
    plot('plot-churn', now, [
      { key: 'churn:evictions', name: 'evictions', color: '#d97706' },
      { key: 'churn:expirations', name: 'expirations', color: '#0891b2' },
    ], fmtNum);
    const colors = memberColors();
    const ids = [...colors.keys()];
    plot('plot-sessions', now, ids.map((id) => ({ key: 'sessions:' + id, name: id, color: colors.get(id) })), fmtNum);
    plot('plot-bytes', now, ids.map((id) => ({ key: 'bytes:' + id, name: id, color: colors.get(id) })), fmtBytes);
  }

  // niceCeil rounds up to 1, 2, 2.5 or 5 times a power of ten.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (v <= m * p) return m * p;
    }
    return 10 * p;
  }

  // plot draws the series of the last WINDOW_MS as lines, with the newest value
  // of each in the legend.
  function plot(id, now, series, fmt) {
    const fig = $(id);
    let s = fig.querySelector('svg');
    let legend = fig.querySelector('ul');
    if (!s) {
      s = svg('svg', { role: 'img' });
      legend = el('ul', { class: 'legend' });
      fig.append(s, legend);
    }
    const w = Math.max(200, s.clientWidth || fig.clientWidth || 300);
    const h = 120;
    const m = { l: 44, r: 6, t: 6, b: 16 };
    const pw = w - m.l - m.r;
    const ph = h - m.t - m.b;
    const from = now - WINDOW_MS;
    let max = 0;
    let any = false;
    for (const se of series) {
      for (const [t, v] of state.series.get(se.key) || []) {
        if (t >= from && v != null) {
          max = Math.max(max, v);
          any = true;
        }
      }
    }
    max = niceCeil(max);
    const x = (t) => m.l + pw * (1 - (now - t) / WINDOW_MS);
    const y = (v) => m.t + ph * (1 - v / max);
    s.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    s.setAttribute('aria-label', fig.querySelector('figcaption').textContent);
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      parts.push(svg('line', { x1: m.l, x2: w - m.r, y1: y(f * max), y2: y(f * max), class: f === 0 ? 'baseline' : 'gridline' }));
      const label = svg('text', { x: m.l - 5, y: y(f * max) + 3, class: 'axis', 'text-anchor': 'end' });
      label.textContent = fmt(f * max);
      parts.push(label);
    }
    for (let min = 5; min >= 0; min--) {
      const label = svg('text', { x: x(now - min * 60000), y: h - 3, class: 'axis', 'text-anchor': min === 5 ? 'start' : min === 0 ? 'end' : 'middle' });
      label.textContent = min === 0 ? 'now' : min === 5 ? '−5 min' : '−' + min;
      parts.push(label);
    }
    for (const se of series) {
      let d = '';
      let pen = false;
      for (const [t, v] of state.series.get(se.key) || []) {
        if (t < from || v == null) {
          pen = false;
          continue;
        }
        d += (pen ? 'L' : 'M') + x(t).toFixed(1) + ' ' + y(v).toFixed(1);
        pen = true;
      }
      if (d) parts.push(svg('path', { d, class: 'line', stroke: se.color }));
    }
    if (!any) {
      const t = svg('text', { x: m.l + pw / 2, y: m.t + ph / 2, class: 'empty', 'text-anchor': 'middle' });
      t.textContent = 'collecting…';
      parts.push(t);
    }
    s.replaceChildren(...parts);
    legend.replaceChildren(...series.map((se) => {
      const pts = state.series.get(se.key) || [];
      const last = pts.length ? pts[pts.length - 1][1] : null;
      const sw = el('span', { class: 'swatch' });
      sw.style.background = se.color;
      return el('li', { 'data-series': se.key }, sw, se.name + ' ', el('span', { class: 'val' }, last == null ? '–' : fmt(last)));
    }));
  }

  loop(pollNode, POLL_MS);
  loop(pollMembers, MEMBERS_MS);
})();
