-- Claim up to `count` jobs for consumer `worker`, marking each running under a new fencing token.
-- ARGV: prefix, worker, mode ('new' | 'reclaim'), count, order (priority indices, e.g. '123'),
--       min_idle_ms (reclaim only), dlq cap, log cap, default result ttl s, then the tenants
--       whose share is configured: their number n, then n times: tenant ('default' for the
--       default tenant), weight (1-1000), max running (0 = no cap).
-- Within a priority, 'new' claims rotate over the priority's lanes in the turns (stride
-- scheduling: the lane with the lowest pass is served and its pass grows by 1e6 / weight per
-- job), so a tenant with a huge backlog and a tenant with one job are both served. A tenant at its running
-- cap (its lanes' pending entries, fleet-wide) or paused is skipped, keeping its pass. The
-- default lane is also read when it is not in the turns (raw producers do not join them) and the
-- rotation had nothing to give.
-- Returns { claimed, dropped, last_ids, missing, paused, held, skipped }:
--   claimed: flat, 8 per job: stream index, entry id, job id, token, attempts, spec JSON,
--            enqueued_at ms, cancel flag ('1' or '')
--   dropped: flat, 4 per entry: stream index, entry id, what ('duplicate' | 'requeued' |
--            'dead_lettered'), dead-letter reason (what it was dead-lettered for, else '')
--   last_ids: when mode is 'new' and nothing was claimed, the last generated id of each default
--             stream and of the doorbell (rung when a tenant lane gets work), so the worker can
--             block on XREAD from exactly there without a race.
--   missing: indices of default streams without the consumer group (stream deleted, group
--            destroyed): nothing was read there; the caller creates the group and claims again.
--            Streams read before are complete: no error ever leaves a claim half done. (A tenant
--            lane's group is made again here, from its first entry.)
--   paused: 1 when an operator paused the queue: nothing was read (new or reclaimed, since a
--           reclaim starts a job again); else 0. Checked here, in the same atomic step as the
--           claim, so no claim that starts after a pause was written can start a job.
--   held: 1 when a tenant with queued work was skipped for its running cap: the worker asks
--         again soon instead of blocking (a slot frees without any stream entry to wake it).
--   skipped: flat, 2 per lane with queued work that this call passed over: its turns member
--            (the tenant, 'default' for the default tenant), and why ('running_cap' | 'paused').
local worker, mode, count, order = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local min_idle, dlq_cap, ttl_default = ARGV[6], ARGV[7], tonumber(ARGV[9])
local paused = {}
local flat = redis.call('HGETALL', K.paused)
for i = 1, #flat, 2 do paused[flat[i]] = true end
if paused[K.paused_queue] then
  return { {}, {}, {}, {}, 1, 0, {} }
end
local STRIDE_UNIT = 1000000
local shares = {}
for j = 0, (tonumber(ARGV[10] or '0') or 0) - 1 do
  local b = 11 + j * 3
  shares[ARGV[b]] = { weight = tonumber(ARGV[b + 1]) or 1, cap = tonumber(ARGV[b + 2]) or 0 }
end
local held = 0
local skipped = {}
local function skip(m, why)
  skipped[#skipped + 1] = m
  skipped[#skipped + 1] = why
end
local now = now_ms()
local claimed, dropped, missing, taken = {}, {}, {}, 0

local function drop(idx, tenant, entry, what, reason)
  drop_entry(idx, tenant, entry)
  dropped[#dropped + 1] = idx
  dropped[#dropped + 1] = entry
  dropped[#dropped + 1] = what
  dropped[#dropped + 1] = reason or ''
end

local function take(idx, tenant, entry, fields)
  local id, job = field(fields, 'id'), field(fields, 'job')
  if not id or id == '' then
    dead_letter('', 'missing_field', 'stream entry has no `id` field', 0,
      job or cjson.encode(fields), dlq_cap)
    return drop(idx, tenant, entry, 'dead_lettered', 'missing_field')
  end
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'entry', 'batch', 'priority', 'token', 'attempts',
    'spec', 'enqueued_at', 'cancel', 'ttl', 'tenant')
  -- Entry ids are per stream: the same id can exist in two lanes, so compare the lane too.
  local state, current, batch = r[1], r[2], r[3]
  if tonumber(r[4]) ~= idx or (r[11] or '') ~= tenant then current = nil end
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
    return drop(idx, tenant, entry, 'dead_lettered', 'invalid_spec')
  end
  if not state then
    -- A raw producer wrote only the entry: the entry's payload becomes the record.
    if not job then
      dead_letter(id, 'missing_field', 'job has no record and its entry no `job` field', 0, '', dlq_cap)
      return drop(idx, tenant, entry, 'dead_lettered', 'missing_field')
    end
    adopt(idx, entry, id, job)
    if tenant ~= '' then redis.call('HSET', rec, 'tenant', tenant) end
    r = { false, entry, '', idx, '0', '0', job, string.match(entry, '^(%d+)'), false }
    state, current = 'queued', entry
  end
  if (state ~= 'queued' and state ~= 'running') or current ~= entry then
    -- Already terminal, waiting for a retry, or re-queued under a newer entry: never run twice.
    return drop(idx, tenant, entry, 'duplicate')
  end
  if state == 'queued' then batch_count(batch, 'running', 1) end
  local token = next_token(r[5])
  local attempts = tonumber(r[6] or '0') + 1
  redis.call('HSET', rec, 'state', 'running', 'entry', entry, 'token', token, 'attempts', attempts,
    'worker', worker, 'started_at', now)
  redis.call('HSET', K.running, running_field(idx, tenant, entry), id)
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
local function requeue_lost(idx, tenant, entry)
  local rf = running_field(idx, tenant, entry)
  local id = redis.call('HGET', K.running, rf)
  redis.call('HDEL', K.running, rf)
  if not id then return end
  local r = redis.call('HMGET', K.job(id), 'state', 'entry', 'priority', 'tenant')
  if r[1] == 'running' and r[2] == entry and tonumber(r[3]) == idx and (r[4] or '') == tenant then
    requeue(id, idx, entry, 'running')
  end
  dropped[#dropped + 1] = idx
  dropped[#dropped + 1] = entry
  dropped[#dropped + 1] = 'requeued'
  dropped[#dropped + 1] = ''
end

-- Runs a group command on a lane; a default stream without the group is marked missing
-- instead of failing the whole script after earlier streams' claims were written. A tenant
-- lane's group is made again here when reading (from its first entry: duplicates are dropped
-- by `take`); a reclaim skips a lane without one (nothing can be pending there).
local function group_call(idx, tenant, reading, ...)
  local ok, res = pcall(redis.call, ...)
  if ok then return res end
  if tenant == '' then
    missing[#missing + 1] = tostring(idx)
    return nil
  end
  if not reading
    or not pcall(redis.call, 'XGROUP', 'CREATE', K.lane(idx, tenant), K.group, '0', 'MKSTREAM') then
    return nil
  end
  ok, res = pcall(redis.call, ...)
  if ok then return res end
  return nil
end

-- Reads up to `n` new entries of a lane and takes them. Returns how many entries it read
-- (claimed or dropped), or nil when the lane could not be read.
local function read_lane(idx, tenant, n)
  local res = group_call(idx, tenant, true, 'XREADGROUP', 'GROUP', K.group, worker, 'COUNT', n,
    'STREAMS', K.lane(idx, tenant), '>')
  if res == nil then return nil end
  if not res then return 0 end
  for _, e in ipairs(res[1][2]) do take(idx, tenant, e[1], e[2]) end
  return #res[1][2]
end

local function tenant_of(m)
  if m == K.default_member then return '' end
  return m
end

-- A tenant's jobs running fleet-wide: its lanes' pending entries (counted once per call).
local running_now = {}
local function running_of(m)
  if running_now[m] == nil then
    local n = 0
    for i = 1, 3 do
      local ok, p = pcall(redis.call, 'XPENDING', K.lane(i, tenant_of(m)), K.group)
      if ok then n = n + (tonumber(p[1]) or 0) end
    end
    running_now[m] = n
  end
  return running_now[m]
end

-- How many more jobs of tenant `m` this call may start: its cap less what runs (huge: none).
local function room(m)
  local share = shares[m]
  if not share or share.cap <= 0 then return count end
  return share.cap - running_of(m)
end

-- The rotation's lanes by priority index, read once per call: { m, pass } in pass order.
local function read_turns()
  local by_idx = { {}, {}, {} }
  local flat_turns = redis.call('ZRANGE', K.turns, 0, -1, 'WITHSCORES')
  for i = 1, #flat_turns, 2 do
    local idx, m = string.match(flat_turns[i], '^(%d):(.+)$')
    local list = by_idx[tonumber(idx or '')]
    if list then list[#list + 1] = { m = m, pass = tonumber(flat_turns[i + 1]) } end
  end
  return by_idx
end

-- One priority's rotation: serve the lowest pass among lanes that can still give work, each
-- turn an even share of the slots left (all of them for a lane alone).
local function rotate(idx, members)
  local lanes, has_default = {}, false
  for _, t in ipairs(members) do
    local share = shares[t.m]
    local weight = (share and share.weight) or 1
    local lane = { m = t.m, pass = t.pass, got = 0, live = true,
      stride = math.floor(STRIDE_UNIT / math.max(1, weight)) }
    if t.m == K.default_member then has_default = true end
    if paused['t:' .. t.m] then
      lane.live = false
      skip(t.m, 'paused')
    end
    lanes[#lanes + 1] = lane
  end
  local live = 0
  for _, l in ipairs(lanes) do if l.live then live = live + 1 end end
  while taken < count and live > 0 do
    local best
    for _, l in ipairs(lanes) do
      if l.live and (not best or l.pass < best.pass) then best = l end
    end
    local left = room(best.m)
    if left <= 0 then
      best.live, held = false, 1
      live = live - 1
      skip(best.m, 'running_cap')
    else
      local n = math.min(math.ceil((count - taken) / live), left)
      local before = taken
      local read = read_lane(idx, tenant_of(best.m), n)
      if read == nil or read == 0 then
        best.live, best.empty = false, read == 0
        live = live - 1
      else
        local got = taken - before
        best.got = best.got + got
        best.pass = best.pass + best.stride * got
        running_now[best.m] = (running_now[best.m] or 0) + got
      end
    end
  end
  for _, l in ipairs(lanes) do
    if l.empty then
      redis.call('ZREM', K.turns, idx .. ':' .. l.m)
    elseif l.got > 0 and #lanes > 1 then
      -- A lane alone keeps its pass: only the order among a priority's lanes matters, and a
      -- lane that joins enters at the lowest pass present.
      redis.call('ZADD', K.turns, 'XX', string.format('%.0f', l.pass), idx .. ':' .. l.m)
    end
  end
  if not has_default and taken < count and not paused['t:' .. K.default_member] then
    -- Raw producers write the default lane without joining the turns.
    local read = read_lane(idx, '', count - taken)
    if read and read > 0 then join(idx, '') end
  end
end

if mode == 'new' then
  local turns = read_turns()
  for c in string.gmatch(order, '%d') do
    if taken >= count then break end
    rotate(tonumber(c), turns[tonumber(c)])
  end
else
  local tenants = {}
  if not paused['t:' .. K.default_member] then tenants[1] = '' end
  for _, t in ipairs(redis.call('SMEMBERS', K.tenants)) do
    if not paused['t:' .. t] then tenants[#tenants + 1] = t end
  end
  for c in string.gmatch(order, '%d') do
    local idx = tonumber(c)
    for _, tenant in ipairs(tenants) do
      local stream = K.lane(idx, tenant)
      local cursor = '0-0'
      repeat
        if taken >= count then break end
        local res = group_call(idx, tenant, false, 'XAUTOCLAIM', stream, K.group, worker, min_idle, cursor,
          'COUNT', count - taken)
        if not res then break end
        cursor = res[1]
        for _, e in ipairs(res[2]) do
          -- Before 7.0 a deleted entry came back as nil fields; treat both forms alike.
          if e[2] then take(idx, tenant, e[1], e[2]) else requeue_lost(idx, tenant, e[1]) end
        end
        for _, gone in ipairs(res[3] or {}) do requeue_lost(idx, tenant, gone) end
      until cursor == '0-0'
    end
  end
end

local last_ids = {}
if mode == 'new' and taken == 0 and #missing == 0 then
  for i, stream in ipairs({ K.streams[1], K.streams[2], K.streams[3], K.doorbell }) do
    -- A stream not made yet (a paused default tenant's, the doorbell) wakes from its first entry.
    local ok, info = pcall(redis.call, 'XINFO', 'STREAM', stream)
    last_ids[i] = (ok and field(info, 'last-generated-id')) or '0-0'
  end
end
return { claimed, dropped, last_ids, missing, 0, held, skipped }
