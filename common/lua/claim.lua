-- Claim up to `count` jobs for consumer `worker`, marking each running under a new fencing token.
-- ARGV: prefix, worker, mode ('new' | 'reclaim'), count, order (stream indices, e.g. '123'),
--       min_idle_ms (reclaim only), dlq cap, log cap, default result ttl s.
-- Returns { claimed, dropped, last_ids, missing, paused }:
--   claimed: flat, 8 per job: stream index, entry id, job id, token, attempts, spec JSON,
--            enqueued_at ms, cancel flag ('1' or '')
--   dropped: flat, 4 per entry: stream index, entry id, what ('duplicate' | 'requeued' |
--            'dead_lettered'), dead-letter reason (what it was dead-lettered for, else '')
--   last_ids: when mode is 'new' and nothing was claimed, each stream's last generated id, so the
--             worker can block on XREAD from exactly there without a race.
--   missing: indices of streams without the consumer group (stream deleted, group destroyed):
--            nothing was read there; the caller creates the group and claims again. Streams
--            read before are complete: no error ever leaves a claim half done.
--   paused: 1 when an operator paused the queue: nothing was read (new or reclaimed, since a
--           reclaim starts a job again); else 0. Checked here, in the same atomic step as the
--           claim, so no claim that starts after a pause was written can start a job.
local worker, mode, count, order = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local min_idle, dlq_cap, ttl_default = ARGV[6], ARGV[7], tonumber(ARGV[9])
if redis.call('HEXISTS', K.paused, K.paused_queue) == 1 then
  return { {}, {}, {}, {}, 1 }
end
local now = now_ms()
local claimed, dropped, missing, taken = {}, {}, {}, 0

local function drop(idx, entry, what, reason)
  drop_entry(idx, entry)
  dropped[#dropped + 1] = idx
  dropped[#dropped + 1] = entry
  dropped[#dropped + 1] = what
  dropped[#dropped + 1] = reason or ''
end

local function take(idx, entry, fields)
  local id, job = field(fields, 'id'), field(fields, 'job')
  if not id or id == '' then
    dead_letter('', 'missing_field', 'stream entry has no `id` field', 0,
      job or cjson.encode(fields), dlq_cap)
    return drop(idx, entry, 'dead_lettered', 'missing_field')
  end
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'entry', 'batch', 'priority', 'token', 'attempts',
    'spec', 'enqueued_at', 'cancel', 'ttl')
  -- Entry ids are per stream: the same id can exist in two streams, so compare both.
  local state, current, batch = r[1], r[2], r[3]
  if tonumber(r[4]) ~= idx then current = nil end
  if not valid_id(id) then
    -- No worker can name such a job (keys, labels): refuse it here, under the entry's own id.
    local err = 'entry id ' .. string.format('%q', id) ..
      ' is not a job id (1 to 128 of A-Z a-z 0-9 . _ : -)'
    dead_letter(id, 'invalid_spec', err, r[6] or '0', job or r[7] or '', dlq_cap)
    if (state == 'queued' or state == 'running') and current == entry then
      -- A record an enqueue-script caller made for it: it ends `rejected`, carrying that id.
      finalize(id, 'rejected', plain_result(id, 'rejected', err, r[6], r[8]),
        tonumber(r[10] or '') or ttl_default, ARGV[8], state, batch, r[9])
    end
    return drop(idx, entry, 'dead_lettered', 'invalid_spec')
  end
  if not state then
    -- A raw producer wrote only the entry: the entry's payload becomes the record.
    if not job then
      dead_letter(id, 'missing_field', 'job has no record and its entry no `job` field', 0, '', dlq_cap)
      return drop(idx, entry, 'dead_lettered', 'missing_field')
    end
    adopt(idx, entry, id, job)
    r = { false, entry, '', idx, '0', '0', job, string.match(entry, '^(%d+)'), false }
    state, current = 'queued', entry
  end
  if (state ~= 'queued' and state ~= 'running') or current ~= entry then
    -- Already terminal, waiting for a retry, or re-queued under a newer entry: never run twice.
    return drop(idx, entry, 'duplicate')
  end
  if state == 'queued' then batch_count(batch, 'running', 1) end
  local token = next_token(r[5])
  local attempts = tonumber(r[6] or '0') + 1
  redis.call('HSET', rec, 'state', 'running', 'entry', entry, 'token', token, 'attempts', attempts,
    'worker', worker, 'started_at', now)
  redis.call('HSET', K.running, idx .. ':' .. entry, id)
  local n = #claimed
  claimed[n + 1] = idx
  claimed[n + 2] = entry
  claimed[n + 3] = id
  claimed[n + 4] = token
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
  local r = redis.call('HMGET', K.job(id), 'state', 'entry', 'priority')
  if r[1] == 'running' and r[2] == entry and tonumber(r[3]) == idx then
    requeue(id, idx, entry, 'running')
  end
  dropped[#dropped + 1] = idx
  dropped[#dropped + 1] = entry
  dropped[#dropped + 1] = 'requeued'
  dropped[#dropped + 1] = ''
end

-- Runs a group command; a missing group (or stream) marks the stream missing instead of failing
-- the whole script after earlier streams' claims were written.
local function group_call(idx, ...)
  local ok, res = pcall(redis.call, ...)
  if ok then return res end
  missing[#missing + 1] = tostring(idx)
  return nil
end

for c in string.gmatch(order, '%d') do
  local idx = tonumber(c)
  local stream = K.streams[idx]
  if mode == 'new' then
    while taken < count do
      local res = group_call(idx, 'XREADGROUP', 'GROUP', K.group, worker, 'COUNT', count - taken,
        'STREAMS', stream, '>')
      if not res then break end
      for _, e in ipairs(res[1][2]) do take(idx, e[1], e[2]) end
    end
  else
    local cursor = '0-0'
    repeat
      if taken >= count then break end
      local res = group_call(idx, 'XAUTOCLAIM', stream, K.group, worker, min_idle, cursor,
        'COUNT', count - taken)
      if not res then break end
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
if mode == 'new' and taken == 0 and #missing == 0 then
  for i = 1, 3 do
    local info = redis.call('XINFO', 'STREAM', K.streams[i])
    last_ids[i] = field(info, 'last-generated-id') or '0-0'
  end
end
return { claimed, dropped, last_ids, missing, 0 }
