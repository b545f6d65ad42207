//! The Redis key schema. Nothing else spells a key: Rust callers use [`Keys`], Lua scripts use the
//! `K.*` helpers that [`Keys::lua_prelude`] generates from the same constants.
//!
//! Every key of queue `q` starts with `qs:{q}:`, so all of them hash to one Redis Cluster slot and
//! every script may touch any of them.

use crate::job::{JobId, Priority, SpecError};

/// Consumer group all workers of a queue share.
pub const GROUP: &str = "workers";

const STREAM: &str = "stream:";
const JOB: &str = "job:";
const LOGS: &str = "logs:";
const BATCH: &str = "batch:";
const BATCH_JOBS: &str = "batch-jobs:";
const BATCHES: &str = "batches";
const DONE: &str = "done:";
const BATCH_EVENTS: &str = "batch-events:";
const DELAYED: &str = "delayed";
const DLQ: &str = "dlq";
const RUNNING: &str = "running";
const WORKERS: &str = "workers";
const WORKERS_EXPIRY: &str = "workers:expiry";
const CANCEL: &str = "cancel";
const ADOPTED: &str = "adopted";
const FLEET: &str = "fleet";
const PAUSED: &str = "paused";
const LANE: &str = ":t:";
const TURNS: &str = "turns";
const TENANTS: &str = "tenants";
const DOORBELL: &str = "doorbell";
const WEBHOOKS: &str = "webhooks";
const WEBHOOKS_DEAD: &str = "webhooks:dead";

/// The field of [`Keys::paused`] that pauses the whole queue; a tenant's pause is
/// [`paused_tenant_field`].
pub const PAUSED_QUEUE: &str = "*";

/// Batches [`Keys::batches`] keeps listed, newest first.
pub const RECENT_BATCHES: u64 = 1_000;

/// How long [`Keys::batches`] lives after the last batch was made, and the age past which a
/// batch leaves it.
pub const RECENT_BATCHES_TTL_S: u64 = 7 * 24 * 3600;

/// The tenant part of a [`Keys::turns`] member that stands for the default tenant's lane (the
/// priority's stream itself).
pub const DEFAULT_MEMBER: &str = "default";

/// The field of [`Keys::paused`] that pauses one tenant: `t:<tenant>`.
pub fn paused_tenant_field(tenant: &str) -> String {
    format!("t:{tenant}")
}

/// Key builder for one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    queue: String,
    prefix: String,
}

impl Keys {
    /// # Errors
    /// The queue name is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    pub fn new(queue: &str) -> Result<Self, SpecError> {
        JobId::parse(queue).map_err(|_| {
            SpecError::field(
                "queue",
                "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
            )
        })?;
        Ok(Self {
            queue: queue.to_owned(),
            prefix: format!("qs:{{{queue}}}:"),
        })
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Stream of entries waiting at `priority`. Entries: `id` (job id) and, for raw producers
    /// that write no record, `job` (the spec JSON).
    pub fn stream(&self, priority: Priority) -> String {
        format!("{}{STREAM}{}", self.prefix, priority.as_label())
    }

    /// The three streams, highest priority first.
    pub fn streams(&self) -> [String; 3] {
        Priority::ALL.map(|p| self.stream(p))
    }

    /// The lane of `tenant` at `priority`: the stream its jobs wait in. The default tenant's
    /// (`None`) is [`Keys::stream`] itself, so raw producers and old queues need no change.
    pub fn lane(&self, priority: Priority, tenant: Option<&str>) -> String {
        match tenant {
            None => self.stream(priority),
            Some(t) => format!("{}{LANE}{t}", self.stream(priority)),
        }
    }

    /// Sorted set: the lanes with queued work, member `<priority index>:<tenant>` (tenant
    /// [`DEFAULT_MEMBER`] for the default tenant), scored by the lane's stride-scheduling pass:
    /// within a priority a claim serves the lowest. One key for the three priorities, so a
    /// claim reads the rotation with one command.
    pub fn turns(&self) -> String {
        format!("{}{TURNS}", self.prefix)
    }

    /// Set: every tenant that has had a lane (what reclaim, heartbeat and stats walk).
    pub fn tenants(&self) -> String {
        format!("{}{TENANTS}", self.prefix)
    }

    /// Stream, capped at a few entries: rung when a tenant lane gets work after being empty (or
    /// a tenant is resumed), so idle workers blocked on the default streams wake for it.
    pub fn doorbell(&self) -> String {
        format!("{}{DOORBELL}", self.prefix)
    }

    /// What an idle worker blocks on (`XREAD`): the three default streams and the doorbell.
    pub fn wake_streams(&self) -> [String; 4] {
        let [a, b, c] = self.streams();
        [a, b, c, self.doorbell()]
    }

    /// Hash: the job's record (state, spec, attempts, fencing token, result).
    pub fn job(&self, id: &JobId) -> String {
        format!("{}{JOB}{id}", self.prefix)
    }

    /// `SCAN MATCH` pattern of every job record of the queue.
    pub fn job_pattern(&self) -> String {
        format!("{}{JOB}*", self.prefix)
    }

    /// The job id of a record key (one [`Keys::job_pattern`] matched).
    pub fn job_id_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?.strip_prefix(JOB)
    }

    /// Stream: the job's live log, capped, ended by an entry with `s = end`.
    pub fn logs(&self, id: &JobId) -> String {
        format!("{}{LOGS}{id}", self.prefix)
    }

    /// Hash: counters of one batch.
    pub fn batch(&self, batch: &str) -> String {
        format!("{}{BATCH}{batch}", self.prefix)
    }

    /// Sorted set: ids of the batch's jobs scored by their position (1, 2, ...), i.e. in enqueue
    /// order (for its summary, status and cancel, and to know a member whose record expired).
    pub fn batch_jobs(&self, batch: &str) -> String {
        format!("{}{BATCH_JOBS}{batch}", self.prefix)
    }

    /// Sorted set: the newest batches (at most [`RECENT_BATCHES`]), scored by creation time (ms),
    /// so a dashboard or `quayside batches` can list them without scanning. Expires
    /// [`RECENT_BATCHES_TTL_S`] after the last batch was made; a listed batch whose counters
    /// expired is skipped by readers and trimmed by later batches.
    pub fn batches(&self) -> String {
        format!("{}{BATCHES}", self.prefix)
    }

    /// Sorted set: job ids waiting for a retry, scored by due time (ms).
    pub fn delayed(&self) -> String {
        format!("{}{DELAYED}", self.prefix)
    }

    /// Stream: dead letters (`id`, `reason`, `error`, `attempts`, `job`), capped by length.
    pub fn dlq(&self) -> String {
        format!("{}{DLQ}", self.prefix)
    }

    /// Hash: `<priority index>:<entry id>` (default lane) or `<priority index>:<tenant>:<entry
    /// id>` (a tenant's lane: entry ids are per stream) to job id for every claimed entry, so an
    /// entry deleted while pending can still be traced to its job.
    pub fn running(&self) -> String {
        format!("{}{RUNNING}", self.prefix)
    }

    /// Hash: worker id to its heartbeat document.
    pub fn workers(&self) -> String {
        format!("{}{WORKERS}", self.prefix)
    }

    /// Sorted set: worker id scored by the time its heartbeat expires (ms).
    pub fn workers_expiry(&self) -> String {
        format!("{}{WORKERS_EXPIRY}", self.prefix)
    }

    /// Hash: stream index to the last entry `adopt.lua` examined, so raw `XADD` entries get a
    /// record once, in order.
    pub fn adopted(&self) -> String {
        format!("{}{ADOPTED}", self.prefix)
    }

    /// Pub/sub channel: the job's terminal status is published here once.
    pub fn done_channel(&self, id: &JobId) -> String {
        format!("{}{DONE}{id}", self.prefix)
    }

    /// Pub/sub channel: `<job id> <status>` for every job of the batch that ends.
    pub fn batch_channel(&self, batch: &str) -> String {
        format!("{}{BATCH_EVENTS}{batch}", self.prefix)
    }

    /// String: the fleet id, random, set once (`SET NX`) by the first worker of the queue on
    /// this Redis; workers label their sandboxes with it so sweeps tell fleets apart. A fixed
    /// key of the queue: it never expires.
    pub fn fleet(&self) -> String {
        format!("{}{FLEET}", self.prefix)
    }

    /// Hash: pause state set by an operator. Field [`PAUSED_QUEUE`] present = no worker claims
    /// from the queue; its value is the unix time (ms) of the pause. Operator state, not a job's:
    /// it never expires, so a pause outlives worker and Redis restarts.
    pub fn paused(&self) -> String {
        format!("{}{PAUSED}", self.prefix)
    }

    /// Sorted set: the completion-webhook outbox, ids of ended jobs whose webhook is due, scored
    /// by when (unix ms) the next attempt may be made (a claimed one: when its sender's lease
    /// ends). Members leave on delivery or dead letter.
    pub fn webhooks(&self) -> String {
        format!("{}{WEBHOOKS}", self.prefix)
    }

    /// Stream: webhooks given up on (`id`, `url`, `tenant`, `attempts`, `reason`, `error`,
    /// `at`), capped at `queue.dlq_max_len` entries like the dead-letter queue.
    pub fn webhooks_dead(&self) -> String {
        format!("{}{WEBHOOKS_DEAD}", self.prefix)
    }

    /// Pub/sub channel: ids of running jobs whose cancellation was requested.
    pub fn cancel_channel(&self) -> String {
        format!("{}{CANCEL}", self.prefix)
    }

    /// The queue's fixed keys: the only keys that may live without a TTL once every job has
    /// ended. Everything else (records, logs, batches) belongs to a job or a batch and expires
    /// after it ends.
    pub fn fixed(&self) -> Vec<String> {
        let mut keys = self.streams().to_vec();
        keys.extend([
            self.delayed(),
            self.dlq(),
            self.running(),
            self.workers(),
            self.workers_expiry(),
            self.adopted(),
            self.fleet(),
            self.paused(),
            self.tenants(),
            self.doorbell(),
            self.webhooks(),
            self.webhooks_dead(),
        ]);
        keys.push(self.turns());
        keys
    }

    /// Lua helpers the scripts share, generated from the constants above so the schema is
    /// written once. Every script gets the prefix as `ARGV[1]`.
    pub fn lua_prelude() -> String {
        format!(
            r#"local P = ARGV[1]
local K = {{}}
K.streams = {{ P .. '{STREAM}high', P .. '{STREAM}normal', P .. '{STREAM}low' }}
K.turns = P .. '{TURNS}'
K.tenants = P .. '{TENANTS}'
K.doorbell = P .. '{DOORBELL}'
K.default_member = '{DEFAULT_MEMBER}'
-- The lane of (priority index, tenant); the default tenant ('' or nil) has the priority's stream.
function K.lane(idx, tenant)
  if not tenant or tenant == '' then return K.streams[idx] end
  return K.streams[idx] .. '{LANE}' .. tenant
end
function K.job(id) return P .. '{JOB}' .. id end
function K.logs(id) return P .. '{LOGS}' .. id end
function K.batch(b) return P .. '{BATCH}' .. b end
function K.batch_jobs(b) return P .. '{BATCH_JOBS}' .. b end
K.batches = P .. '{BATCHES}'
K.recent_batches = {RECENT_BATCHES}
K.recent_batches_ttl_s = {RECENT_BATCHES_TTL_S}
function K.done(id) return P .. '{DONE}' .. id end
function K.batch_events(b) return P .. '{BATCH_EVENTS}' .. b end
K.delayed = P .. '{DELAYED}'
K.dlq = P .. '{DLQ}'
K.running = P .. '{RUNNING}'
K.workers = P .. '{WORKERS}'
K.workers_expiry = P .. '{WORKERS_EXPIRY}'
K.cancel = P .. '{CANCEL}'
K.adopted = P .. '{ADOPTED}'
K.paused = P .. '{PAUSED}'
K.paused_queue = '{PAUSED_QUEUE}'
K.webhooks = P .. '{WEBHOOKS}'
K.webhooks_dead = P .. '{WEBHOOKS_DEAD}'
K.group = '{GROUP}'
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_the_hash_tag() {
        let k = Keys::new("builds").expect("valid");
        let id = JobId::parse("j1").expect("valid");
        let all = [
            k.stream(Priority::Low),
            k.job(&id),
            k.logs(&id),
            k.batch("b"),
            k.batch_jobs("b"),
            k.batches(),
            k.delayed(),
            k.dlq(),
            k.running(),
            k.workers(),
            k.workers_expiry(),
            k.done_channel(&id),
            k.batch_channel("b"),
            k.cancel_channel(),
            k.adopted(),
            k.fleet(),
            k.paused(),
            k.webhooks(),
            k.webhooks_dead(),
            k.lane(Priority::Low, Some("acme")),
            k.turns(),
            k.tenants(),
            k.doorbell(),
        ];
        for key in all {
            assert!(key.starts_with("qs:{builds}:"), "{key}");
        }
        assert_eq!(k.job(&id), "qs:{builds}:job:j1");
        assert_eq!(k.job_id_of(&k.job(&id)), Some("j1"));
        assert_eq!(k.job_pattern(), "qs:{builds}:job:*");
        assert_eq!(k.stream(Priority::High), "qs:{builds}:stream:high");
        assert_eq!(k.lane(Priority::High, None), k.stream(Priority::High));
        assert_eq!(
            k.lane(Priority::Normal, Some("acme")),
            "qs:{builds}:stream:normal:t:acme"
        );
    }

    #[test]
    fn prelude_spells_the_same_keys() {
        let lua = Keys::lua_prelude();
        for needle in [
            "'stream:high'",
            "'job:'",
            "'logs:'",
            "'delayed'",
            "'dlq'",
            "'workers'",
            "'paused'",
            "'turns'",
            "':t:'",
            "'doorbell'",
        ] {
            assert!(lua.contains(needle), "{needle} missing from prelude");
        }
    }

    #[test]
    fn queue_names_cannot_break_the_tag() {
        assert!(Keys::new("a}b").is_err());
        assert!(Keys::new("").is_err());
    }
}
