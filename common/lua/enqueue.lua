-- Enqueue one or more jobs. Idempotent: an id whose record exists is reported, not queued again,
-- and so is an id its batch already counts (a member whose record expired after it ended).
-- Each job goes to the lane of its priority and tenant, which joins the priority's turns.
-- ARGV: prefix, max_depth (0 = unlimited), n, then n times: id, priority index (1-3), spec JSON,
--       batch id ('' = none), result ttl seconds, tenant ('' = default), the tenant's most
--       queued jobs (0 = no cap).
-- Returns one string per job: 'new:<entry id>', 'exists:<state>', 'exists:expired' (a member
-- of its batch whose record has expired: nothing added), 'full', or
-- 'tenant_full:<queued>:<cap>' (its tenant's queued cap: every new job of that tenant in this
-- call is refused, so a batch is never half enqueued).
local max_depth = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local W = 7
local depth = 0
if max_depth > 0 then
  for i = 1, 3 do depth = depth + redis.call('XLEN', K.streams[i]) end
  for _, t in ipairs(redis.call('SMEMBERS', K.tenants)) do
    for i = 1, 3 do depth = depth + redis.call('XLEN', K.lane(i, t)) end
  end
end
local now = now_ms()
local out = {}

-- Jobs of a tenant waiting to run: its lanes' entries less those pending (running).
local function queued_of(tenant)
  local q = 0
  for i = 1, 3 do
    local lane = K.lane(i, tenant)
    q = q + redis.call('XLEN', lane)
    local ok, p = pcall(redis.call, 'XPENDING', lane, K.group)
    if ok then q = q - (tonumber(p[1]) or 0) end
  end
  return math.max(q, 0)
end

-- Tenants with a queued cap that this call's new jobs would pass: tenant -> answer.
local refused = {}
do
  local adding, caps = {}, {}
  for j = 0, n - 1 do
    local b = 4 + j * W
    local cap = tonumber(ARGV[b + 6]) or 0
    if cap > 0 and redis.call('HEXISTS', K.job(ARGV[b]), 'state') == 0 then
      local t = ARGV[b + 5]
      adding[t] = (adding[t] or 0) + 1
      caps[t] = cap
    end
  end
  for t, more in pairs(adding) do
    local q = queued_of(t)
    if q + more > caps[t] then refused[t] = 'tenant_full:' .. q .. ':' .. caps[t] end
  end
end

-- Whether `id` is listed in `batch`. Batches made before member lists were sorted sets keep a
-- list: it is turned into the sorted set (positions kept) the first time it is asked.
local function listed(batch, id)
  local members = K.batch_jobs(batch)
  local ok, score = pcall(redis.call, 'ZSCORE', members, id)
  if ok then return score end
  local ids = redis.call('LRANGE', members, 0, -1)
  local ttl = redis.call('PTTL', members)
  redis.call('DEL', members)
  for i, m in ipairs(ids) do redis.call('ZADD', members, i, m) end
  if ttl > 0 then redis.call('PEXPIRE', members, ttl) end
  return redis.call('ZSCORE', members, id)
end
for j = 0, n - 1 do
  local b = 4 + j * W
  local id, prio, spec, batch, ttl = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local tenant = ARGV[b + 5]
  local rec = K.job(id)
  local state = redis.call('HGET', rec, 'state')
  if state then
    out[#out + 1] = 'exists:' .. state
  elseif batch ~= '' and listed(batch, id) then
    out[#out + 1] = 'exists:expired'
  elseif refused[tenant] then
    out[#out + 1] = refused[tenant]
  elseif max_depth > 0 and depth >= max_depth then
    out[#out + 1] = 'full'
  else
    local entry = push(prio, tenant, id)
    local fields = { 'state', 'queued', 'spec', spec, 'priority', prio, 'entry', entry,
      'attempts', 0, 'token', 0, 'enqueued_at', now, 'ttl', ttl, 'batch', batch }
    if tenant ~= '' then
      fields[#fields + 1] = 'tenant'
      fields[#fields + 1] = tenant
    end
    local callback = callback_of(spec)
    if callback then
      fields[#fields + 1] = 'callback'
      fields[#fields + 1] = callback
    end
    redis.call('HSET', rec, unpack(fields))
    -- A new life starts with a new log (an earlier life's may outlive its record by a moment).
    redis.call('DEL', K.logs(id))
    if batch ~= '' then
      local bk = K.batch(batch)
      local position = redis.call('HINCRBY', bk, 'total', 1)
      redis.call('HINCRBY', bk, 'remaining', 1)
      if redis.call('HSETNX', bk, 'created_at', now) == 1 then
        -- A new batch: whose it is (readers acting for a tenant see only theirs), and listed
        -- among the newest, the list trimmed by count and age.
        redis.call('HSET', bk, 'tenant', member_of(tenant))
        redis.call('ZADD', K.batches, now, batch)
        redis.call('ZREMRANGEBYRANK', K.batches, 0, -K.recent_batches - 1)
        redis.call('ZREMRANGEBYSCORE', K.batches, '-inf', now - K.recent_batches_ttl_s * 1000)
        redis.call('EXPIRE', K.batches, K.recent_batches_ttl_s)
      end
      redis.call('HDEL', bk, 'finished_at')
      redis.call('PERSIST', bk)
      local members = K.batch_jobs(batch)
      redis.call('ZADD', members, position, id)
      redis.call('PERSIST', members)
    end
    depth = depth + 1
    out[#out + 1] = 'new:' .. entry
  end
end
return out
