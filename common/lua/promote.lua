-- Move due retries from the delayed set back to their priority streams.
-- ARGV: prefix, limit. Returns the number of ids taken from the delayed set.
local ids = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local rec = K.job(id)
  local r = redis.call('HMGET', rec, 'state', 'priority')
  if r[1] == 'delayed' then
    local fresh = redis.call('XADD', K.streams[tonumber(r[2])], '*', 'id', id)
    redis.call('HSET', rec, 'state', 'queued', 'entry', fresh)
  end
  redis.call('ZREM', K.delayed, id)
end
return #ids
