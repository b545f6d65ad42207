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
-- TTL, the end marker of its log, the waiters' notification and its batch counters. Callers
-- check first that the job is not terminal yet.
local function finalize(id, status, result, ttl, log_cap)
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'batch')
  local was, batch = r[1], r[2]
  redis.call('HSET', rec, 'state', status, 'result', result, 'finished_at', now_ms(), 'entry', '')
  redis.call('HDEL', rec, 'cancel')
  redis.call('EXPIRE', rec, ttl)
  local logs = K.logs(id)
  redis.call('XADD', logs, 'MAXLEN', '~', log_cap, '*', 's', 'end', 'd', status)
  redis.call('EXPIRE', logs, ttl)
  redis.call('PUBLISH', K.done(id), status)
  if batch and batch ~= '' then
    local bk = K.batch(batch)
    if was == 'running' then redis.call('HINCRBY', bk, 'running', -1) end
    redis.call('HINCRBY', bk, 's:' .. status, 1)
    local done = redis.call('HINCRBY', bk, 'done', 1)
    local total = tonumber(redis.call('HGET', bk, 'total') or '0')
    -- A batch lives until its last job ends, then as long as that job's result.
    if done >= total then redis.call('EXPIRE', bk, ttl) end
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
local function holds(id, token)
  local r = redis.call('HMGET', K.job(id), 'token', 'state')
  return r[1] == token and r[2] == 'running'
end
