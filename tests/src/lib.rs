//! End-to-end harness: a real redis-server (from `E2E_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), real worker processes, one fresh queue per test.
//!
//! - `machine`: what a test finds on this machine: the Redis URL, the built binaries
//!   ([`bin_path`]), a free port ([`free_port`], [`free_addr`]), a folder ([`private_dir`]), a
//!   command's output ([`stdout_ok`]).
//! - `queue`: [`TestQueue`], a queue of its own per test, and what it checks in Redis.
//! - `workers`: worker processes on a [`TestQueue`] ([`WorkerHandle`]), and what they recorded.
//! - `completions`: terminal notifications, counted per job ([`Completions`]).
//! - `leases`: simulated workers driving the queue's fenced calls by hand ([`leases::LeaseCalls`]).
//! - `private_redis`: a redis-server of a test's own, to kill and restart ([`PrivateRedis`]).
//! - `redis_cluster`: a three-primary Redis Cluster of a test's own ([`RedisCluster`]).
//! - `browser`, `private_dockerd`, `gateway`, `ops`, `sandbox_cli`, `script_runner`, `log_bench`, `model`:
//!   the harness pieces of one concern each (headless Chromium, an engine of a test's own, `quayside serve`,
//!   operations, the benchmark's bare `docker run`, the script runner, the log benchmark, the
//!   model test).

pub mod browser;
mod completions;
pub mod gateway;
pub mod leases;
pub mod log_bench;
mod machine;
pub mod model;
pub mod ops;
pub mod private_dockerd;
mod private_redis;
mod queue;
mod redis_cluster;
pub mod sandbox_cli;
pub mod sandboxes;
pub mod script_runner;
mod workers;

use std::time::Duration;

pub use completions::Completions;
pub use machine::{
    bin_path, free_addr, free_port, private_dir, redis_cli, redis_url, run_bounded, stdout_ok,
};
pub use private_redis::PrivateRedis;
pub use queue::TestQueue;
pub use redis_cluster::RedisCluster;
pub use workers::{recorded, wait_started, WorkerHandle};

/// Bounds every await of a test: a hang fails the test with `what` instead of stalling CI.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}
