-- Put a running job back for another attempt, fenced like finish.lua.
-- ARGV: prefix, id, stream index, entry, token, delay ms (0 = queue now), last error,
--       refund ('1' = this attempt does not count, e.g. the worker is draining).
-- Returns 1 when done, 0 when the caller no longer holds the job.
local id, idx, entry, token = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local delay, err, refund = tonumber(ARGV[6]), ARGV[7], ARGV[8]
if not holds(id, token) then return 0 end
drop_entry(idx, entry)
local rec = K.job(id)
-- A new token fences the execution that just gave the job back.
redis.call('HINCRBY', rec, 'token', 1)
if refund == '1' then redis.call('HINCRBY', rec, 'attempts', -1) end
local r = redis.call('HMGET', rec, 'priority', 'batch')
if r[2] and r[2] ~= '' then redis.call('HINCRBY', K.batch(r[2]), 'running', -1) end
redis.call('HSET', rec, 'last_error', err)
if delay <= 0 then
  local fresh = redis.call('XADD', K.streams[tonumber(r[1])], '*', 'id', id)
  redis.call('HSET', rec, 'state', 'queued', 'entry', fresh)
else
  redis.call('ZADD', K.delayed, now_ms() + delay, id)
  redis.call('HSET', rec, 'state', 'delayed', 'entry', '')
end
return 1
