//! `scripts/bench.sh queue`, phase `logs`: what a live-log append costs through the fenced
//! `log.lua` (what workers do) next to a plain `XADD` (what they did before the fence), on one
//! claimed job, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quayside_common::config::Config;
use quayside_common::connection::Redis;
use quayside_common::{JobKind, JobSpec, Keys, Priority};
use quayside_producer::Producer;
use quayside_worker::queue::{JobQueue as _, RedisQueue};
use quayside_worker::queue::{LogSink, LogSource};

/// Appends per measured round, one at a time (as one job's output arrives) and from `TASKS`
/// jobs at once (a busy worker).
const APPENDS: usize = 5_000;
const TASKS: usize = 64;
const ROUNDS: usize = 3;

async fn sequential(sink: &LogSink, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        sink.write(LogSource::Stdout, b"a line of output\n").await;
    }
    t.elapsed()
}

async fn concurrent(sinks: &[LogSink], n: usize) -> Duration {
    let t = Instant::now();
    let tasks: Vec<_> = sinks
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { sequential(&s, n).await })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    t.elapsed()
}

/// Runs the phase against the queue `queue` of `cfg`'s Redis; prints appends/s for both paths
/// and their ratio (median of [`ROUNDS`] rounds, paths alternating).
///
/// # Errors
/// Redis unreachable, or the claim did not hand out the jobs.
pub async fn run(mut cfg: Config, queue: &str) -> anyhow::Result<()> {
    cfg.queue.name = queue.to_owned();
    let keys = Keys::new(queue)?;
    let producer = Producer::new(&cfg)?;
    let specs: Vec<JobSpec> = (0..TASKS)
        .map(|_| {
            let mut s = JobSpec::new(
                JobKind::Run,
                "noop",
                [("main".to_owned(), "x".to_owned())].into(),
            );
            s.result_ttl_s = Some(cfg.queue.min_result_ttl_s);
            s
        })
        .collect();
    producer.enqueue_many(&specs).await?;
    let redis = Arc::new(Redis::new(&cfg.redis)?);
    let q = RedisQueue::new(
        Arc::clone(&redis),
        keys.clone(),
        cfg.queue.clone(),
        "bench-logs".into(),
    );
    q.prepare().await?;
    let claimed = q.claim(TASKS, &Priority::ALL).await?.claimed;
    anyhow::ensure!(claimed.len() == TASKS, "claimed {} jobs", claimed.len());
    let mut fenced = Vec::new();
    let mut plain = Vec::new();
    for c in &claimed {
        let id = quayside_common::JobId::parse(&c.lease.job_id)?;
        fenced.push(q.log_sink(&id, &c.lease));
        let other = quayside_common::JobId::parse(&format!("{id}-plain"))?;
        plain.push(LogSink::new(
            Arc::clone(&redis),
            keys.logs(&other),
            cfg.queue.log_max_entries,
        ));
    }
    let mut one = (Vec::new(), Vec::new());
    let mut many = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        one.0.push(sequential(&plain[0], APPENDS).await);
        one.1.push(sequential(&fenced[0], APPENDS).await);
        many.0.push(concurrent(&plain, APPENDS / 10).await);
        many.1.push(concurrent(&fenced, APPENDS / 10).await);
    }
    anyhow::ensure!(fenced.iter().all(LogSink::wrote), "fenced appends refused");
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    for (what, n, (p, f)) in [
        ("one job", APPENDS, &mut one),
        ("64 jobs at once", TASKS * APPENDS / 10, &mut many),
    ] {
        let (p, f) = (per_s(n, median(p)), per_s(n, median(f)));
        println!(
            "log appends, {what:<16} plain XADD {p:>8.0}/s   fenced log.lua {f:>8.0}/s   fenced/plain {:.2}",
            f / p
        );
    }
    Ok(())
}
