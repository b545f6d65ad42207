-- Append one chunk to a running job's live log, fenced like finish.lua: an execution that lost
-- its lease writes nothing, so nothing lands after the `end` entry finish.lua adds. The log
-- stream keeps a TTL from its first entry (the job's result TTL or the default, whichever is
-- longer, renewed by each append; finish.lua sets the result TTL at the end), so a log whose job
-- never ends cleanly still expires.
-- ARGV: prefix, worker, id, stream index, entry, token, log cap, default ttl s, source, data.
-- Returns 1 when appended, 0 when the caller no longer holds the job.
local worker, id, idx, entry, token = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local held = holds(id, idx, entry, token, worker)
if not held then return 0 end
local logs = K.logs(id)
redis.call('XADD', logs, 'MAXLEN', '~', ARGV[7], '*', 's', ARGV[9], 'd', ARGV[10])
redis.call('EXPIRE', logs, math.max(tonumber(held[6] or '') or 0, tonumber(ARGV[8])))
return 1
