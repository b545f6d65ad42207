local P = ARGV[1]
local K = {}
K.streams = { P .. 'stream:high', P .. 'stream:normal', P .. 'stream:low' }
function K.job(id) return P .. 'job:' .. id end
function K.logs(id) return P .. 'logs:' .. id end
function K.batch(b) return P .. 'batch:' .. b end
function K.batch_jobs(b) return P .. 'batch-jobs:' .. b end
function K.done(id) return P .. 'done:' .. id end
function K.batch_events(b) return P .. 'batch-events:' .. b end
K.delayed = P .. 'delayed'
K.dlq = P .. 'dlq'
K.running = P .. 'running'
K.workers = P .. 'workers'
K.workers_expiry = P .. 'workers:expiry'
K.cancel = P .. 'cancel'
K.group = 'workers'

-- Helpers shared by every Quayside script (prepended after the generated key prelude).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Field value of a flat [k1, v1, k2, v2, ...] reply, or nil.
local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

-- Appends a dead letter. The job's record stays the source of truth; the dead letter carries the
-- spec too, so it can be replayed after the record expired.
local function dead_letter(id, reason, err, attempts, job, cap)
  redis.call('XADD', K.dlq, 'MAXLEN', '~', cap, '*',
    'id', id, 'reason', reason, 'error', err, 'attempts', attempts, 'job', job, 'at', now_ms())
end

-- Writes the job's one terminal result and everything that goes with it: the record's state and
-- TTL, the end marker of its log (only if it may have logged: a log stream per silent job would
-- cost memory and time), the waiters' notification and its batch counters. `was` and `batch`
-- are the record's state and batch as the caller read them; `cancel` its cancel flag. Callers
-- check first that the job is not terminal yet.
local function finalize(id, status, result, ttl, log_cap, was, batch, cancel, logged)
  local rec = K.job(id)
  redis.call('HSET', rec, 'state', status, 'result', result, 'finished_at', now_ms(), 'entry', '')
  -- A replayed job starts with a clean infrastructure record (see retry.lua).
  redis.call('HDEL', rec, 'failing_since', 'infra_failures')
  if cancel then redis.call('HDEL', rec, 'cancel') end
  redis.call('EXPIRE', rec, ttl)
  local logs = K.logs(id)
  -- logged: true/false as the finishing worker knows it, nil when unknown (ask Redis).
  if logged == nil then logged = redis.call('EXISTS', logs) == 1 end
  if logged then
    redis.call('XADD', logs, 'MAXLEN', '~', log_cap, '*', 's', 'end', 'd', status)
    redis.call('EXPIRE', logs, ttl)
  end
  redis.call('PUBLISH', K.done(id), status)
  if batch and batch ~= '' then
    local bk = K.batch(batch)
    if was == 'running' then redis.call('HINCRBY', bk, 'running', -1) end
    redis.call('HINCRBY', bk, 's:' .. status, 1)
    -- A batch lives until its last job ends, then as long as that job's result.
    if redis.call('HINCRBY', bk, 'remaining', -1) <= 0 then
      redis.call('HSET', bk, 'finished_at', now_ms())
      redis.call('EXPIRE', bk, ttl)
      redis.call('EXPIRE', K.batch_jobs(batch), ttl)
    end
    redis.call('PUBLISH', K.batch_events(batch), id .. ' ' .. status)
  end
end

-- Acknowledges and deletes a claimed entry; its payload is no longer needed.
local function drop_entry(idx, entry)
  local stream = K.streams[idx]
  redis.call('XACK', stream, K.group, entry)
  redis.call('XDEL', stream, entry)
  redis.call('HDEL', K.running, idx .. ':' .. entry)
end

-- The fencing check: only the holder of the current token of a running job may act on it.
-- Returns the record's fields { token, state, batch, cancel, attempts, spec } when it holds.
local function holds(id, token)
  local r = redis.call('HMGET', K.job(id), 'token', 'state', 'batch', 'cancel', 'attempts', 'spec')
  if r[1] == token and r[2] == 'running' then return r end
  return nil
end

-- Enqueue one or more jobs. Idempotent: an id whose record exists is reported, not queued again.
-- ARGV: prefix, max_depth (0 = unlimited), n, then n times: id, priority index (1-3), spec JSON,
--       batch id ('' = none), result ttl seconds.
-- Returns one string per job: 'new:<entry id>', 'exists:<state>' or 'full'.
local max_depth = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local depth = 0
if max_depth > 0 then
  for i = 1, 3 do depth = depth + redis.call('XLEN', K.streams[i]) end
end
local now = now_ms()
local out = {}
for j = 0, n - 1 do
  local b = 4 + j * 5
  local id, prio, spec, batch, ttl = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local rec = K.job(id)
  local state = redis.call('HGET', rec, 'state')
  if state then
    out[#out + 1] = 'exists:' .. state
  elseif max_depth > 0 and depth >= max_depth then
    out[#out + 1] = 'full'
  else
    local entry = redis.call('XADD', K.streams[prio], '*', 'id', id)
    redis.call('HSET', rec, 'state', 'queued', 'spec', spec, 'priority', prio, 'entry', entry,
      'attempts', 0, 'token', 0, 'enqueued_at', now, 'ttl', ttl, 'batch', batch)
    if batch ~= '' then
      local bk = K.batch(batch)
      redis.call('HINCRBY', bk, 'total', 1)
      redis.call('HINCRBY', bk, 'remaining', 1)
      redis.call('HSETNX', bk, 'created_at', now)
      redis.call('HDEL', bk, 'finished_at')
      redis.call('PERSIST', bk)
      local members = K.batch_jobs(batch)
      redis.call('RPUSH', members, id)
      redis.call('PERSIST', members)
    end
    depth = depth + 1
    out[#out + 1] = 'new:' .. entry
  end
end
return out
