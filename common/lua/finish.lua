-- Write the terminal results of one or more jobs, each fenced: only the holder of a job's
-- current lease may write its result (see `holds`). Workers batch the results ready at once.
-- ARGV: prefix, worker, log cap, dlq cap, n, then n times: id, stream index, entry, token,
--       status, result JSON, ttl s, dead-letter reason ('' = not dead-lettered), dead-letter
--       error.
-- Returns one integer per job: 1 when written, 0 when the caller no longer holds the job (its
-- result is refused).
local worker, log_cap, dlq_cap, n = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local out = {}
for j = 0, n - 1 do
  local b = 6 + j * 9
  local id, idx, entry, token = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3]
  local status, result, ttl = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local reason, err = ARGV[b + 7], ARGV[b + 8]
  local r = holds(id, idx, entry, token, worker)
  if r then
    drop_entry(idx, r[10], entry)
    if reason ~= '' then
      local spec = redis.call('HGET', K.job(id), 'spec') or ''
      dead_letter(id, reason, err, r[5] or '0', spec, dlq_cap)
    end
    finalize(id, status, result, ttl, log_cap, r[2], r[3], r[4])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
