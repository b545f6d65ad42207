// Runs one Python job on Quayside: enqueue, follow its logs, wait for the result.
//
//   REDIS_URL=redis://127.0.0.1:6379 QUAYSIDE_QUEUE=default node example.js
//
// Set JOB_ID to choose the id (the idempotency key): if that job exists already, whoever
// enqueued it, this follows it instead. Exit code 0 iff the job succeeded.
'use strict';

const { randomUUID } = require('node:crypto');
const Redis = require('ioredis');
const { enqueue, logs, wait } = require('./quayside-client');

const PROGRAM = `\
import sys, time
numbers = [int(n) for n in sys.stdin.read().split()]
print(f"read {len(numbers)} numbers", flush=True)
time.sleep(0.2)
print("adding them up", file=sys.stderr, flush=True)
time.sleep(0.2)
print(f"sum={sum(numbers)}", flush=True)
`;

async function main() {
  const redis = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
  try {
    return await run(redis, process.env.QUAYSIDE_QUEUE || 'default');
  } finally {
    await redis.quit();
  }
}

async function run(redis, queue) {
  const spec = {
    id: process.env.JOB_ID || `js-example-${randomUUID()}`,
    kind: 'run',
    language: 'python',
    files: { 'main.py': PROGRAM },
    stdin: '19 23\n',
    limits: { run_wall_time_ms: 10000 },
  };
  const { id, existing } = await enqueue(redis, queue, spec);
  if (existing) {
    console.log(`${id} already exists (${existing}): following that job`);
  } else {
    console.log(`enqueued ${id}`);
    // Retrying is safe (say, after a timeout): the same id is the same job.
    const again = await enqueue(redis, queue, spec);
    console.log(`enqueued again: nothing added, the job is ${again.existing}`);
  }

  for await (const [source, text] of logs(redis, queue, id)) {
    for (const line of text.split('\n').filter(Boolean)) console.log(`[${source}] ${line}`);
  }

  const result = await wait(redis, queue, id, 120000);
  console.log(`${result.status} (exit code ${result.exit_code}), stdout ${JSON.stringify(result.stdout.data)}`);
  console.log(JSON.stringify(result));
  return result.status === 'succeeded' ? 0 : 1;
}

main().then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err); process.exitCode = 2; },
);
