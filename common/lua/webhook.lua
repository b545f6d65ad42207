-- The completion-webhook outbox (the `webhooks` sorted set, filled by `finalize`): senders claim
-- due deliveries under a lease, then report how each went. The delivery state lives in the
-- job's record (`hook_attempts`, `hook_first_at`, `hook_lease`, `hook_error`, `hook_state`),
-- so it expires with the result it delivers.
-- ARGV: prefix, op, then
--   op 'claim': limit, lease ms, retry-for ms, dead cap.
--     Returns a flat list of 6 per claimed delivery: id, url, tenant, attempt, lease, result.
--     A due member whose record expired (or is not terminal: a new life of the id) leaves the
--     outbox; one past its retry time is dead-lettered ('retry_expired').
--   op 'done': id, lease, outcome ('delivered' | 'retry' | 'dead'), retry delay ms,
--     retry-for ms, dead cap, reason, error.
--     Returns 'delivered', 'retried', 'dead', or 'fenced' (the lease moved on: another sender
--     has the delivery now; nothing written).
local op = ARGV[2]
local now = now_ms()

local function bury(id, r, reason, err, cap)
  redis.call('XADD', K.webhooks_dead, 'MAXLEN', '~', cap, '*', 'id', id, 'url', r.url or '',
    'tenant', r.tenant or '', 'attempts', r.attempts or '0', 'reason', reason, 'error', err,
    'at', now)
  redis.call('ZREM', K.webhooks, id)
  if r.url then
    redis.call('HSET', K.job(id), 'hook_state', 'dead', 'hook_error', err)
    redis.call('HDEL', K.job(id), 'hook_lease')
  end
end

local function read(id)
  local f = redis.call('HMGET', K.job(id), 'state', 'result', 'callback', 'tenant',
    'hook_attempts', 'hook_first_at', 'hook_lease', 'hook_error')
  return { state = f[1], result = f[2], url = f[3], tenant = f[4], attempts = f[5],
    first_at = tonumber(f[6] or ''), lease = f[7], error = f[8] }
end

if op == 'claim' then
  local limit, lease_ms, retry_for = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local cap = ARGV[6]
  local out = {}
  local due = redis.call('ZRANGEBYSCORE', K.webhooks, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local r = read(id)
    if not r.url or not r.result or not r.first_at then
      -- The record expired, or the id lives again and has not ended: nothing to deliver here.
      redis.call('ZREM', K.webhooks, id)
    elseif now - r.first_at > retry_for then
      bury(id, r, 'retry_expired', r.error or 'not delivered in time', cap)
    else
      local attempt = (tonumber(r.attempts) or 0) + 1
      local lease = next_token(r.lease)
      redis.call('HSET', K.job(id), 'hook_attempts', attempt, 'hook_lease', lease,
        'hook_state', 'sending')
      redis.call('ZADD', K.webhooks, now + lease_ms, id)
      for _, v in ipairs({ id, r.url, r.tenant or '', tostring(attempt), lease, r.result }) do
        out[#out + 1] = v
      end
    end
  end
  return out
end

if op == 'done' then
  local id, lease, outcome = ARGV[3], ARGV[4], ARGV[5]
  local delay, retry_for, cap = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
  local reason, err = ARGV[9], ARGV[10]
  local r = read(id)
  if not r.lease or r.lease ~= lease then return 'fenced' end
  if outcome == 'delivered' then
    redis.call('ZREM', K.webhooks, id)
    redis.call('HSET', K.job(id), 'hook_state', 'delivered')
    redis.call('HDEL', K.job(id), 'hook_lease', 'hook_error')
    return 'delivered'
  end
  if outcome == 'retry' and r.first_at and now + delay - r.first_at <= retry_for then
    redis.call('ZADD', K.webhooks, now + delay, id)
    redis.call('HSET', K.job(id), 'hook_state', 'retrying', 'hook_error', err)
    redis.call('HDEL', K.job(id), 'hook_lease')
    return 'retried'
  end
  if outcome == 'retry' then reason = 'retry_expired' end
  bury(id, r, reason, err, cap)
  return 'dead'
end

return redis.error_reply('unknown op ' .. tostring(op))
