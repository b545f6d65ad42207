-- Helpers shared by every Quayside script (prepended after the generated key prelude).

-- Redis's clock in microseconds, read once per script call (a script is one atomic step).
local clock_us
local function now_us()
  if not clock_us then
    local t = redis.call('TIME')
    clock_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return clock_us
end

local function now_ms()
  return math.floor(now_us() / 1000)
end

-- Field value of a flat [k1, v1, k2, v2, ...] reply, or nil.
local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

-- A job id as the protocol allows it: 1 to 128 of A-Z a-z 0-9 . _ : -
local function valid_id(id)
  return type(id) == 'string' and #id >= 1 and #id <= 128
    and string.find(id, '^[A-Za-z0-9._:-]+$') ~= nil
end

-- Whether stream entry id `a` sorts before `b` (both `<ms>-<seq>`).
local function id_before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am) or 0, tonumber(as) or 0, tonumber(bm) or 0, tonumber(bs) or 0
  return am < bm or (am == bm and as < bs)
end

-- The next fencing token of a record: above its last one, and at least Redis's clock in
-- microseconds. A claim whose write is lost (failover to a lagging replica, the unsynced tail of
-- an AOF) and that is made again later therefore never issues the same token twice.
local function next_token(old)
  return string.format('%.0f', math.max((tonumber(old) or 0) + 1, now_us()))
end

-- Appends a dead letter. The job's record stays the source of truth; the dead letter carries the
-- spec too, so it can be replayed after the record expired.
local function dead_letter(id, reason, err, attempts, job, cap)
  redis.call('XADD', K.dlq, 'MAXLEN', '~', cap, '*',
    'id', id, 'reason', reason, 'error', err, 'attempts', attempts, 'job', job, 'at', now_ms())
end

-- The result JSON of a job that ended without running (cancelled while waiting, or rejected
-- before a worker could read it): no output, the error given, times from its enqueue.
local function plain_result(id, status, err, attempts, enqueued_at)
  local now = now_ms()
  local waited = math.max(0, now - (tonumber(enqueued_at or '') or now))
  local empty = { data = '', encoding = 'utf8', truncated = false }
  return cjson.encode({
    v = 1, id = id, status = status, error = err,
    stdout = empty, stderr = empty, compile_output = empty,
    durations = { queued_ms = waited, compile_ms = 0, run_ms = 0, total_ms = waited },
    attempts = tonumber(attempts or '0') or 0, finished_at_ms = now,
  })
end

-- Adds `delta` to counter `name` of a batch, unless the batch's keys are gone (expired): a
-- counter alone would make a batch hash without `total`, which no reader could ever see end.
local function batch_count(batch, name, delta)
  if not batch or batch == '' then return nil end
  local bk = K.batch(batch)
  if redis.call('EXISTS', bk) == 0 then return nil end
  return redis.call('HINCRBY', bk, name, delta)
end

-- Writes the job's one terminal result and everything that goes with it: the record's state and
-- TTL, the end marker and TTL of its log (if it has one: a log stream per silent job would cost
-- memory and time), the waiters' notification and its batch counters. `was` and `batch` are the
-- record's state and batch as the caller read them; `cancel` its cancel flag. Callers check
-- first that the job is not terminal yet.
local function finalize(id, status, result, ttl, log_cap, was, batch, cancel)
  local rec = K.job(id)
  redis.call('HSET', rec, 'state', status, 'result', result, 'finished_at', now_ms(), 'entry', '')
  -- A replayed job starts with a clean infrastructure record (see retry.lua).
  redis.call('HDEL', rec, 'failing_since', 'infra_failures')
  if cancel then redis.call('HDEL', rec, 'cancel') end
  redis.call('EXPIRE', rec, ttl)
  local logs = K.logs(id)
  -- Whoever logged (any attempt, any worker) went through log.lua, so the stream is the truth.
  if redis.call('EXISTS', logs) == 1 then
    redis.call('XADD', logs, 'MAXLEN', '~', log_cap, '*', 's', 'end', 'd', status)
    redis.call('EXPIRE', logs, ttl)
  end
  redis.call('PUBLISH', K.done(id), status)
  -- A job with a callback enters the webhook outbox in the same atomic step as its result, so
  -- no crash between the two can lose the webhook (webhook.lua delivers it).
  if redis.call('HEXISTS', rec, 'callback') == 1 then
    redis.call('HSET', rec, 'hook_attempts', 0, 'hook_first_at', now_ms())
    redis.call('ZADD', K.webhooks, now_ms(), id)
  end
  if was == 'running' then batch_count(batch, 'running', -1) end
  batch_count(batch, 's:' .. status, 1)
  local left = batch_count(batch, 'remaining', -1)
  if left then
    -- A batch lives until its last job ends, then as long as that job's result.
    if left <= 0 then
      redis.call('HSET', K.batch(batch), 'finished_at', now_ms())
      redis.call('EXPIRE', K.batch(batch), ttl)
      redis.call('EXPIRE', K.batch_jobs(batch), ttl)
    end
    redis.call('PUBLISH', K.batch_events(batch), id .. ' ' .. status)
  end
end

-- The tenant part of a lane's turns member ('' or nil: the default tenant).
local function member_of(tenant)
  if not tenant or tenant == '' then return K.default_member end
  return tenant
end

-- A lane's member of the turns: `<priority index>:<tenant>`.
local function turn_of(idx, tenant)
  return idx .. ':' .. member_of(tenant)
end

-- The `running` field of a claimed entry: entry ids are per stream, so a tenant lane's names it.
local function running_field(idx, tenant, entry)
  if not tenant or tenant == '' then return idx .. ':' .. entry end
  return idx .. ':' .. tenant .. ':' .. entry
end

-- Puts a lane into the rotation, unless it is there: at the lowest pass of its priority's lanes
-- waiting (so an idle tenant neither banks credit nor waits behind busy ones). A tenant lane
-- that joins gets its consumer group (made once), its tenant listed, and the doorbell rung so
-- idle workers, which block on the default streams only, wake for it. Asked once per lane per
-- script call.
local joined = {}
local function join(idx, tenant)
  local m = member_of(tenant)
  local turn = turn_of(idx, tenant)
  if joined[turn] then return end
  joined[turn] = true
  if redis.call('ZSCORE', K.turns, turn) then return end
  -- Scores ascend: the first member of this priority has its lowest pass.
  local all = redis.call('ZRANGE', K.turns, 0, -1, 'WITHSCORES')
  local low = '0'
  local prefix = idx .. ':'
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #prefix) == prefix then
      low = all[i + 1]
      break
    end
  end
  redis.call('ZADD', K.turns, 'NX', low, turn)
  if m ~= K.default_member then
    pcall(redis.call, 'XGROUP', 'CREATE', K.lane(idx, tenant), K.group, '0', 'MKSTREAM')
    redis.call('SADD', K.tenants, tenant)
    redis.call('XADD', K.doorbell, 'MAXLEN', '~', 16, '*', 't', tenant)
  end
end

-- Adds a job's entry to the lane of its priority and tenant. Returns the entry id.
local function push(idx, tenant, id)
  join(idx, tenant)
  return redis.call('XADD', K.lane(idx, tenant), '*', 'id', id)
end

-- Acknowledges and deletes a claimed entry; its payload is no longer needed. (XACK of a group
-- that no longer exists answers 0: nothing is pending there.)
local function drop_entry(idx, tenant, entry)
  local stream = K.lane(idx, tenant)
  redis.call('XACK', stream, K.group, entry)
  redis.call('XDEL', stream, entry)
  redis.call('HDEL', K.running, running_field(idx, tenant, entry))
end

-- Queues a job again under a fresh entry of its lane, when the entry it had can no longer be
-- delivered (deleted while pending, trimmed, or left behind by a lost group). The token moves
-- on, so whoever held the job is fenced out. `was` is the record's state.
local function requeue(id, idx, entry, was)
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'priority', 'token', 'batch', 'tenant')
  if entry and entry ~= '' then drop_entry(idx, r[4], entry) end
  local fresh = push(tonumber(r[1]) or idx, r[4], id)
  redis.call('HSET', rec, 'state', 'queued', 'entry', fresh, 'token', next_token(r[2]))
  if was == 'running' then batch_count(r[3], 'running', -1) end
  return fresh
end

-- The fencing check: only the execution that holds a running job's current lease may act on it:
-- the same token, entry (and stream) and claiming worker. A lease from an earlier life of the
-- same id (record deleted and enqueued again) or from a claim lost in a failover never matches.
-- The record's tenant never changes in a job's life, so the lease's priority and the record's
-- tenant name the lane. Returns the record's fields { token, state, batch, cancel, attempts,
-- ttl, priority, entry, worker, tenant } (never the spec, which may be large: this runs for
-- every renewal and log line).
local function holds(id, idx, entry, token, worker)
  local r = redis.call('HMGET', K.job(id), 'token', 'state', 'batch', 'cancel', 'attempts', 'ttl',
    'priority', 'entry', 'worker', 'tenant')
  if r[2] == 'running' and r[1] == token and r[8] == entry and r[9] == worker
    and tonumber(r[7]) == idx then
    return r
  end
  return nil
end

-- The spec's `callback` URL, or nil. The record keeps it beside the spec, so that `finalize`
-- needs no JSON. Specs without the word are not decoded (most specs: it costs one scan).
local function callback_of(spec)
  if not spec or not string.find(spec, '"callback"', 1, true) then return nil end
  local ok, s = pcall(cjson.decode, spec)
  if ok and type(s) == 'table' and type(s.callback) == 'string' and s.callback ~= '' then
    return s.callback
  end
  return nil
end

-- Makes the record of a job a raw producer wrote only as a stream entry (`id` and `job`), the
-- way the enqueue script would have: queued under that entry.
local function adopt(idx, entry, id, job)
  redis.call('HSET', K.job(id), 'state', 'queued', 'spec', job, 'priority', idx, 'entry', entry,
    'attempts', 0, 'token', 0, 'enqueued_at', string.match(entry, '^(%d+)'), 'batch', '')
  -- A raw spec's callback, so its webhook is sent (and checked again) like anyone's.
  local callback = callback_of(job)
  if callback then redis.call('HSET', K.job(id), 'callback', callback) end
  -- A new life starts with a new log (an earlier life's may outlive its record by a moment).
  redis.call('DEL', K.logs(id))
end
