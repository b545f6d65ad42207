// Quayside from Node with plain ioredis: enqueue a job, wait for its result, read its logs.
// Implements docs/protocol.md. Log text is the program's output decoded as UTF-8 (invalid
// bytes become U+FFFD).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { randomUUID } = require('node:crypto');

// `quayside script enqueue > enqueue.lua`, vendored: regenerate it when you upgrade Quayside.
const ENQUEUE_LUA = path.join(__dirname, '..', 'enqueue.lua');
const PRIORITIES = { high: 1, normal: 2, low: 3 };
const NOT_ENDED = new Set(['queued', 'delayed', 'running']);
const DEFAULT_RESULT_TTL_S = 86400;

/** The queue holds `queue.max_depth` entries already; try again later. */
class QueueFull extends Error {}

// Every key of a queue; the {tag} keeps them in one Redis Cluster slot.
const prefix = (queue) => `qs:{${queue}}:`;

/**
 * Enqueues `spec` (a job spec object); resolves to `{ id, existing }`. The id is the idempotency
 * key: when a job with this id exists (from any client), nothing is added and `existing` is that
 * job's state; it is null for a new job.
 */
async function enqueue(redis, queue, spec, maxDepth = 0) {
  if (!redis.quaysideEnqueue) {
    // EVALSHA, falling back to EVAL when Redis does not know the script.
    redis.defineCommand('quaysideEnqueue', {
      numberOfKeys: 1,
      lua: fs.readFileSync(ENQUEUE_LUA, 'utf8'),
    });
  }
  spec = { v: 1, id: randomUUID(), ...spec };
  const [answer] = await redis.quaysideEnqueue(
    prefix(queue) + 'stream:normal',
    prefix(queue), maxDepth, 1,
    spec.id, PRIORITIES[spec.priority || 'normal'], JSON.stringify(spec),
    spec.batch || '', spec.result_ttl_s || DEFAULT_RESULT_TTL_S,
    // The tenant (its lane and fair share), and its queued cap (0: none).
    spec.tenant || '', 0,
  );
  if (answer === 'full') throw new QueueFull(`queue ${queue} is full`);
  return { id: spec.id, existing: answer.startsWith('exists:') ? answer.slice(7) : null };
}

/**
 * Waits for the job's result (an object, see docs/protocol.md) without polling. Rejects after
 * `timeoutMs` (default: wait forever).
 */
async function wait(redis, queue, id, timeoutMs = Infinity) {
  const sub = redis.duplicate(); // a subscribed connection can run nothing else
  try {
    await sub.subscribe(prefix(queue) + 'done:' + id); // resolves once Redis confirmed it
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Listen before reading: a result written after the read is announced to us.
      const done = new Promise((resolve) => sub.once('message', resolve));
      const [state, result] = await redis.hmget(prefix(queue) + 'job:' + id, 'state', 'result');
      if (state && !NOT_ENDED.has(state)) return JSON.parse(result);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out: job ${id} still ${state || 'unknown'}`);
      let timer;
      const tick = new Promise((resolve) => { timer = setTimeout(resolve, Math.min(left, 60000)); });
      await Promise.race([done, tick]);
      clearTimeout(timer);
    }
  } finally {
    sub.disconnect();
  }
}

/**
 * Yields the job's log as `[source, text]`: source is stdout, stderr, compile, system, or end
 * (last, text = the job's status). Without `follow`, stops at what exists now.
 */
async function* logs(redis, queue, id, { follow = true } = {}) {
  const reader = redis.duplicate(); // a blocking XREAD would hold up every command on `redis`
  const key = prefix(queue) + 'logs:' + id;
  let last = '0-0';
  let ended = false;
  try {
    for (;;) {
      const block = follow && !ended ? ['BLOCK', 1000] : [];
      const reply = await reader.xread('COUNT', 512, ...block, 'STREAMS', key, last);
      const entries = reply ? reply[0][1] : [];
      for (const [entry, fields] of entries) {
        last = entry;
        const f = {};
        for (let i = 0; i < fields.length; i += 2) f[fields[i]] = fields[i + 1];
        yield [f.s, f.d || ''];
        if (f.s === 'end') return;
      }
      if (entries.length) continue;
      if (!follow) return;
      const state = await redis.hget(prefix(queue) + 'job:' + id, 'state');
      if (ended) {
        // Ended and nothing (more) was logged: a silent job has no log stream.
        yield ['end', state];
        return;
      }
      // A second of silence: read once more without blocking if the job has ended.
      ended = state !== null && !NOT_ENDED.has(state);
    }
  } finally {
    reader.disconnect();
  }
}

module.exports = { enqueue, wait, logs, QueueFull };
