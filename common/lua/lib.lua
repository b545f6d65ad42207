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
