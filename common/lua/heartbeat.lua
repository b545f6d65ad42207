-- Record a worker's heartbeat, expire workers that stopped beating, and delete consumers that
-- hold no pending entries and belong to no live worker (so no group grows forever), in every lane.
-- ARGV: prefix, worker id, heartbeat JSON, ttl ms, sweep ('1': also delete the consumers; a
-- worker asks on its periodic beat, not on the extra beats of a changed in-flight count).
-- Returns the number of workers expired.
local worker, doc, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
redis.call('HSET', K.workers, worker, doc)
redis.call('ZADD', K.workers_expiry, now + ttl, worker)
local dead = redis.call('ZRANGEBYSCORE', K.workers_expiry, '-inf', now)
for _, w in ipairs(dead) do
  redis.call('HDEL', K.workers, w)
  redis.call('ZREM', K.workers_expiry, w)
end
if ARGV[5] == '0' then return #dead end
local lanes = { K.streams[1], K.streams[2], K.streams[3] }
for _, t in ipairs(redis.call('SMEMBERS', K.tenants)) do
  for i = 1, 3 do lanes[#lanes + 1] = K.lane(i, t) end
end
for _, lane in ipairs(lanes) do
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', lane, K.group)
  if ok then
    for _, c in ipairs(consumers) do
      local name, pending, idle = field(c, 'name'), field(c, 'pending'), field(c, 'idle')
      if pending == 0 and idle > 2 * ttl and redis.call('HEXISTS', K.workers, name) == 0 then
        redis.call('XGROUP', 'DELCONSUMER', lane, K.group, name)
      end
    end
  end
end
return #dead
