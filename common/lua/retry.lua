-- Put a running job back for another attempt, fenced like finish.lua.
-- ARGV: prefix, worker, id, stream index, entry, token, delay ms (0 = queue now), last error,
--       refund ('1' = this attempt does not count, e.g. the worker is draining),
--       infra ('1' = an infrastructure failure of the job's own: the first one's time is kept in
--       the record's `failing_since` and each is counted in `infra_failures`, so the worker can
--       bound these retries by time; finalize clears both).
-- Returns 1 when done, 0 when the caller no longer holds the job.
local worker, id, idx, entry, token = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local delay, err, refund, infra = tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10]
local held = holds(id, idx, entry, token, worker)
if not held then return 0 end
local rec = K.job(id)
local attempts = tonumber(held[5] or '0')
if refund == '1' then attempts = attempts - 1 end
redis.call('HSET', rec, 'attempts', attempts, 'last_error', err)
if infra == '1' then
  redis.call('HSETNX', rec, 'failing_since', now_ms())
  redis.call('HINCRBY', rec, 'infra_failures', 1)
end
if delay <= 0 then
  -- A fresh entry and a new token fence the execution that just gave the job back.
  requeue(id, idx, entry, 'running')
else
  drop_entry(idx, held[10], entry)
  batch_count(held[3], 'running', -1)
  redis.call('ZADD', K.delayed, now_ms() + delay, id)
  redis.call('HSET', rec, 'state', 'delayed', 'entry', '', 'token', next_token(token))
end
return 1
