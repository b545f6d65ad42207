-- Queue a dead-lettered job again with a fresh attempt budget, and remove the dead letter.
-- ARGV: prefix, dead-letter entry id.
-- Returns 'queued', 'missing' (no such dead letter), 'unreplayable' (no job id or spec) or
-- 'busy:<state>' (the job was queued again some other way; the dead letter is kept).
local dl = ARGV[2]
local e = redis.call('XRANGE', K.dlq, dl, dl)
if #e == 0 then return 'missing' end
local id, job = field(e[1][2], 'id'), field(e[1][2], 'job')
if not id or id == '' or not job or job == '' then return 'unreplayable' end
local rec = K.job(id)
local r = redis.call('HMGET', rec, 'state', 'batch', 'priority')
local state = r[1]
if state and state ~= 'dead' and state ~= 'rejected' then return 'busy:' .. state end
local prio = tonumber(r[3] or '')
if not prio then
  local ok, spec = pcall(cjson.decode, job)
  local names = { high = 1, normal = 2, low = 3 }
  prio = (ok and type(spec) == 'table' and names[spec.priority]) or 2
end
local fresh = redis.call('XADD', K.streams[prio], '*', 'id', id)
redis.call('HDEL', rec, 'result', 'finished_at', 'cancel', 'last_error', 'worker', 'started_at')
redis.call('HSET', rec, 'state', 'queued', 'spec', job, 'priority', prio, 'entry', fresh,
  'attempts', 0, 'enqueued_at', now_ms())
redis.call('HSETNX', rec, 'token', 0)
redis.call('PERSIST', rec)
redis.call('DEL', K.logs(id))
if state and r[2] and r[2] ~= '' then
  local bk = K.batch(r[2])
  redis.call('HINCRBY', bk, 'remaining', 1)
  redis.call('HINCRBY', bk, 's:' .. state, -1)
  redis.call('PERSIST', bk)
end
redis.call('XDEL', K.dlq, dl)
return 'queued'
