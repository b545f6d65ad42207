-- Move due retries from the delayed set back to their lanes (priority and tenant).
-- ARGV: prefix, limit. Returns the number of ids taken from the delayed set.
local ids = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'priority', 'tenant')
  if r[1] == 'delayed' then
    local fresh = push(tonumber(r[2]), r[3], id)
    redis.call('HSET', rec, 'state', 'queued', 'entry', fresh)
  end
  redis.call('ZREM', K.delayed, id)
end
return #ids
