-- Write a job's terminal result, fenced: only the holder of the current token may.
-- ARGV: prefix, id, stream index, entry, token, status, result JSON, ttl s, log cap,
--       dead-letter reason ('' = not dead-lettered), dead-letter error, dlq cap.
-- Returns 1 when written, 0 when the caller no longer holds the job (its result is refused).
local id, idx, entry, token = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local status, result, ttl, log_cap = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local reason, err, dlq_cap = ARGV[10], ARGV[11], ARGV[12]
if not holds(id, token) then return 0 end
drop_entry(idx, entry)
if reason ~= '' then
  local r = redis.call('HMGET', K.job(id), 'attempts', 'spec')
  dead_letter(id, reason, err, r[1] or '0', r[2] or '', dlq_cap)
end
finalize(id, status, result, ttl, log_cap)
return 1
