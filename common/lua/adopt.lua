-- Give a record to every job a raw producer added with a plain XADD (`id` and `job`) since the
-- last call, so it can be seen (status, wait, logs) and cancelled while it waits, exactly like a
-- job enqueued with the script. Entries are read once, from a cursor per stream kept in
-- qs:{Q}:adopted; an entry whose id has a record already is a duplicate and is deleted, one whose
-- id is not valid is left for claim.lua to dead-letter. Workers call it with promote.lua; producers call it
-- before answering "unknown".
-- ARGV: prefix, most entries to read per stream.
-- Returns { records made, entries read } (read below 3 x limit: caught up).
local limit = tonumber(ARGV[2])
local made, read = 0, 0
for idx = 1, 3 do
  local stream = K.streams[idx]
  local cursor = redis.call('HGET', K.adopted, idx) or '0-0'
  local entries = redis.call('XRANGE', stream, '(' .. cursor, '+', 'COUNT', limit)
  if #entries == 0 and cursor ~= '0-0' and redis.call('EXISTS', stream) == 1 then
    -- A stream deleted and made again generates ids below the cursor: start over then.
    local last = field(redis.call('XINFO', 'STREAM', stream), 'last-generated-id')
    if last and id_before(last, cursor) then redis.call('HDEL', K.adopted, idx) end
  end
  read = read + #entries
  -- Raw producers write the default lane without joining the rotation: it joins here.
  if #entries > 0 then join(idx, '') end
  for _, e in ipairs(entries) do
    local id, job = field(e[2], 'id'), field(e[2], 'job')
    if job and valid_id(id) then
      local r = redis.call('HMGET', K.job(id), 'state', 'entry', 'priority')
      if not r[1] then
        adopt(idx, e[1], id, job)
        made = made + 1
      elseif r[2] ~= e[1] or tonumber(r[3]) ~= idx then
        -- A second entry for a job that exists: dropped now, while the record can tell (a claim
        -- would drop it too, but not once the record has expired). A claim never leaves a
        -- duplicate pending, so this entry was never delivered.
        redis.call('XDEL', stream, e[1])
      end
    end
  end
  if #entries > 0 then redis.call('HSET', K.adopted, idx, entries[#entries][1]) end
end
return { made, read }
