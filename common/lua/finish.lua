-- Write the terminal results of one or more jobs, each fenced: only the holder of a job's
-- current token may write its result. Workers batch the results that are ready at once.
-- ARGV: prefix, log cap, dlq cap, n, then n times: id, stream index, entry, token, status,
--       result JSON, ttl s, dead-letter reason ('' = not dead-lettered), dead-letter error,
--       logged ('1' if the job wrote to its live log).
-- Returns one integer per job: 1 when written, 0 when the caller no longer holds the job (its
-- result is refused).
local log_cap, dlq_cap, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
for j = 0, n - 1 do
  local b = 5 + j * 10
  local id, idx, entry, token = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3]
  local status, result, ttl = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local reason, err, logged = ARGV[b + 7], ARGV[b + 8], ARGV[b + 9]
  local r = holds(id, token)
  if r then
    drop_entry(idx, entry)
    if reason ~= '' then dead_letter(id, reason, err, r[5] or '0', r[6] or '', dlq_cap) end
    -- An earlier attempt (on a worker that died) may have logged even if this one did not.
    local maybe_logged = (logged == '1') or (tonumber(r[5] or '1') > 1 and nil)
    finalize(id, status, result, ttl, log_cap, r[2], r[3], r[4], maybe_logged)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
