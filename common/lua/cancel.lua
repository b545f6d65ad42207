-- Cancel a job. A queued or delayed job ends now as `cancelled`; a running one is flagged and its
-- worker told over the cancel channel (it also sees the flag when it renews its lease).
-- ARGV: prefix, id, cancelled result JSON (attempts filled in here), default ttl s, log cap.
-- Returns 'cancelled', 'requested', 'terminal:<status>' or 'unknown'.
local id = ARGV[2]
local rec = K.job(id)
local r = redis.call('HMGET', rec, 'state', 'entry', 'priority', 'ttl', 'attempts', 'batch', 'cancel')
local state = r[1]
if not state then return 'unknown' end
if state == 'queued' or state == 'delayed' then
  if state == 'queued' then
    -- Not yet delivered (claiming marks a job running in the same step), so deleting is safe.
    redis.call('XDEL', K.streams[tonumber(r[3])], r[2])
  else
    redis.call('ZREM', K.delayed, id)
  end
  local result = cjson.decode(ARGV[3])
  result.attempts = tonumber(r[5] or '0')
  local ttl = r[4]
  if not ttl or ttl == '' then ttl = ARGV[4] end
  finalize(id, 'cancelled', cjson.encode(result), ttl, ARGV[5], state, r[6], r[7])
  return 'cancelled'
elseif state == 'running' then
  redis.call('HSET', rec, 'cancel', '1')
  redis.call('PUBLISH', K.cancel, id)
  return 'requested'
end
return 'terminal:' .. state
