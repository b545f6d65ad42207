//! Benchmarks (not tests), run through `scripts/bench.sh MODE`, which starts a private
//! redis-server and builds in release mode. The first argument picks the mode:
//!
//! - `queue` (default): queue-core throughput and latency against a real redis-server, with a
//!   runner that returns at once (so only the queue is measured).
//! - `docker`: the real worker with the Docker runner, end to end (submit to result), next to the
//!   same container work done directly: a `docker run --rm` loop and bare Engine API cycles.
//!   With `BENCH_COMPARE=hardening`: the cost of the seccomp profile and per-attempt uids
//!   instead, two workers side by side (`hardening`). With `BENCH_COMPARE=runtime`: runc
//!   against crun under job containers, side by side (`runtime`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use quayside_common::config::{Config, LanguageConfig};
use quayside_common::{JobId, JobKind, JobSpec, Keys, Status};
use quayside_producer::Producer;
use quayside_worker::runner::{Output, RunOutput, RunRequest, Runner, RunnerError};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Noop;

#[async_trait::async_trait]
impl Runner for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    async fn check(&self) -> Result<(), RunnerError> {
        Ok(())
    }
    async fn run(
        &self,
        _: &RunRequest,
        _: &Output,
        _: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let mut out = RunOutput::with_status(Status::Succeeded);
        out.exit_code = Some(0);
        Ok(out)
    }
}

fn config(url: &str, queue: &str, slots: usize) -> Config {
    let mut cfg = Config::default();
    cfg.redis.url = url.to_owned();
    cfg.queue.name = queue.to_owned();
    cfg.worker.slots = slots;
    cfg.worker.id = Some(format!("bench-{slots}"));
    // Bench jobs keep their results 600 s (above the stale window of these settings).
    cfg.queue.min_result_ttl_s = 600;
    let noop: LanguageConfig =
        serde_json::from_value(serde_json::json!({ "image": "none" })).expect("language");
    cfg.languages = [("noop".to_owned(), noop)].into();
    // BENCH_METRICS=0 measures the queue without metrics (no recorder, no sampling).
    cfg.metrics.enabled = std::env::var("BENCH_METRICS").map_or(true, |v| v != "0");
    cfg.metrics.listen_addr = if cfg.metrics.enabled {
        "127.0.0.1:0".into()
    } else {
        String::new()
    };
    cfg
}

fn jobs(n: usize, batch: Option<&str>) -> Vec<JobSpec> {
    (0..n)
        .map(|_| {
            let mut s = JobSpec::new(
                JobKind::Run,
                "noop",
                [("main".to_owned(), "x".to_owned())].into(),
            );
            s.batch = batch.map(str::to_owned);
            s.result_ttl_s = Some(600);
            s
        })
        .collect()
}

/// (commands, script calls, microseconds Redis spent executing them) since Redis started.
async fn commands(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<(u64, u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let (mut total, mut scripts, mut usec) = (0, 0, 0);
    for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
        let calls: u64 = line
            .split(['=', ','])
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let name = line
            .trim_start_matches("cmdstat_")
            .split(':')
            .next()
            .unwrap_or("");
        if name == "info" {
            continue;
        }
        total += calls;
        let field = |k: &str| {
            line.split(',')
                .find_map(|f| f.split_once(k))
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        if name == "evalsha" || name == "eval" {
            scripts += calls;
            usec += field("usec=").unwrap_or(0);
        }
    }
    Ok((total, scripts, usec))
}

/// Waits until every entry is gone from the lanes of the default tenant and of `tenants`: an
/// entry is deleted when its job ends.
async fn wait_drained(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    tenants: &[&str],
) -> anyhow::Result<()> {
    loop {
        let mut pipe = redis::pipe();
        for s in keys.streams() {
            pipe.cmd("XLEN").arg(s);
        }
        for p in quayside_common::Priority::ALL {
            for t in tenants {
                pipe.cmd("XLEN").arg(keys.lane(p, Some(t)));
            }
        }
        let lens: Vec<u64> = pipe.query_async(conn).await?;
        if lens.iter().sum::<u64>() == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>9.0} jobs/s ({n} in {:.3} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "queue".into());
    match mode.as_str() {
        "queue" => queue_main().await,
        "docker" if std::env::var("BENCH_COMPARE").is_ok_and(|c| c == "hardening") => {
            hardening::main().await
        }
        "docker" if std::env::var("BENCH_COMPARE").is_ok_and(|c| c == "runtime") => {
            runtime::main().await
        }
        "docker" => docker::main().await,
        // For scripts/bench.sh batch: the `docker run` baseline of a C job, NUL-separated.
        "docker-run-argv" => {
            let labels: Vec<String> = std::env::args().skip(2).collect();
            for arg in quayside_e2e::sandbox_cli::docker_run_argv("c", &labels)? {
                print!("{arg}\0");
            }
            Ok(())
        }
        other => anyhow::bail!("unknown mode {other:?}; usage: quayside-bench [queue|docker|docker-run-argv [LABEL...]]"),
    }
}

async fn queue_main() -> anyhow::Result<()> {
    let url = quayside_e2e::redis_url();
    let n: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let tag = std::process::id();
    let with_metrics = std::env::var("BENCH_METRICS").map_or(true, |v| v != "0");
    println!(
        "quayside queue benchmark: {n} jobs, redis {url}, no-op runner, metrics {}",
        if with_metrics {
            "on"
        } else {
            "off (BENCH_METRICS=0)"
        }
    );

    let phases = std::env::var("BENCH_PHASES")
        .unwrap_or_else(|_| "enqueue,process,tenants,latency,logs".into());
    if phases.contains("enqueue") {
        enqueue_rates(&url, n, tag).await?;
    }
    if phases.contains("process") {
        processing_rates(&url, n, tag, &mut conn).await?;
    }
    if phases.contains("tenants") {
        tenant_rates(&url, n, tag, &mut conn).await?;
    }
    if phases.contains("latency") {
        latency(&url, tag, &client).await?;
    }
    if phases.contains("logs") {
        quayside_e2e::log_bench::run(config(&url, "x", 1), &format!("bench-logs-{tag}")).await?;
    }
    Ok(())
}

async fn enqueue_rates(url: &str, n: usize, tag: u32) -> anyhow::Result<()> {
    // 1. Enqueue one by one (each call waits for its reply) and pipelined in bulk.
    let p = Producer::new(&config(url, &format!("bench-enq1-{tag}"), 1))?;
    let specs = jobs(n, None);
    let t = Instant::now();
    for s in &specs {
        p.enqueue(s).await?;
    }
    println!("enqueue, one by one:   {}", rate(n, t.elapsed()));
    let p = Producer::new(&config(url, &format!("bench-enqN-{tag}"), 1))?;
    let specs = jobs(n, None);
    let t = Instant::now();
    p.enqueue_many(&specs).await?;
    println!("enqueue, pipelined:    {}", rate(n, t.elapsed()));
    Ok(())
}

async fn processing_rates(
    url: &str,
    n: usize,
    tag: u32,
    conn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<()> {
    // 2. Processing rate for a full queue at several concurrencies.
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for slots in [1usize, 8, 64] {
        let mut runs = Vec::new();
        for r in 0..repeat {
            let queue = format!("bench-proc{slots}-{r}-{tag}");
            let cfg = config(url, &queue, slots);
            let keys = Keys::new(&queue)?;
            let p = Producer::new(&cfg)?;
            p.enqueue_many(&jobs(n, None)).await?;
            let (c0, s0, u0) = commands(conn).await?;
            let stop = CancellationToken::new();
            let t = Instant::now();
            let worker = tokio::spawn(quayside_worker::run(cfg, Arc::new(Noop), stop.clone()));
            wait_drained(conn, &keys, &[]).await?;
            let took = t.elapsed();
            stop.cancel();
            worker.await?.context("worker")?;
            let (c1, s1, u1) = commands(conn).await?;
            runs.push((took, c1 - c0, s1 - s0, u1 - u0));
        }
        runs.sort_by_key(|r| r.0);
        let rates: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", n as f64 / r.0.as_secs_f64()))
            .collect();
        let (took, cmds, scripts, usec) = runs[runs.len() / 2];
        println!(
            "process, {slots:>2} slots:      {}  (runs: {} jobs/s)   redis per job: {:.2} script calls, {:.1} commands (inner included), {:.1} us in scripts",
            rate(n, took),
            rates.join(" / "),
            scripts as f64 / n as f64,
            cmds as f64 / n as f64,
            usec as f64 / n as f64
        );
    }
    Ok(())
}

/// 2b. What fair share costs: a full queue at 8 slots, its jobs all the default tenant's, all
/// one named tenant's, or split between two tenants (interleaved), in one run; rate and Redis
/// commands per job, each as a ratio to the default tenant's.
async fn tenant_rates(
    url: &str,
    n: usize,
    tag: u32,
    conn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<()> {
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let shapes: [(&str, &[&str]); 3] = [
        ("default tenant", &[]),
        ("one tenant", &["a"]),
        ("two tenants", &["a", "b"]),
    ];
    let mut base: Option<(f64, f64)> = None;
    for (name, tenants) in shapes {
        let mut runs = Vec::new();
        for r in 0..repeat {
            let queue = format!("bench-ten{}-{r}-{tag}", tenants.len());
            let cfg = config(url, &queue, 8);
            let keys = Keys::new(&queue)?;
            let p = Producer::new(&cfg)?;
            let mut specs = jobs(n, None);
            if !tenants.is_empty() {
                for (i, s) in specs.iter_mut().enumerate() {
                    s.tenant = Some(tenants[i % tenants.len()].to_owned());
                }
            }
            let (e0, _, _) = commands(conn).await?;
            p.enqueue_many(&specs).await?;
            let (c0, s0, _) = commands(conn).await?;
            let stop = CancellationToken::new();
            let t = Instant::now();
            let worker = tokio::spawn(quayside_worker::run(cfg, Arc::new(Noop), stop.clone()));
            wait_drained(conn, &keys, tenants).await?;
            let took = t.elapsed();
            stop.cancel();
            worker.await?.context("worker")?;
            let (c1, s1, _) = commands(conn).await?;
            runs.push((took, c0 - e0, c1 - c0, s1 - s0));
        }
        runs.sort_by_key(|r| r.0);
        let (took, enq, cmds, scripts) = runs[runs.len() / 2];
        let per_s = n as f64 / took.as_secs_f64();
        let per_job = (enq + cmds) as f64 / n as f64;
        let (b_rate, b_cmds) = *base.get_or_insert((per_s, per_job));
        println!(
            "tenants, 8 slots, {name:<14} {}   x{:.2} of default   redis per job: {:.1} commands \
             ({:.1} enqueue + {:.1} processing; {:.2} script calls), {:+.1} vs default",
            rate(n, took),
            per_s / b_rate,
            per_job,
            enq as f64 / n as f64,
            cmds as f64 / n as f64,
            scripts as f64 / n as f64,
            per_job - b_cmds
        );
    }
    Ok(())
}

async fn latency(url: &str, tag: u32, client: &redis::Client) -> anyhow::Result<()> {
    // 3. End-to-end latency (submit to completion notice) at a steady 500 jobs/s.
    let queue = format!("bench-lat-{tag}");
    let cfg = config(url, &queue, 64);
    let keys = Keys::new(&queue)?;
    let p = Producer::new(&cfg)?;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(quayside_worker::run(cfg, Arc::new(Noop), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut pubsub = client.get_async_pubsub().await?;
    let prefix = format!("{}done:", keys.prefix());
    pubsub.psubscribe(format!("{prefix}*")).await?;
    let sink = Arc::clone(&arrivals);
    tokio::spawn(async move {
        let mut msgs = pubsub.into_on_message();
        while let Some(m) = msgs.next().await {
            let id = m.get_channel_name().trim_start_matches(&prefix).to_owned();
            sink.lock().expect("lock").insert(id, Instant::now());
        }
    });
    let total = 5_000;
    let specs = jobs(total, None);
    let mut sent: Vec<(JobId, Instant)> = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for s in &specs {
        tick.tick().await;
        let t0 = Instant::now();
        p.enqueue(s).await?;
        sent.push((s.id.clone(), t0));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    worker.await?.context("worker")?;
    let arrived = arrivals.lock().expect("lock");
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t0)| {
            arrived
                .get(id.as_str())
                .map(|t| t.duration_since(*t0).as_secs_f64() * 1e3)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "latency at 500 jobs/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of {total} completed)",
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0),
        lat.len()
    );
    Ok(())
}

mod docker;
mod hardening;
mod runtime;
