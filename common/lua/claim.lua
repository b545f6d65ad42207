-- Claim up to `count` jobs for consumer `worker`, marking each running under a new fencing token.
-- ARGV: prefix, worker, mode ('new' | 'reclaim'), count, order (stream indices, e.g. '123'),
--       min_idle_ms (reclaim only), dlq cap.
-- Returns { claimed, dropped, last_ids }:
--   claimed: flat, 8 per job: stream index, entry id, job id, token, attempts, spec JSON,
--            enqueued_at ms, cancel flag ('1' or '')
--   dropped: flat, 3 per entry: stream index, entry id, reason ('duplicate' | 'malformed' | 'requeued')
--   last_ids: when mode is 'new' and nothing was claimed, each stream's last generated id, so the
--             worker can block on XREAD from exactly there without a race.
local worker, mode, count, order = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local min_idle, dlq_cap = ARGV[6], ARGV[7]
local now = now_ms()
local claimed, dropped, taken = {}, {}, 0

local function drop(idx, entry, reason)
  drop_entry(idx, entry)
  dropped[#dropped + 1] = idx
  dropped[#dropped + 1] = entry
  dropped[#dropped + 1] = reason
end

local function take(idx, entry, fields)
  local id, job = field(fields, 'id'), field(fields, 'job')
  if not id or id == '' then
    dead_letter('', 'missing_field', 'stream entry has no `id` field', 0,
      job or cjson.encode(fields), dlq_cap)
    return drop(idx, entry, 'malformed')
  end
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'entry', 'batch', 'priority', 'token', 'attempts',
    'spec', 'enqueued_at', 'cancel')
  -- Entry ids are per stream: the same id can exist in two streams, so compare both.
  local state, current, batch = r[1], r[2], r[3]
  if tonumber(r[4]) ~= idx then current = nil end
  if not state then
    -- A raw producer wrote only the entry: the entry's payload becomes the record.
    if not job then
      dead_letter(id, 'missing_field', 'job has no record and its entry no `job` field', 0, '', dlq_cap)
      return drop(idx, entry, 'malformed')
    end
    r = { false, entry, '', idx, '0', '0', job, string.match(entry, '^(%d+)'), false }
    redis.call('HSET', rec, 'spec', job, 'priority', idx, 'enqueued_at', r[8], 'batch', '')
    state, current = 'queued', entry
  end
  if (state ~= 'queued' and state ~= 'running') or current ~= entry then
    -- Already terminal, waiting for a retry, or re-queued under a newer entry: never run twice.
    return drop(idx, entry, 'duplicate')
  end
  if state == 'queued' and batch and batch ~= '' then
    redis.call('HINCRBY', K.batch(batch), 'running', 1)
  end
  local token = tonumber(r[5] or '0') + 1
  local attempts = tonumber(r[6] or '0') + 1
  redis.call('HSET', rec, 'state', 'running', 'entry', entry, 'token', token, 'attempts', attempts,
    'worker', worker, 'started_at', now)
  redis.call('HSET', K.running, idx .. ':' .. entry, id)
  local n = #claimed
  claimed[n + 1] = idx
  claimed[n + 2] = entry
  claimed[n + 3] = id
  claimed[n + 4] = tostring(token)
  claimed[n + 5] = tostring(attempts)
  claimed[n + 6] = r[7]
  claimed[n + 7] = r[8] or '0'
  claimed[n + 8] = r[9] or ''
  taken = taken + 1
end

-- An entry deleted from its stream while pending (XDEL or MAXLEN by a raw producer). The record
-- still holds the spec, so the job is queued again under a fresh entry instead of being lost.
local function requeue_lost(idx, entry)
  local rf = idx .. ':' .. entry
  local id = redis.call('HGET', K.running, rf)
  redis.call('HDEL', K.running, rf)
  if not id then return end
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'entry', 'priority', 'batch')
  if r[1] == 'running' and r[2] == entry then
    redis.call('HINCRBY', rec, 'token', 1)
    local fresh = redis.call('XADD', K.streams[tonumber(r[3]) or idx], '*', 'id', id)
    redis.call('HSET', rec, 'state', 'queued', 'entry', fresh)
    if r[4] and r[4] ~= '' then redis.call('HINCRBY', K.batch(r[4]), 'running', -1) end
  end
  dropped[#dropped + 1] = idx
  dropped[#dropped + 1] = entry
  dropped[#dropped + 1] = 'requeued'
end

for c in string.gmatch(order, '%d') do
  local idx = tonumber(c)
  local stream = K.streams[idx]
  if mode == 'new' then
    while taken < count do
      local res = redis.call('XREADGROUP', 'GROUP', K.group, worker, 'COUNT', count - taken,
        'STREAMS', stream, '>')
      if not res then break end
      for _, e in ipairs(res[1][2]) do take(idx, e[1], e[2]) end
    end
  else
    local cursor = '0-0'
    repeat
      if taken >= count then break end
      local res = redis.call('XAUTOCLAIM', stream, K.group, worker, min_idle, cursor,
        'COUNT', count - taken)
      cursor = res[1]
      for _, e in ipairs(res[2]) do
        -- Before 7.0 a deleted entry came back as nil fields; treat both forms alike.
        if e[2] then take(idx, e[1], e[2]) else requeue_lost(idx, e[1]) end
      end
      for _, gone in ipairs(res[3] or {}) do requeue_lost(idx, gone) end
    until cursor == '0-0'
  end
end

local last_ids = {}
if mode == 'new' and taken == 0 then
  for i = 1, 3 do
    local info = redis.call('XINFO', 'STREAM', K.streams[i])
    last_ids[i] = field(info, 'last-generated-id') or '0-0'
  end
end
return { claimed, dropped, last_ids }
