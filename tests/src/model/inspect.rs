//! One script call that reads every key of a queue with its type, TTL and contents, so the model
//! can check the whole keyspace after every step at the cost of one round trip.

use std::collections::BTreeMap;

use redis::Value;

/// Every key under the prefix: `{ key, type, pttl, detail }`. `detail` is: for a job record its
/// `state` and `result`; for other hashes their fields and values; the members of a list or
/// sorted set; for a stream its length and its pending count in group `workers` (`nogroup`
/// when it has none), then for a log stream the `s` field of every entry in order.
const SCRIPT: &str = r"
local prefix = ARGV[1]
local out = {}
for _, k in ipairs(redis.call('KEYS', prefix .. '*')) do
  local name = string.sub(k, #prefix + 1)
  local t = redis.call('TYPE', k)['ok']
  local detail = {}
  if t == 'hash' then
    if string.sub(name, 1, 4) == 'job:' then
      local r = redis.call('HMGET', k, 'state', 'result')
      detail = { 'state', r[1] or '', 'result', r[2] or '' }
    else
      detail = redis.call('HGETALL', k)
    end
  elseif t == 'list' then
    detail = redis.call('LRANGE', k, 0, -1)
  elseif t == 'zset' then
    detail = redis.call('ZRANGE', k, 0, -1)
  elseif t == 'stream' then
    local ok, pending = pcall(redis.call, 'XPENDING', k, 'workers')
    detail[1] = tostring(redis.call('XLEN', k))
    detail[2] = ok and tostring(pending[1]) or 'nogroup'
    if string.sub(name, 1, 5) == 'logs:' then
      for _, e in ipairs(redis.call('XRANGE', k, '-', '+')) do
        local f = e[2]
        for i = 1, #f, 2 do
          if f[i] == 's' then detail[#detail + 1] = f[i + 1] end
        end
      end
    end
  end
  out[#out + 1] = { name, t, redis.call('PTTL', k), detail }
end
return out
";

/// One key as the inspection saw it.
#[derive(Clone, Debug)]
pub struct KeyView {
    /// The key without the queue's prefix, e.g. `job:j1`.
    pub name: String,
    pub kind: String,
    /// Milliseconds left, or -1 for a key without a TTL.
    pub pttl: i64,
    pub detail: Vec<String>,
}

impl KeyView {
    /// A hash's fields.
    pub fn fields(&self) -> BTreeMap<&str, &str> {
        self.detail
            .chunks_exact(2)
            .map(|p| (p[0].as_str(), p[1].as_str()))
            .collect()
    }

    pub fn persistent(&self) -> bool {
        self.pttl == -1
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        _ => String::new(),
    }
}

/// Every key of the queue with prefix `prefix`, by name without the prefix.
pub async fn inspect(
    conn: &mut quayside_common::connection::Connection,
    prefix: &str,
) -> redis::RedisResult<BTreeMap<String, KeyView>> {
    let reply: Value = redis::Script::new(SCRIPT)
        .arg(prefix)
        .invoke_async(conn)
        .await?;
    let mut out = BTreeMap::new();
    if let Value::Array(keys) = reply {
        for k in keys {
            let Value::Array(parts) = k else { continue };
            let [name, kind, pttl, detail] = parts.as_slice() else {
                continue;
            };
            let name = text(name);
            let detail = match detail {
                Value::Array(d) => d.iter().map(text).collect(),
                _ => Vec::new(),
            };
            let view = KeyView {
                name,
                kind: text(kind),
                pttl: text(pttl).parse().unwrap_or(-2),
                detail,
            };
            out.insert(view.name.clone(), view);
        }
    }
    Ok(out)
}
