//! The queue's size, read with plain commands in one pipelined round trip: what every worker
//! samples into the queue gauges and what `quayside stats` (and the gateway's `/v1/stats`)
//! shows.

use redis::Value;

use super::reply::Reader;
use super::CallError;
use crate::job::Priority;
use crate::keys::{Keys, GROUP, PAUSED_QUEUE};

/// The queue's size at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueSample {
    /// Stream entries (waiting and pending), indexed by [`Priority::index`].
    pub depth: [u64; 3],
    /// Entries delivered to a worker and not yet acknowledged, by priority.
    pub pending: [u64; 3],
    /// Jobs in the delayed set.
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Workers whose heartbeat has not expired.
    pub workers: u64,
    /// When an operator paused the queue (unix ms), or `None` while it is not paused.
    pub paused_since_ms: Option<u64>,
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
    pub fn pipeline(&self, keys: &Keys, now_ms: u64) -> redis::Pipeline {
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
        pipe.cmd("HGET").arg(keys.paused()).arg(PAUSED_QUEUE);
        if self.worker_docs {
            pipe.cmd("HVALS").arg(keys.workers());
        }
        pipe.ignore_errors();
        pipe
    }

    /// Reads the replies of [`Sample::pipeline`].
    ///
    /// # Errors
    /// A command failed (other than for a missing group), or a reply has the wrong shape.
    pub fn parse(&self, replies: Vec<Value>) -> Result<QueueSample, CallError> {
        let expected = 10 + usize::from(self.worker_docs);
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
        s.paused_since_ms = match &replies[9] {
            Value::Nil => None,
            // A hand-written value that is not a time still means paused.
            v => Some(R.number(v).unwrap_or(0)),
        };
        if let Some(docs) = replies.get(10) {
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
        let replies: Vec<Value> = self
            .pipeline(keys, crate::now_ms())
            .query_async(conn)
            .await
            .map_err(|source| CallError::Redis {
                op: "stats",
                source,
            })?;
        self.parse(replies)
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
            Value::Nil,
        ];
        r.extend(docs);
        r
    }

    #[test]
    fn the_pipeline_reads_streams_then_sets() {
        let pipe = Sample { worker_docs: true }.pipeline(&keys(), 1000);
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
                "ZCOUNT", "HGET", "HVALS"
            ]
        );
        assert_eq!(
            Sample::default().pipeline(&keys(), 1000).cmd_iter().count(),
            10
        );
    }

    #[test]
    fn a_missing_group_reads_as_nothing_pending() {
        let s = Sample::default().parse(replies(None)).expect("valid");
        assert_eq!(s.depth, [5, 0, 1]);
        assert_eq!(s.pending, [2, 0, 0]);
        assert_eq!((s.delayed, s.dead_letters, s.workers), (3, 4, 2));
        assert_eq!(s.lag(Priority::High), 3);
        assert!(s.worker_docs.is_empty());
        assert_eq!(s.paused_since_ms, None);
    }

    #[test]
    fn a_pause_reads_with_its_time() {
        let mut r = replies(None);
        r[9] = bulk("1700000000000");
        let s = Sample::default().parse(r).expect("valid");
        assert_eq!(s.paused_since_ms, Some(1_700_000_000_000));
        let mut r = replies(None);
        r[9] = bulk("by hand");
        let s = Sample::default().parse(r).expect("valid");
        assert_eq!(
            s.paused_since_ms,
            Some(0),
            "any value pauses, as in claim.lua"
        );
    }

    #[test]
    fn worker_documents_are_json_or_left_out() {
        let docs = Value::Array(vec![bulk(r#"{"id":"w1"}"#), bulk("not json")]);
        let s = Sample { worker_docs: true }
            .parse(replies(Some(docs)))
            .expect("valid");
        assert_eq!(s.worker_docs, [serde_json::json!({"id": "w1"})]);
    }

    #[test]
    fn other_errors_and_wrong_shapes_fail_the_sample() {
        let mut r = replies(None);
        r[6] = server_error("NOAUTH Authentication required.");
        let e = Sample::default().parse(r).expect_err("noauth");
        assert!(matches!(e, CallError::Redis { .. }), "{e}");
        let mut r = replies(None);
        r[0] = bulk("many");
        assert!(Sample::default().parse(r).is_err());
        assert!(Sample { worker_docs: true }.parse(replies(None)).is_err());
    }
}
