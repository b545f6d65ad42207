//! The queue's size, read with plain commands in two pipelined round trips (the tenants, then
//! every lane): what every worker samples into the queue gauges and what `quayside stats` (and
//! the gateway's `/v1/stats`) shows.

use redis::Value;

use super::reply::Reader;
use super::CallError;
use crate::config::DEFAULT_LABEL;
use crate::job::Priority;
use crate::keys::{paused_tenant_field, Keys, GROUP, PAUSED_QUEUE};

/// One tenant's lanes at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantSample {
    /// The tenant id; [`DEFAULT_LABEL`] for the default tenant.
    pub tenant: String,
    /// Entries of its lanes (waiting and pending), indexed by [`Priority::index`].
    pub depth: [u64; 3],
    /// Its entries delivered and not yet acknowledged (its running jobs), by priority.
    pub pending: [u64; 3],
    /// When an operator paused the tenant (unix ms), or `None`.
    pub paused_since_ms: Option<u64>,
}

impl TenantSample {
    /// Jobs waiting to run, all priorities.
    pub fn queued(&self) -> u64 {
        (0..3)
            .map(|i| self.depth[i].saturating_sub(self.pending[i]))
            .sum()
    }

    /// Jobs running (claimed, not yet finished), all priorities.
    pub fn running(&self) -> u64 {
        self.pending.iter().sum()
    }
}

/// The queue's size at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueSample {
    /// Stream entries (waiting and pending) of every lane, indexed by [`Priority::index`].
    pub depth: [u64; 3],
    /// Entries delivered to a worker and not yet acknowledged, by priority.
    pub pending: [u64; 3],
    /// The same by tenant: the default tenant first, then every tenant that has had a lane.
    pub tenants: Vec<TenantSample>,
    /// Jobs in the delayed set.
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Workers whose heartbeat has not expired.
    pub workers: u64,
    /// When an operator paused the queue (unix ms), or `None` while it is not paused.
    pub paused_since_ms: Option<u64>,
    /// Completion webhooks waiting to be delivered (due, being sent, or waiting to retry).
    pub webhooks_pending: u64,
    /// Entries of the webhook dead-letter stream: webhooks given up on.
    pub webhooks_dead: u64,
    /// Each worker's last heartbeat document, expired ones not yet pruned included (only when
    /// asked for: [`Sample::worker_docs`]); documents that are not JSON are left out.
    pub worker_docs: Vec<serde_json::Value>,
}

impl QueueSample {
    /// Entries not yet delivered to any worker: the consumer group's lag. Exact, because
    /// entries are deleted as their jobs end.
    pub fn lag(&self, p: Priority) -> u64 {
        self.depth[p.index()].saturating_sub(self.pending[p.index()])
    }
}

/// What to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Also read every worker's registry document (a few hundred bytes each): for people, not
    /// for the gauges every worker samples every few seconds.
    pub worker_docs: bool,
}

const R: Reader = Reader("stats");

impl Sample {
    /// The commands, in the order [`Sample::parse`] reads their replies. Errors come back as
    /// values: a missing consumer group (before any worker made it) reads as nothing pending.
    pub fn pipeline(&self, keys: &Keys, tenants: &[String], now_ms: u64) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for p in Priority::ALL {
            pipe.cmd("XLEN").arg(keys.stream(p));
            pipe.cmd("XPENDING").arg(keys.stream(p)).arg(GROUP);
        }
        pipe.cmd("ZCARD").arg(keys.delayed());
        pipe.cmd("XLEN").arg(keys.dlq());
        // Live workers: expiry scores in the future (the hash may hold a few not yet pruned).
        pipe.cmd("ZCOUNT")
            .arg(keys.workers_expiry())
            .arg(now_ms)
            .arg("+inf");
        pipe.cmd("HGETALL").arg(keys.paused());
        if self.worker_docs {
            pipe.cmd("HVALS").arg(keys.workers());
        }
        for t in tenants {
            for p in Priority::ALL {
                let lane = keys.lane(p, Some(t));
                pipe.cmd("XLEN").arg(&lane);
                pipe.cmd("XPENDING").arg(&lane).arg(GROUP);
            }
        }
        pipe.cmd("ZCARD").arg(keys.webhooks());
        pipe.cmd("XLEN").arg(keys.webhooks_dead());
        pipe.ignore_errors();
        pipe
    }

    /// Reads the replies of [`Sample::pipeline`].
    ///
    /// # Errors
    /// A command failed (other than for a missing group), or a reply has the wrong shape.
    pub fn parse(&self, replies: Vec<Value>, tenants: &[String]) -> Result<QueueSample, CallError> {
        let base = 10 + usize::from(self.worker_docs);
        let expected = base + 6 * tenants.len() + 2;
        if replies.len() != expected {
            return Err(R
                .error(format!("{} replies for {expected} commands", replies.len()))
                .into());
        }
        for reply in &replies {
            if let Value::ServerError(e) = reply {
                if e.code() != "NOGROUP" {
                    return Err(CallError::Redis {
                        op: "stats",
                        source: e.clone().into(),
                    });
                }
            }
        }
        let count = |v: &Value| -> Result<u64, _> {
            match v {
                Value::ServerError(_) => Ok(0),
                // XPENDING's summary starts with the count.
                Value::Array(a) => a.first().map_or(Ok(0), |n| R.number(n)),
                other => R.number(other),
            }
        };
        let mut s = QueueSample::default();
        for i in 0..3 {
            s.depth[i] = count(&replies[2 * i])?;
            s.pending[i] = count(&replies[2 * i + 1])?;
        }
        s.delayed = count(&replies[6])?;
        s.dead_letters = count(&replies[7])?;
        s.workers = count(&replies[8])?;
        let paused = match &replies[9] {
            Value::Array(flat) => flat
                .chunks_exact(2)
                .filter_map(|kv| Some((R.text(&kv[0]).ok()?, kv[1].clone())))
                .collect(),
            Value::Map(m) => m
                .iter()
                .filter_map(|(k, v)| Some((R.text(k).ok()?, v.clone())))
                .collect(),
            _ => Vec::new(),
        };
        // A hand-written value that is not a time still means paused (as in claim.lua).
        let since = |field: &str| {
            paused
                .iter()
                .find(|(k, _)| k == field)
                .map(|(_, v)| R.number(v).unwrap_or(0))
        };
        s.paused_since_ms = since(PAUSED_QUEUE);
        s.webhooks_pending = count(&replies[expected - 2])?;
        s.webhooks_dead = count(&replies[expected - 1])?;
        let default = TenantSample {
            tenant: DEFAULT_LABEL.to_owned(),
            depth: s.depth,
            pending: s.pending,
            paused_since_ms: since(&paused_tenant_field(DEFAULT_LABEL)),
        };
        s.tenants.push(default);
        for (k, t) in tenants.iter().enumerate() {
            let at = base + 6 * k;
            let mut ts = TenantSample {
                tenant: t.clone(),
                paused_since_ms: since(&paused_tenant_field(t)),
                ..TenantSample::default()
            };
            for i in 0..3 {
                ts.depth[i] = count(&replies[at + 2 * i])?;
                ts.pending[i] = count(&replies[at + 2 * i + 1])?;
                s.depth[i] += ts.depth[i];
                s.pending[i] += ts.pending[i];
            }
            s.tenants.push(ts);
        }
        if let Some(docs) = replies.get(10).filter(|_| self.worker_docs) {
            s.worker_docs = R
                .array(docs)?
                .iter()
                .filter_map(|d| match d {
                    Value::BulkString(b) => serde_json::from_slice(b).ok(),
                    _ => None,
                })
                .collect();
        }
        Ok(s)
    }

    /// Reads the sample.
    ///
    /// # Errors
    /// As [`Sample::parse`], or Redis unreachable.
    pub async fn read<C>(&self, conn: &mut C, keys: &Keys) -> Result<QueueSample, CallError>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        let redis_error = |source| CallError::Redis {
            op: "stats",
            source,
        };
        let mut tenants: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys.tenants())
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        tenants.sort();
        let replies: Vec<Value> = self
            .pipeline(keys, &tenants, crate::now_ms())
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        self.parse(replies, &tenants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{bulk, keys};

    fn server_error(line: &str) -> Value {
        redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).expect("an error reply")
    }

    fn replies(docs: Option<Value>) -> Vec<Value> {
        let pending = |n| Value::Array(vec![Value::Int(n), Value::Nil, Value::Nil, Value::Nil]);
        let mut r = vec![
            Value::Int(5),
            pending(2),
            Value::Int(0),
            server_error("NOGROUP No such key 'qs:{q}:stream:normal' or consumer group"),
            Value::Int(1),
            pending(0),
            Value::Int(3),
            Value::Int(4),
            Value::Int(2),
            Value::Array(vec![]),
        ];
        r.extend(docs);
        r
    }

    /// The webhook outbox's replies, last: 6 pending, 1 dead.
    fn hooks(mut r: Vec<Value>) -> Vec<Value> {
        r.extend([Value::Int(6), Value::Int(1)]);
        r
    }

    #[test]
    fn the_pipeline_reads_streams_then_sets() {
        let pipe = Sample { worker_docs: true }.pipeline(&keys(), &["acme".into()], 1000);
        let names: Vec<String> = pipe
            .cmd_iter()
            .map(|c| match c.args_iter().next() {
                Some(redis::Arg::Simple(a)) => String::from_utf8_lossy(a).into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "XLEN", "XPENDING", "XLEN", "XPENDING", "XLEN", "XPENDING", "ZCARD", "XLEN",
                "ZCOUNT", "HGETALL", "HVALS", "XLEN", "XPENDING", "XLEN", "XPENDING", "XLEN",
                "XPENDING", "ZCARD", "XLEN"
            ]
        );
        assert_eq!(
            Sample::default()
                .pipeline(&keys(), &[], 1000)
                .cmd_iter()
                .count(),
            12
        );
    }

    #[test]
    fn a_missing_group_reads_as_nothing_pending() {
        let s = Sample::default()
            .parse(hooks(replies(None)), &[])
            .expect("valid");
        assert_eq!(s.depth, [5, 0, 1]);
        assert_eq!(s.pending, [2, 0, 0]);
        assert_eq!((s.delayed, s.dead_letters, s.workers), (3, 4, 2));
        assert_eq!(s.lag(Priority::High), 3);
        assert!(s.worker_docs.is_empty());
        assert_eq!(s.paused_since_ms, None);
        assert_eq!((s.webhooks_pending, s.webhooks_dead), (6, 1));
    }

    #[test]
    fn a_pause_reads_with_its_time() {
        let mut r = replies(None);
        r[9] = Value::Array(vec![bulk("*"), bulk("1700000000000")]);
        let s = Sample::default().parse(hooks(r), &[]).expect("valid");
        assert_eq!(s.paused_since_ms, Some(1_700_000_000_000));
        let mut r = replies(None);
        r[9] = Value::Array(vec![bulk("*"), bulk("by hand")]);
        let s = Sample::default().parse(hooks(r), &[]).expect("valid");
        assert_eq!(
            s.paused_since_ms,
            Some(0),
            "any value pauses, as in claim.lua"
        );
    }

    #[test]
    fn tenant_lanes_add_up_by_tenant_and_into_the_priorities() {
        let mut r = replies(None);
        r[9] = Value::Array(vec![bulk("t:acme"), bulk("42")]);
        let pending = |n| Value::Array(vec![Value::Int(n), Value::Nil, Value::Nil, Value::Nil]);
        r.extend([
            Value::Int(0),
            pending(0),
            Value::Int(10),
            pending(3),
            Value::Int(0),
            server_error("NOGROUP no group"),
        ]);
        let s = Sample::default()
            .parse(hooks(r), &["acme".into()])
            .expect("valid");
        assert_eq!(s.depth, [5, 10, 1], "lanes count in their priority");
        assert_eq!(s.pending, [2, 3, 0]);
        assert_eq!(s.paused_since_ms, None);
        let [default, acme] = &s.tenants[..] else {
            panic!("{:?}", s.tenants)
        };
        assert_eq!(
            (default.tenant.as_str(), default.queued(), default.running()),
            ("default", 4, 2)
        );
        assert_eq!(
            (acme.tenant.as_str(), acme.queued(), acme.running()),
            ("acme", 7, 3)
        );
        assert_eq!(acme.paused_since_ms, Some(42));
    }

    #[test]
    fn worker_documents_are_json_or_left_out() {
        let docs = Value::Array(vec![bulk(r#"{"id":"w1"}"#), bulk("not json")]);
        let s = Sample { worker_docs: true }
            .parse(hooks(replies(Some(docs))), &[])
            .expect("valid");
        assert_eq!(s.worker_docs, [serde_json::json!({"id": "w1"})]);
    }

    #[test]
    fn other_errors_and_wrong_shapes_fail_the_sample() {
        let mut r = replies(None);
        r[6] = server_error("NOAUTH Authentication required.");
        let e = Sample::default().parse(hooks(r), &[]).expect_err("noauth");
        assert!(matches!(e, CallError::Redis { .. }), "{e}");
        let mut r = replies(None);
        r[0] = bulk("many");
        assert!(Sample::default().parse(hooks(r), &[]).is_err());
        assert!(Sample { worker_docs: true }
            .parse(hooks(replies(None)), &[])
            .is_err());
    }
}
