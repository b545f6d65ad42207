-- Renew the leases of a worker's running jobs: reset each entry's idle time without bumping its
-- delivery count. A job whose token moved on was taken over and is reported lost, never stolen back.
-- ARGV: prefix, worker, then 4 per job: id, stream index, entry, token.
-- Returns one string per job: 'ok', 'cancel' (cancellation requested) or 'lost'.
local worker = ARGV[2]
local out = {}
for i = 3, #ARGV, 4 do
  local id, idx, entry, token = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local r = redis.call('HMGET', K.job(id), 'token', 'state', 'cancel')
  local answer = 'lost'
  if r[1] == token and r[2] == 'running' then
    local c = redis.call('XCLAIM', K.streams[idx], K.group, worker, 0, entry, 'JUSTID')
    if #c > 0 then
      answer = (r[3] == '1') and 'cancel' or 'ok'
    end
  end
  out[#out + 1] = answer
end
return out
