// The Quayside dashboard: read-only pages over the gateway's /v1/ API, refreshed every 2 s.
// Everything a job or a worker controls goes into the page as text (textContent and text
// nodes), never as HTML. The token lives in sessionStorage (this tab only) and is sent as
// `Authorization: Bearer` on every call; a 401 shows the sign-in form again.
'use strict';

(() => {
  const KEY = 'quayside.token';
  const REFRESH_MS = 2000;
  const RECENT_BATCHES = 20; // batches the overview lists, newest first
  const PAGE = 1000; // members per /v1/batches/{id}?results=true call (the gateway's maximum)
  const SHOWN_FAILURES = 500;
  const ACTIVE = ['queued', 'delayed', 'running'];

  class Unauthorized extends Error {}

  let generation = 0; // bumped on every route change: stale refreshes and streams stop
  let timer = null;
  let logAbort = null;

  const $ = (id) => document.getElementById(id);

  /** An element; string children become text nodes, never markup. */
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const k of kids.flat()) {
      if (k === undefined || k === null) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  const jobHref = (id) => '#/job/' + encodeURIComponent(id);
  const batchHref = (id) => '#/batch/' + encodeURIComponent(id);
  const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '');
  const badge = (text, cls) => el('span', { class: 'badge ' + (cls || text) }, text);

  function decodeBase64(s) {
    const bin = atob(s);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder('utf-8').decode(bytes);
  }

  /** A captured stream or log entry ({data, encoding}) as text. */
  const captured = (c) => (!c || !c.data ? '' : c.encoding === 'base64' ? decodeBase64(c.data) : c.data);

  // ---- the token ----------------------------------------------------------------------

  /** `#token=...` (alone or after a route: `#/job/ID&token=...`) is stored, then removed from
   *  the address bar and the history. */
  function takeTokenFromHash() {
    const h = location.hash;
    const m = /(^#|&)token=([^&]*)/.exec(h);
    if (!m) return;
    sessionStorage.setItem(KEY, decodeURIComponent(m[2]));
    let rest = h.slice(0, m.index) + h.slice(m.index + m[0].length);
    if (rest.startsWith('&')) rest = '#' + rest.slice(1);
    if (rest === '' || rest === '#') rest = '#/';
    history.replaceState(null, '', location.pathname + location.search + rest);
  }

  function showLogin(why) {
    stopAll();
    sessionStorage.removeItem(KEY);
    $('view').replaceChildren();
    $('open-form').hidden = true;
    $('forget').hidden = true;
    $('login').hidden = false;
    if (why) $('login-why').textContent = why;
    setStatus('');
    $('token').focus();
  }

  async function api(path, opts) {
    const token = sessionStorage.getItem(KEY);
    if (!token) throw new Unauthorized('no token');
    const headers = Object.assign({ Authorization: 'Bearer ' + token }, (opts && opts.headers) || {});
    const r = await fetch(path, { headers, cache: 'no-store', signal: opts && opts.signal });
    if (r.status === 401) throw new Unauthorized('the gateway refused the token');
    if (!r.ok) {
      let msg = 'HTTP ' + r.status;
      try {
        const b = await r.json();
        msg += ' ' + b.error + ': ' + b.message;
      } catch (_) { /* not JSON */ }
      const e = new Error(msg);
      e.status = r.status;
      throw e;
    }
    return r;
  }

  const getJson = async (path) => (await api(path)).json();

  function setStatus(text, isError) {
    const s = $('status');
    s.textContent = text;
    s.className = isError ? 'error' : '';
  }

  // ---- routing and refresh --------------------------------------------------------------

  function stopAll() {
    generation++;
    if (timer) clearTimeout(timer);
    timer = null;
    if (logAbort) logAbort.abort();
    logAbort = null;
  }

  function route() {
    takeTokenFromHash();
    stopAll();
    if (!sessionStorage.getItem(KEY)) {
      showLogin('');
      return;
    }
    $('login').hidden = true;
    $('open-form').hidden = false;
    $('forget').hidden = false;
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    const id = decodeURIComponent(parts.slice(1).join('/'));
    const view = $('view');
    view.replaceChildren();
    const gen = generation;
    if (parts[0] === 'job' && id) refresh(gen, jobPage(id, view));
    else if (parts[0] === 'batch' && id) refresh(gen, batchPage(id, view));
    else refresh(gen, overviewPage(view));
  }

  /** Runs `draw` now and every REFRESH_MS while the page stays the same. */
  async function refresh(gen, draw) {
    try {
      await draw();
      if (gen === generation) setStatus('updated ' + new Date().toLocaleTimeString());
    } catch (e) {
      if (gen !== generation) return;
      if (e instanceof Unauthorized) {
        showLogin('The gateway refused the token (401). Enter a valid one.');
        return;
      }
      setStatus(e.message, true);
    }
    if (gen === generation) timer = setTimeout(() => refresh(gen, draw), REFRESH_MS);
  }

  // ---- overview -----------------------------------------------------------------------------

  function overviewPage(view) {
    return async () => {
      const s = await getJson('/v1/stats');
      $('queue-name').textContent = 'queue ' + s.queue;
      const rows = s.priorities.map((p) =>
        el('tr', {},
          el('td', {}, p.priority),
          el('td', { class: 'num', id: 'waiting-' + p.priority }, p.waiting),
          el('td', { class: 'num', id: 'running-' + p.priority }, p.pending),
          el('td', { class: 'num', id: 'depth-' + p.priority }, p.depth)));
      const queue = el('section', { id: 'queue' },
        el('h1', {}, 'Queue ', s.queue, ' ',
          s.paused ? badge('paused', 'paused') : badge('serving', 'succeeded')),
        s.paused && s.paused_since_ms ? el('p', { class: 'muted' }, 'paused since ' + when(s.paused_since_ms)) : null,
        el('table', {},
          el('thead', {}, el('tr', {}, el('th', {}, 'priority'), el('th', { class: 'num' }, 'waiting'),
            el('th', { class: 'num' }, 'running'), el('th', { class: 'num' }, 'in stream'))),
          el('tbody', {}, rows)),
        el('dl', {},
          el('dt', {}, 'delayed (retry backoff)'), el('dd', { id: 'delayed' }, s.delayed),
          el('dt', {}, 'dead letters'), el('dd', { id: 'dead-letters' }, s.dead_letters),
          el('dt', {}, 'paused'), el('dd', { id: 'paused' }, s.paused ? 'yes' : 'no')));
      const tenants = (s.tenants || []).length === 0 ? null : el('section', { id: 'tenants' },
        el('h2', {}, 'Tenants'),
        el('table', {},
          el('thead', {}, el('tr', {}, ['tenant', 'queued', 'running', 'weight', 'running cap', 'queued cap', 'paused']
            .map((h, i) => el('th', { class: i ? 'num' : null }, h)))),
          el('tbody', {}, s.tenants.map((t) => el('tr', { 'data-tenant': t.tenant },
            el('td', {}, t.tenant),
            el('td', { class: 'num' }, t.queued),
            el('td', { class: 'num' }, t.running),
            el('td', { class: 'num' }, t.weight),
            el('td', { class: 'num' }, t.running_cap ?? '—'),
            el('td', { class: 'num' }, t.queued_cap ?? '—'),
            el('td', { class: 'num' }, t.paused ? 'paused' : 'no'))))));
      const now = Date.now();
      const workers = el('section', { id: 'workers' },
        el('h2', {}, 'Workers (', s.workers.length, ')'),
        s.workers.length === 0 ? el('p', { class: 'muted' }, 'No worker has sent a heartbeat recently.') :
          el('table', {},
            el('thead', {}, el('tr', {}, ['id', 'host', 'runner', 'slots', 'in flight', 'version', 'heartbeat']
              .map((h, i) => el('th', { class: i >= 3 && i <= 4 ? 'num' : null }, h)))),
            el('tbody', {}, s.workers.map((w) => el('tr', { 'data-worker': w.id },
              el('td', {}, w.id),
              el('td', {}, w.host),
              el('td', {}, w.runner),
              el('td', { class: 'num' }, w.slots),
              el('td', { class: 'num' }, w.in_flight),
              el('td', {}, w.version),
              el('td', {}, w.heartbeat_at_ms ? Math.max(0, Math.round((now - w.heartbeat_at_ms) / 1000)) + ' s ago' : ''))))));
      const recent = (await getJson('/v1/batches?limit=' + RECENT_BATCHES)).batches;
      const batches = el('section', { id: 'batches' },
        el('h2', {}, 'Recent batches (', recent.length, ')'),
        recent.length === 0 ? el('p', { class: 'muted' }, 'No batch was made in the last 7 days.') :
          el('table', {},
            el('thead', {}, el('tr', {}, ['batch', 'tenant', 'progress', 'ended', 'failed', 'running', 'queued', 'created']
              .map((h, i) => el('th', { class: i >= 3 && i <= 6 ? 'num' : null }, h)))),
            el('tbody', {}, recent.map((b) => el('tr', { 'data-batch': b.id },
              el('td', {}, el('a', { href: batchHref(b.id) }, b.id), ' ',
                b.done ? badge('done', 'succeeded') : badge('in progress', 'running')),
              el('td', {}, b.tenant || 'default'),
              el('td', { class: 'mini' }, progressBar(b)),
              el('td', { class: 'num' }, (b.total - b.remaining) + '/' + b.total),
              el('td', { class: 'num' }, b.unsuccessful),
              el('td', { class: 'num' }, b.running),
              el('td', { class: 'num' }, b.queued),
              el('td', {}, when(b.created_at_ms)))))));
      view.replaceChildren(queue, ...(tenants ? [tenants] : []), workers, batches);
    };
  }

  // ---- batch --------------------------------------------------------------------------------

  /** A batch's jobs by where they are: the bar's parts and the legend's numbers. */
  function barParts(b) {
    return [['succeeded', b.succeeded], ['failed', b.unsuccessful], ['running', b.running], ['queued', b.queued]];
  }

  /** A bar whose parts are as wide as their share of the batch (widths set as properties:
   * the page's CSP allows no inline style attribute). */
  function progressBar(b) {
    const total = Math.max(b.total, 1);
    return el('div', { class: 'bar', role: 'img', 'aria-label': 'progress' },
      barParts(b).map(([cls, n]) => {
        const s = el('span', { class: cls, title: cls + ' ' + n });
        s.style.width = (100 * n / total) + '%';
        return s;
      }));
  }

  function batchPage(id, view) {
    let seenEnded = -1;
    let failures = [];
    const head = el('section', { id: 'batch' });
    const fails = el('section', { id: 'failures' });
    view.replaceChildren(head, fails);
    return async () => {
      const path = '/v1/batches/' + encodeURIComponent(id);
      const b = await getJson(path);
      $('queue-name').textContent = '';
      const parts = barParts(b);
      const bar = progressBar(b);
      head.replaceChildren(
        el('h1', {}, 'Batch ', id, ' ', b.done ? badge('done', 'succeeded') : badge('in progress', 'running')),
        bar,
        el('p', { class: 'legend' },
          parts.map(([cls, n]) => el('span', {}, cls + ' ', el('b', { id: 'batch-' + cls }, n))),
          el('span', {}, 'of ', el('b', { id: 'batch-total' }, b.total))),
        el('dl', {},
          el('dt', {}, 'by status'), el('dd', { id: 'batch-by-status' },
            Object.entries(b.by_status || {}).map(([k, v]) => k + ' ' + v).join(', ') || '—'),
          el('dt', {}, 'created'), el('dd', {}, when(b.created_at_ms)),
          el('dt', {}, 'finished'), el('dd', {}, when(b.finished_at_ms) || '—')));
      // Members change only when jobs end: read them again only then, page by page.
      const ended = b.total - b.remaining;
      if (ended !== seenEnded) {
        const found = [];
        for (let offset = 0; offset < b.total; offset += PAGE) {
          const page = await getJson(path + '?results=true&offset=' + offset + '&limit=' + PAGE);
          const jobs = page.jobs || [];
          for (const m of jobs) {
            const status = (m.result && m.result.status) || m.state;
            if (status && !ACTIVE.includes(status) && status !== 'succeeded') found.push(m);
          }
          if (jobs.length < PAGE) break;
        }
        failures = found;
        seenEnded = ended;
      }
      fails.replaceChildren(
        el('h2', {}, 'Failures (', failures.length, ')'),
        failures.length === 0 ? el('p', { class: 'muted' }, 'None so far.') :
          el('table', {},
            el('thead', {}, el('tr', {}, ['job', 'status', 'exit code', 'error'].map((h) => el('th', {}, h)))),
            el('tbody', {}, failures.slice(0, SHOWN_FAILURES).map((m) => {
              const r = m.result || {};
              return el('tr', { 'data-job': m.id },
                el('td', {}, el('a', { href: jobHref(m.id) }, m.id)),
                el('td', {}, badge(r.status || m.state, 'bad')),
                el('td', {}, r.exit_code ?? (r.signal ? 'signal ' + r.signal : '')),
                el('td', {}, r.error || ''));
            }))),
        ...(failures.length > SHOWN_FAILURES ? [el('p', { class: 'muted' }, 'and ' + (failures.length - SHOWN_FAILURES) + ' more')] : []));
    };
  }

  // ---- job ----------------------------------------------------------------------------------

  function jobPage(id, view) {
    const summary = el('section', { id: 'job' });
    const result = el('section', { id: 'result', hidden: '' });
    const logNote = el('span', { class: 'muted', id: 'log-state' }, 'connecting');
    const log = el('pre', { id: 'log' });
    const logs = el('section', { id: 'logs' }, el('h2', {}, 'Live log ', logNote), log);
    view.replaceChildren(summary, result, logs);
    logAbort = new AbortController();
    followLog(id, log, logNote, logAbort.signal, generation);
    return async () => {
      const j = await getJson('/v1/jobs/' + encodeURIComponent(id));
      $('queue-name').textContent = '';
      const spec = j.spec || {};
      const labels = Object.entries(j.labels || {}).map(([k, v]) => k + '=' + v).join(', ');
      summary.replaceChildren(
        el('h1', {}, 'Job ', id, ' ', badge(j.state, j.state), j.cancel_requested ? ' (cancel requested)' : null),
        el('dl', {},
          el('dt', {}, 'state'), el('dd', { id: 'job-state' }, j.state),
          el('dt', {}, 'kind'), el('dd', { id: 'job-kind' }, spec.kind || '—'),
          el('dt', {}, 'language'), el('dd', { id: 'job-language' }, spec.language || '—'),
          el('dt', {}, 'files'), el('dd', { id: 'job-files' }, (spec.files || []).join(', ') || '—'),
          el('dt', {}, 'priority'), el('dd', { id: 'job-priority' }, j.priority || '—'),
          el('dt', {}, 'batch'), el('dd', { id: 'job-batch' }, j.batch ? el('a', { href: batchHref(j.batch) }, j.batch) : '—'),
          el('dt', {}, 'tenant'), el('dd', { id: 'job-tenant' }, spec.tenant || 'default'),
          el('dt', {}, 'labels'), el('dd', { id: 'job-labels' }, labels || '—'),
          el('dt', {}, 'attempts'), el('dd', {}, j.attempts),
          el('dt', {}, 'worker'), el('dd', {}, j.worker || '—'),
          el('dt', {}, 'enqueued'), el('dd', {}, when(j.enqueued_at_ms)),
          j.last_error ? [el('dt', {}, 'last error'), el('dd', {}, j.last_error)] : null));
      const r = j.result;
      if (!r) return;
      const d = r.durations || {};
      const out = (name, c) => (c && c.data ? [el('h2', {}, name, c.truncated ? ' (truncated)' : ''),
        el('pre', { id: 'result-' + name.replace(' ', '-') }, captured(c))] : []);
      result.hidden = false;
      result.replaceChildren(
        el('h2', {}, 'Result'),
        el('dl', {},
          el('dt', {}, 'status'), el('dd', { id: 'result-status' }, r.status),
          el('dt', {}, 'exit code'), el('dd', { id: 'result-exit' }, r.exit_code ?? '—'),
          r.signal ? [el('dt', {}, 'signal'), el('dd', {}, r.signal)] : null,
          r.error ? [el('dt', {}, 'error'), el('dd', { id: 'result-error' }, r.error)] : null,
          el('dt', {}, 'timings'), el('dd', { id: 'result-timings' },
            'queued ' + d.queued_ms + ' ms · compile ' + d.compile_ms + ' ms · run ' + d.run_ms + ' ms · total ' + d.total_ms + ' ms'),
          r.cpu_ms !== undefined ? [el('dt', {}, 'cpu'), el('dd', {}, r.cpu_ms + ' ms')] : null,
          r.peak_memory_bytes !== undefined ? [el('dt', {}, 'peak memory'), el('dd', {}, Math.round(r.peak_memory_bytes / 1024) + ' KiB')] : null,
          el('dt', {}, 'runner'), el('dd', {}, (r.runner || '—') + ' on ' + (r.worker || '—')),
          el('dt', {}, 'finished'), el('dd', {}, when(r.finished_at_ms))),
        ...out('stdout', r.stdout), ...out('stderr', r.stderr), ...out('compile output', r.compile_output));
    };
  }

  /** One Server-Sent Event block: {event, data, id}; null for a comment or keep-alive. */
  function parseEvent(block) {
    const ev = { event: 'message', data: [], id: null };
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') ev.event = value;
      else if (field === 'data') ev.data.push(value);
      else if (field === 'id') ev.id = value;
    }
    if (ev.data.length === 0) return null;
    ev.data = ev.data.join('\n');
    return ev;
  }

  /** Reads /v1/jobs/{id}/logs with fetch() (EventSource cannot send the token) and appends each
   *  entry as text; after a dropped connection, resumes with Last-Event-ID. */
  async function followLog(id, pre, note, signal, gen) {
    let last = null;
    let backoff = 500;
    const append = (cls, text) => {
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(el('span', { class: cls }, text));
      if (stick) pre.scrollTop = pre.scrollHeight;
    };
    for (;;) {
      try {
        const headers = last ? { 'Last-Event-ID': last } : {};
        const r = await api('/v1/jobs/' + encodeURIComponent(id) + '/logs', { headers, signal });
        note.textContent = 'live';
        backoff = 500;
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const ev = parseEvent(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
            if (!ev) continue;
            if (ev.id) last = ev.id;
            const body = JSON.parse(ev.data);
            if (ev.event === 'end') {
              note.textContent = 'ended: ' + body.status;
              return;
            }
            if (ev.event === 'error') {
              note.textContent = 'error: ' + body.message;
              continue;
            }
            append(ev.event, captured(body));
          }
        }
      } catch (e) {
        if (signal.aborted || gen !== generation) return;
        if (e instanceof Unauthorized) {
          showLogin('The gateway refused the token (401). Enter a valid one.');
          return;
        }
        note.textContent = 'disconnected (' + e.message + '), reconnecting';
      }
      if (signal.aborted || gen !== generation) return;
      if (note.textContent === 'live') note.textContent = 'disconnected, reconnecting';
      await new Promise((ok) => setTimeout(ok, backoff));
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  // ---- wiring -------------------------------------------------------------------------------

  function wire() {
    $('login').addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, $('token').value.trim());
      $('token').value = '';
      route();
    });
    $('open-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const kind = e.submitter && e.submitter.value === 'batch' ? 'batch' : 'job';
      const id = $('open-' + kind).value.trim();
      if (id) location.hash = kind === 'job' ? jobHref(id) : batchHref(id);
    });
    $('forget').addEventListener('click', () => showLogin('Token forgotten.'));
    window.addEventListener('hashchange', route);
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', wire);
  else wire();
})();
