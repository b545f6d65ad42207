//! Queue statistics, read with plain commands.

use quayside_common::keys::GROUP;
use quayside_common::{Keys, Priority};
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::Serialize;

use crate::Error;

#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub priorities: Vec<PriorityStats>,
    /// Jobs waiting in the delayed set for a retry.
    pub delayed: u64,
    pub dead_letters: u64,
    pub workers: Vec<WorkerInfo>,
}

impl QueueStats {
    /// Entries not yet delivered, all priorities.
    pub fn waiting(&self) -> u64 {
        self.priorities.iter().map(|p| p.waiting).sum()
    }

    /// Entries delivered and not yet finished, all priorities.
    pub fn pending(&self) -> u64 {
        self.priorities.iter().map(|p| p.pending).sum()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PriorityStats {
    pub priority: &'static str,
    /// Entries in the stream (waiting + pending).
    pub depth: u64,
    /// Claimed by a worker, not yet finished.
    pub pending: u64,
    /// Not yet delivered to any worker (the consumer group's lag).
    pub waiting: u64,
}

/// A worker's last heartbeat, as it wrote it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerInfo(pub serde_json::Value);

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(i) => (*i).max(0) as u64,
        Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) async fn read(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> Result<QueueStats, Error> {
    let mut pipe = redis::pipe();
    for p in Priority::ALL {
        pipe.cmd("XLEN").arg(keys.stream(p));
        pipe.cmd("XPENDING").arg(keys.stream(p)).arg(GROUP);
    }
    pipe.cmd("ZCARD").arg(keys.delayed());
    pipe.cmd("XLEN").arg(keys.dlq());
    pipe.cmd("HVALS").arg(keys.workers());
    // XPENDING fails with NOGROUP before any worker created the group: take each reply on its
    // own, a NOGROUP reading as 0 pending; any other error (NOAUTH, ...) fails the call.
    pipe.ignore_errors();
    let replies: Vec<Value> = pipe
        .query_async(conn)
        .await
        .map_err(Error::redis("stats"))?;
    for reply in &replies {
        if let Value::ServerError(e) = reply {
            if e.code() != "NOGROUP" {
                return Err(Error::Redis {
                    op: "stats",
                    source: e.clone().into(),
                });
            }
        }
    }
    let mut priorities = Vec::new();
    for (i, p) in Priority::ALL.into_iter().enumerate() {
        let depth = int(&replies[2 * i]);
        let pending = match &replies[2 * i + 1] {
            Value::Array(a) if !a.is_empty() => int(&a[0]),
            _ => 0,
        };
        priorities.push(PriorityStats {
            priority: p.as_label(),
            depth,
            pending,
            waiting: depth.saturating_sub(pending),
        });
    }
    let workers = match &replies[8] {
        Value::Array(docs) => docs
            .iter()
            .filter_map(|d| match d {
                Value::BulkString(b) => serde_json::from_slice(b).ok().map(WorkerInfo),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(QueueStats {
        queue: keys.queue().to_owned(),
        priorities,
        delayed: int(&replies[6]),
        dead_letters: int(&replies[7]),
        workers,
    })
}
