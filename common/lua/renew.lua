-- Renew the leases of a worker's running jobs. Each lease is checked against the record (token,
-- entry and worker: see `holds`), then its entry must still exist and be pending for this worker;
-- only then is its idle time reset, by its owner (XCLAIM ... 0 JUSTID: a renewal that never takes
-- an entry from another consumer and never bumps the delivery count).
-- ARGV: prefix, worker, then 4 per job: id, stream index, entry, token.
-- Returns one string per job: 'ok', 'cancel' (cancellation requested), 'lost' (the job is no
-- longer this execution's) or 'requeued' (its entry was deleted from the stream or is pending
-- nowhere, e.g. its group was destroyed: no worker could ever be handed that entry again, so the
-- job was queued again under a fresh entry and this execution must stop).
local worker = ARGV[2]
local out = {}
for i = 3, #ARGV, 4 do
  local id, idx, entry, token = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local r = holds(id, idx, entry, token, worker)
  local answer = 'lost'
  if r then
    local stream = K.lane(idx, r[10])
    local ok, p = pcall(redis.call, 'XPENDING', stream, K.group, entry, entry, 1)
    local owner = ok and p[1] and p[1][2]
    if owner and owner ~= worker then
      answer = 'lost'
    elseif owner and #redis.call('XRANGE', stream, entry, entry) > 0 then
      redis.call('XCLAIM', stream, K.group, worker, 0, entry, 'JUSTID')
      answer = (r[4] == '1') and 'cancel' or 'ok'
    else
      -- Redis 7 drops a deleted entry from the PEL when it is claimed, and answers nothing.
      requeue(id, idx, entry, 'running')
      answer = 'requeued'
    end
  end
  out[#out + 1] = answer
end
return out
