//! Simulated workers for the fencing tests: the worker's own queue code ([`RedisQueue`]) driven
//! by hand, one lease at a time. Each call is unwrapped and returns the queue's answer, so the
//! test asserts on it where the reader sees the story ([`LeaseCalls`]).

use std::sync::Arc;

use quayside_common::connection::Redis;
use quayside_common::{JobResult, Priority};
use quayside_worker::queue::{
    Charge, Claimed, Completion, JobQueue, Lease, LeaseState, RedisQueue, Retry, Write,
};

use crate::TestQueue;

/// How long a result written by hand is kept: longer than any test runs.
const RESULT_TTL_S: u64 = 600;

/// The queue code of simulated workers, one consumer name each, on the test's queue.
pub fn worker_queues<const N: usize>(q: &TestQueue, names: [&str; N]) -> [RedisQueue; N] {
    let redis = Arc::new(Redis::new(&q.cfg.redis).expect("redis"));
    names.map(|name| {
        RedisQueue::new(
            Arc::clone(&redis),
            q.keys.clone(),
            q.cfg.queue.clone(),
            name.to_owned(),
        )
    })
}

/// One call of the queue seam on one lease, unwrapped.
#[allow(async_fn_in_trait)] // test harness: never used as `dyn`, callers are all in this crate
pub trait LeaseCalls {
    /// Claims the next entry (any priority); there must be one.
    async fn claim_one(&self) -> Claimed;
    /// Takes over the first pending entry, however briefly it has been idle.
    async fn reclaim_one(&self) -> Claimed;
    /// What renewing `lease` says of it.
    async fn renew_one(&self, lease: &Lease) -> LeaseState;
    /// Writes `result` as the job's terminal result under `lease`.
    async fn finish_with(&self, lease: &Lease, result: &JobResult) -> Write;
    /// Puts the job back for another attempt (no delay, attempt charged) under `lease`.
    async fn retry_now(&self, lease: &Lease, error: &str) -> Write;
}

impl LeaseCalls for RedisQueue {
    async fn claim_one(&self) -> Claimed {
        let mut batch = self.claim(1, &Priority::ALL).await.expect("claim");
        assert!(!batch.claimed.is_empty(), "nothing to claim");
        batch.claimed.remove(0)
    }

    async fn reclaim_one(&self) -> Claimed {
        let mut batch = self.reclaim(1, 0).await.expect("reclaim");
        assert!(!batch.claimed.is_empty(), "nothing to reclaim");
        batch.claimed.remove(0)
    }

    async fn renew_one(&self, lease: &Lease) -> LeaseState {
        let states = self
            .renew(std::slice::from_ref(lease))
            .await
            .expect("renew");
        assert_eq!(states.len(), 1, "one answer per lease: {states:?}");
        states[0]
    }

    async fn finish_with(&self, lease: &Lease, result: &JobResult) -> Write {
        self.finish(Completion::new(lease, result, RESULT_TTL_S))
            .await
            .expect("finish")
    }

    async fn retry_now(&self, lease: &Lease, error: &str) -> Write {
        let retry = Retry {
            delay_ms: 0,
            error,
            charge: Charge::Attempt,
        };
        self.retry(lease, retry).await.expect("retry")
    }
}
