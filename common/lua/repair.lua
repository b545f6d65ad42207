-- Check (and in mode 'repair', fix) job records: every job that has not ended must be able to
-- reach its next step, and everything an ended job left must expire. Each record is checked and
-- repaired inside this one script, so it is safe against a live fleet: a claim is either wholly
-- before it or wholly after it. `quayside check [--repair]` calls it for every record in chunks.
-- ARGV: prefix, mode ('check' | 'repair'), default ttl s, then job ids.
-- Returns flat pairs: job id, finding, for each record with a problem:
--   queued_entry_gone      queued, but its entry is gone from its stream (trimmed, deleted, or
--                          the stream was deleted): no worker will ever see it
--   queued_entry_skipped   queued, its entry is in the stream, but the group has moved past it
--                          without delivering it (group made again at '$', XGROUP SETID)
--   running_entry_gone     running, but its entry is gone, or pending for no worker (its group
--                          was lost): no worker can take it over
--   queued_lane_idle       queued in a tenant's lane, deliverable, but the lane is not in its
--                          priority's turns (what claims rotate over): no claim would find it
--                          (the default lane needs no entry there: claims look at it anyway)
--   delayed_unscheduled    waiting for a retry, but not in the delayed set
--   ended_without_ttl      ended, but its record or log has no TTL
-- Repair queues the job again under a fresh entry (the token moves on), puts its lane back in
-- the rotation, schedules it now, or sets the TTL; it also creates a stream's missing consumer group (from id 0), as the next
-- worker to claim would (a missing group alone is not a finding: workers create it).
local repair = ARGV[2] == 'repair'
local default_ttl = tonumber(ARGV[3])
local out = {}
local groups = {}

-- The group's last delivered id for lane `stream`, or false when it has no group.
local function last_delivered(stream)
  if groups[stream] == nil then
    groups[stream] = false
    local ok, list = pcall(redis.call, 'XINFO', 'GROUPS', stream)
    if ok then
      for _, g in ipairs(list) do
        if field(g, 'name') == K.group then groups[stream] = field(g, 'last-delivered-id') end
      end
    end
    if not groups[stream] and repair then
      redis.call('XGROUP', 'CREATE', stream, K.group, '0', 'MKSTREAM')
      groups[stream] = '0-0'
    end
  end
  return groups[stream]
end

local function finding(id, what)
  out[#out + 1] = id
  out[#out + 1] = what
end

for i = 4, #ARGV do
  local id = ARGV[i]
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'entry', 'priority', 'ttl', 'tenant')
  local state, entry, idx = r[1], r[2], tonumber(r[3] or '')
  if state == 'queued' or state == 'running' then
    local stream = idx and K.lane(idx, r[5])
    local last = stream and last_delivered(stream)
    local exists = stream and entry and entry ~= ''
      and #redis.call('XRANGE', stream, entry, entry) > 0
    local pending = false
    if exists and last then
      local p = redis.call('XPENDING', stream, K.group, entry, entry, 1)
      pending = p[1] ~= nil
    end
    local deliverable = exists and last and (pending or id_before(last, entry))
    if not deliverable and (last or not exists) then
      if state == 'queued' then
        finding(id, exists and 'queued_entry_skipped' or 'queued_entry_gone')
      else
        finding(id, 'running_entry_gone')
      end
      if repair then requeue(id, idx or 2, entry, state) end
    elseif state == 'queued' and r[5] and r[5] ~= ''
      and not redis.call('ZSCORE', K.turns, turn_of(idx, r[5])) then
      finding(id, 'queued_lane_idle')
      if repair then join(idx, r[5]) end
    end
  elseif state == 'delayed' then
    if not redis.call('ZSCORE', K.delayed, id) then
      finding(id, 'delayed_unscheduled')
      if repair then redis.call('ZADD', K.delayed, now_ms(), id) end
    end
  elseif state then
    local ttl = tonumber(r[4] or '') or default_ttl
    local logs = K.logs(id)
    if redis.call('TTL', rec) == -1 or redis.call('TTL', logs) == -1 then
      finding(id, 'ended_without_ttl')
      if repair then
        redis.call('EXPIRE', rec, ttl)
        if redis.call('EXISTS', logs) == 1 then redis.call('EXPIRE', logs, ttl) end
      end
    end
  end
end
return out
