-- Queue a dead-lettered job again with a fresh attempt budget, and remove the dead letter.
-- A job whose record and batch are still there counts in its batch again (which is open again
-- until it ends); one whose record or batch has expired runs on its own: the batch keeps the
-- ending it counted.
-- ARGV: prefix, dead-letter entry id.
-- Returns 'queued', 'missing' (no such dead letter), 'unreplayable' (no valid job id, or no
-- spec) or 'busy:<state>' (the job was queued again some other way; the dead letter is kept).
local dl = ARGV[2]
local e = redis.call('XRANGE', K.dlq, dl, dl)
if #e == 0 then return 'missing' end
local id, job = field(e[1][2], 'id'), field(e[1][2], 'job')
if not valid_id(id) or not job or job == '' then return 'unreplayable' end
local rec = K.job(id)
local r = redis.call('HMGET', rec, 'state', 'batch', 'priority', 'token', 'tenant')
local state, batch = r[1], r[2]
if state and state ~= 'dead' and state ~= 'rejected' then return 'busy:' .. state end
local prio, tenant = tonumber(r[3] or ''), r[5]
if not prio then
  -- The record has expired: the dead letter's spec says where the job goes.
  local ok, spec = pcall(cjson.decode, job)
  local names = { high = 1, normal = 2, low = 3 }
  prio = (ok and type(spec) == 'table' and names[spec.priority]) or 2
  tenant = ok and type(spec) == 'table' and type(spec.tenant) == 'string' and spec.tenant or ''
end
if tenant and (#tenant > 64 or not string.find(tenant, '^[A-Za-z0-9._:-]*$')) then tenant = '' end
local fresh = push(prio, tenant, id)
redis.call('HDEL', rec, 'result', 'finished_at', 'cancel', 'last_error', 'worker', 'started_at')
redis.call('HSET', rec, 'state', 'queued', 'spec', job, 'priority', prio, 'entry', fresh,
  'attempts', 0, 'enqueued_at', now_ms(), 'token', next_token(r[4]))
if tenant and tenant ~= '' then redis.call('HSET', rec, 'tenant', tenant) end
redis.call('PERSIST', rec)
redis.call('DEL', K.logs(id))
if state and batch_count(batch, 'remaining', 1) then
  local bk = K.batch(batch)
  redis.call('HINCRBY', bk, 's:' .. state, -1)
  redis.call('HDEL', bk, 'finished_at')
  redis.call('PERSIST', bk)
  redis.call('PERSIST', K.batch_jobs(batch))
else
  redis.call('HSET', rec, 'batch', '')
end
redis.call('XDEL', K.dlq, dl)
return 'queued'
