//! `quayside-bench docker`: what a `run` job costs end to end with the real worker and the
//! Docker runner, next to the same container work done directly.
//!
//! The worker runs in this process (`quayside_worker::run` with `runner::build`, i.e. the
//! `DockerRunner` and the default language table), one worker per slot count, each warmed up
//! by one job that is not counted. Every scenario runs the same C program in
//! `quayside/runner-c`, compiled with the language table's own build command, so the
//! baselines compile and run exactly like the job does:
//!
//! - bare Engine API (bollard): create + start + wait + remove, with the engine's defaults, and
//!   again with the sandbox options the worker sets (no network, read-only root, tmpfs, limits),
//!   which separates the cost of the hardening from the cost of Quayside;
//! - `docker run --rm` through the CLI;
//! - the bare cycle of `true` (no compile), for reference.
//!
//! Every baseline container carries the `quayside.bench` label; the job containers carry the
//! worker's `quayside.job`/`quayside.worker` labels with a worker id starting with
//! `quayside-bench-docker-`. Both kinds are swept before and after the run.
//!
//! - `engine`: the baselines, container work done directly (Engine API cycles, `docker run`),
//!   and the sweep of what the benchmark started.
//! - `worker`: the real worker in this process, and the job it is given.
//! - `report`: samples to percentiles, the progress lines and the final table.

use std::collections::HashMap;
use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::{stream, StreamExt as _};
use quayside_common::config::{default_image, default_languages, Config, RunnerConfig};
use quayside_common::outcome::Durations;
use quayside_common::{JobKind, JobResult, JobSpec, Limits, Status};
use quayside_producer::Producer;
use quayside_worker::runner::sandbox::protocol::{expand, shell_quote};
use quayside_worker::runner::sandbox::{LABEL_JOB, LABEL_WORKER, WORK_DIR};
use tokio_util::sync::CancellationToken;

pub(super) mod engine;
pub(super) mod report;
mod worker;

use self::engine::*;
use self::report::*;
pub(super) use self::worker::Worker;

/// The C runner image the language table names.
pub(super) fn image() -> String {
    default_image(LANGUAGE)
}
const LANGUAGE: &str = "c";
const SOURCE: &str = "#include <stdio.h>\nint main(){puts(\"hi\");}";
const EXPECTED: &str = "hi\n";
/// Label on every baseline container (value: this run's tag).
pub(super) const BENCH_LABEL: &str = "quayside.bench";
/// Worker ids (and so the `quayside.worker` label of job containers) start with this.
const WORKER_PREFIX: &str = "quayside-bench-docker-";
/// Bound on any one step (a container cycle, a job's result, a whole batch's wait).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

pub(super) async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {STEP_TIMEOUT:?}"))?
        .with_context(|| what.to_owned())
}

/// `n` runs, `parallel` at a time (a new one starts as soon as one ends). Returns the wall
/// time from the first start to the last end, and each run's own time.
async fn concurrent<F, Fut>(
    what: &str,
    n: usize,
    parallel: usize,
    f: F,
) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    let t = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = stream::iter(0..n)
        .map(|_| bounded(what, f()))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let wall = t.elapsed();
    let each = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((wall, each))
}

pub async fn main() -> anyhow::Result<()> {
    let Params {
        url,
        seq,
        batch,
        tag,
    } = Params::from_env();
    let parallels: Vec<usize> = std::env::var("BENCH_PARALLEL")
        .unwrap_or_else(|_| "2,4".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .filter(|&p| p > 0)
        .collect();
    let docker = connect().await?;
    let version = docker.version().await.context("docker version")?;
    docker
        .inspect_image(&image())
        .await
        .with_context(|| format!("image {} (scripts/build-images.sh c)", image()))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "quayside docker benchmark: engine {}, {cores} cores, image {}, redis {url}",
        version.version.unwrap_or_default(),
        image()
    );
    println!(
        "  {seq} sequential runs after one warm-up; batches of {batch} at {parallels:?} at once"
    );
    let leftovers = sweep(&docker).await?;
    if leftovers > 0 {
        println!("  removed {leftovers} containers an earlier run left");
    }

    let outcome = measure(&docker, &url, &tag, seq, batch, &parallels).await;
    let swept = sweep(&docker).await;
    let (ours, all) = job_containers(&docker).await?;
    let rows = outcome?;
    let swept = swept?;
    report(&rows);
    println!(
        "cleanup: {swept} containers left to sweep; job containers now: {ours} of this benchmark, {all} in all"
    );
    ensure!(
        ours == 0,
        "{ours} job containers of this benchmark are left"
    );
    Ok(())
}

/// What every docker benchmark mode starts from: the Redis URL, `BENCH_SEQ` (30) rounds,
/// `BENCH_BATCH` (200) jobs, and a tag naming this run's queues and containers apart.
pub(super) struct Params {
    pub url: String,
    pub seq: usize,
    pub batch: usize,
    pub tag: String,
}

impl Params {
    pub(super) fn from_env() -> Self {
        Self {
            url: quayside_e2e::redis_url(),
            seq: env_usize("BENCH_SEQ", 30),
            batch: env_usize("BENCH_BATCH", 200),
            tag: format!("{}-{:04x}", std::process::id(), rand_u16()),
        }
    }
}

pub(super) fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos >> 8) as u16
}

/// One way of running the program, as a row of the table.
struct Scenario {
    kind: Kind,
    label: &'static str,
    how: How,
}

enum How {
    Api(Box<ContainerCreateBody>),
    Cli(Vec<String>),
    /// The real worker, with its warm pool (`true`) or without.
    Quayside(bool),
}

/// The two real workers of one slot count: warm pool on (the default) and off.
struct Workers {
    warm: Worker,
    cold: Worker,
}

impl Workers {
    async fn start(url: &str, tag: &str, slots: usize) -> anyhow::Result<Self> {
        let warm = Worker::start(url, tag, slots).await?;
        let cold_tag = format!("{tag}-cold");
        let cold = Worker::start_with(url, &cold_tag, slots, |c| {
            c.runner.docker.warm.enabled = false;
        })
        .await?;
        Ok(Self { warm, cold })
    }

    fn of(&self, warm: bool) -> &Worker {
        if warm {
            &self.warm
        } else {
            &self.cold
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.warm.stop().await?;
        self.cold.stop().await
    }
}

impl Scenario {
    /// One run: its time, and for a job the worker's durations.
    async fn once(
        &self,
        docker: &Docker,
        workers: &Workers,
    ) -> anyhow::Result<(Duration, Option<Durations>)> {
        bounded(self.label, async {
            Ok(match &self.how {
                How::Api(body) => (api_cycle(docker, (**body).clone()).await?, None),
                How::Cli(args) => (cli_run(args).await?, None),
                How::Quayside(warm) => {
                    let (took, r) = workers.of(*warm).submit_and_wait().await?;
                    (took, Some(r.durations))
                }
            })
        })
        .await
    }

    /// `n` runs, `parallel` at a time (the worker has that many slots): the wall time and
    /// each run's own time.
    async fn batch(
        &self,
        docker: &Docker,
        workers: &Workers,
        n: usize,
        parallel: usize,
    ) -> anyhow::Result<(Duration, Vec<Duration>)> {
        match &self.how {
            How::Api(body) => {
                concurrent(self.label, n, parallel, || {
                    api_cycle(docker, (**body).clone())
                })
                .await
            }
            How::Cli(args) => concurrent(self.label, n, parallel, || cli_run(args)).await,
            How::Quayside(warm) => {
                // Each wait inside is bounded; so is the whole batch.
                let limit = STEP_TIMEOUT * 10;
                tokio::time::timeout(limit, workers.of(*warm).batch(n))
                    .await
                    .map_err(|_| anyhow::anyhow!("quayside batch: no end within {limit:?}"))?
            }
        }
    }
}

async fn measure(
    docker: &Docker,
    url: &str,
    tag: &str,
    seq: usize,
    batch: usize,
    parallels: &[usize],
) -> anyhow::Result<Vec<Row>> {
    let script = compile_run_script()?;
    println!("  compile+run command: sh -c {}", shell_quote(&script));
    let sh = vec!["sh".to_owned(), "-c".to_owned(), script];
    let cli: Vec<String> = ["run", "--rm", "--label"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("{BENCH_LABEL}={tag}"), image()])
        .chain(sh.iter().cloned())
        .collect();
    let api = |cmd: &[String], options: Options| {
        How::Api(Box::new(create_body(cmd.to_vec(), options, tag)))
    };
    let scenarios = [
        Scenario {
            kind: Kind::BareTrue,
            label: "bare API, `true` (reference)",
            how: api(&["true".to_owned()], Options::Plain),
        },
        Scenario {
            kind: Kind::BareApi,
            label: "bare API, compile+run",
            how: api(&sh, Options::Plain),
        },
        Scenario {
            kind: Kind::BareNoNetwork,
            label: "bare API, compile+run, no network",
            how: api(&sh, Options::NoNetwork),
        },
        Scenario {
            kind: Kind::BareSandbox,
            label: "bare API, compile+run, worker's sandbox options",
            how: api(&sh, Options::Sandbox),
        },
        Scenario {
            kind: Kind::DockerRun,
            label: "docker run --rm, compile+run",
            how: How::Cli(cli),
        },
        Scenario {
            kind: Kind::Quayside,
            label: "quayside run job",
            how: How::Quayside(true),
        },
        Scenario {
            kind: Kind::QuaysideCold,
            label: "quayside run job, pool off",
            how: How::Quayside(false),
        },
    ];
    let label = |s: &Scenario, p: usize| {
        let pool = if s.kind == Kind::Quayside {
            "warm pool"
        } else {
            "pool off"
        };
        match s.kind {
            Kind::Quayside | Kind::QuaysideCold if p == 1 => {
                format!("quayside run job, {pool}, submit to result")
            }
            Kind::Quayside | Kind::QuaysideCold => {
                format!("quayside run jobs, {pool}, {p} slots, to last result")
            }
            _ => s.label.to_owned(),
        }
    };
    let mut rows = Vec::new();

    // Latency: the scenarios take turns (starting one further each round), so load that
    // comes and goes on the machine falls on all of them alike.
    eprintln!("latency, one at a time: {seq} rounds of every scenario, after a warm-up:");
    let workers = Workers::start(url, tag, 1).await?;
    let mut samples = vec![Vec::with_capacity(seq); scenarios.len()];
    let mut loads = Vec::with_capacity(seq);
    let mut phases = Vec::with_capacity(seq);
    for s in &scenarios {
        s.once(docker, &workers).await.context("warm-up")?;
    }
    for round in 0..seq {
        for k in 0..scenarios.len() {
            let i = (round + k) % scenarios.len();
            let (took, durations) = scenarios[i].once(docker, &workers).await?;
            samples[i].push(took);
            if scenarios[i].kind == Kind::QuaysideCold {
                phases.extend(durations);
            }
        }
        loads.push(load());
    }
    workers.stop().await?;
    let mean_load = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    for (s, samples) in scenarios.iter().zip(samples) {
        let row = Row {
            kind: s.kind,
            parallel: 1,
            label: label(s, 1),
            samples,
            wall: None,
            load: mean_load,
        };
        progress(&row);
        rows.push(row);
    }
    let worker_view = |f: fn(&Durations) -> u64| {
        let d: Vec<Duration> = phases.iter().map(|p| Duration::from_millis(f(p))).collect();
        pct(&d, 0.5)
    };
    println!(
        "  quayside 1 slot, pool off, worker's view, p50: queued {:.0} ms, compile {:.0} ms, run {:.0} ms, enqueue to result {:.0} ms",
        worker_view(|d| d.queued_ms),
        worker_view(|d| d.compile_ms),
        worker_view(|d| d.run_ms),
        worker_view(|d| d.total_ms),
    );

    // Throughput: each scenario's whole batch in turn (a batch is enqueued at once).
    for &p in parallels {
        eprintln!("throughput, {batch} jobs, {p} at once:");
        let workers = Workers::start(url, tag, p).await?;
        for s in &scenarios {
            let (wall, samples) = s.batch(docker, &workers, batch, p).await?;
            let row = Row {
                kind: s.kind,
                parallel: p,
                label: label(s, p),
                samples,
                wall: Some(wall),
                load: load(),
            };
            progress(&row);
            rows.push(row);
        }
        workers.stop().await?;
    }
    Ok(rows)
}
