-- Put a running job back for another attempt, fenced like finish.lua.
-- ARGV: prefix, id, stream index, entry, token, delay ms (0 = queue now), last error,
--       refund ('1' = this attempt does not count, e.g. the worker is draining),
--       infra ('1' = an infrastructure failure of the job's own: the first one's time is kept in
--       the record's `failing_since` and each is counted in `infra_failures`, so the worker can
--       bound these retries by time; finalize clears both).
-- Returns 1 when done, 0 when the caller no longer holds the job.
local id, idx, entry, token = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local delay, err, refund, infra = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
local held = holds(id, token)
if not held then return 0 end
drop_entry(idx, entry)
local rec = K.job(id)
local attempts = tonumber(held[5] or '0')
if refund == '1' then attempts = attempts - 1 end
local batch = held[3]
if batch and batch ~= '' then redis.call('HINCRBY', K.batch(batch), 'running', -1) end
-- A new token fences the execution that just gave the job back.
redis.call('HSET', rec, 'token', tonumber(token) + 1, 'attempts', attempts, 'last_error', err)
if infra == '1' then
  redis.call('HSETNX', rec, 'failing_since', now_ms())
  redis.call('HINCRBY', rec, 'infra_failures', 1)
end
if delay <= 0 then
  local fresh = redis.call('XADD', K.streams[tonumber(redis.call('HGET', rec, 'priority'))], '*', 'id', id)
  redis.call('HSET', rec, 'state', 'queued', 'entry', fresh)
else
  redis.call('ZADD', K.delayed, now_ms() + delay, id)
  redis.call('HSET', rec, 'state', 'delayed', 'entry', '')
end
return 1
