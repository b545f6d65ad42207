-- Cancel a job. A queued or delayed job ends now as `cancelled`, with a result this script
-- builds; a running one is flagged and its worker told over the cancel channel (it also sees
-- the flag when it renews its lease) and records `cancelled` itself.
-- ARGV: prefix, id, default ttl s (for records that carry none), min ttl s (queue.min_result_ttl_s),
--       log cap.
-- Returns 'cancelled', 'requested', 'terminal:<status>' or 'unknown' (no record: never
-- enqueued, expired, or a raw XADD entry no worker or adopt.lua has seen yet).
local id = ARGV[2]
local default_ttl, min_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
if not default_ttl or not min_ttl or not tonumber(ARGV[5]) then
  return redis.error_reply('ERR cancel: expected ARGV prefix, id, default ttl, min ttl, log cap')
end
local rec = K.job(id)
local r = redis.call('HMGET', rec, 'state', 'entry', 'priority', 'ttl', 'attempts', 'batch', 'cancel',
  'enqueued_at', 'tenant')
local state = r[1]
if not state then return 'unknown' end
if state == 'queued' or state == 'delayed' then
  if state == 'queued' then
    -- Not yet delivered (claiming marks a job running in the same step), so deleting is safe.
    redis.call('XDEL', K.lane(tonumber(r[3]), r[9]), r[2])
  else
    redis.call('ZREM', K.delayed, id)
  end
  local result = plain_result(id, 'cancelled', 'cancelled before it ran', r[5], r[8])
  local ttl = math.max(tonumber(r[4] or '') or default_ttl, min_ttl)
  finalize(id, 'cancelled', result, ttl, ARGV[5], state, r[6], r[7])
  return 'cancelled'
elseif state == 'running' then
  redis.call('HSET', rec, 'cancel', '1')
  redis.call('PUBLISH', K.cancel, id)
  return 'requested'
end
return 'terminal:' .. state
