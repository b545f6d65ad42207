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
use quayside_common::config::{default_image, default_languages, Config, DockerConfig};
use quayside_common::outcome::Durations;
use quayside_common::{JobKind, JobResult, JobSpec, Limits, Status};
use quayside_producer::Producer;
use quayside_worker::runner::docker::labelled;
use quayside_worker::runner::sandbox::protocol::{expand, shell_quote};
use quayside_worker::runner::sandbox::{LABEL_JOB, LABEL_WORKER, WORK_DIR};
use tokio_util::sync::CancellationToken;

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

/// The shell script the baselines run: write `main.c` into `/work`, then the C entry of
/// the default language table's build and run commands, expanded as the worker does.
fn compile_run_script() -> anyhow::Result<String> {
    let langs = default_languages();
    let c = langs
        .get(LANGUAGE)
        .context("no c in the default language table")?;
    let vars = [
        ("options", String::new()),
        ("sources", shell_quote("main.c")),
        ("entry", shell_quote("main.c")),
    ];
    let lines: Vec<String> = SOURCE.lines().map(shell_quote).collect();
    Ok(format!(
        "cd {WORK_DIR} && printf '%s\\n' {} > main.c && {} && {}",
        lines.join(" "),
        expand(&c.build_command, &vars),
        expand(&c.run_command, &vars)
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Options {
    /// What `docker create IMAGE CMD` gives: the engine's defaults (bridge network,
    /// json-file logs, writable root).
    Plain,
    /// The engine's defaults but no network (`--network none`), the one default that
    /// costs most (a bridge endpoint per container).
    NoNetwork,
    /// The sandbox options the worker's Docker runner sets (copied from its create body:
    /// keep in step with `worker/src/runner/docker/spec.rs`).
    Sandbox,
}

fn create_body(cmd: Vec<String>, options: Options, tag: &str) -> ContainerCreateBody {
    let labels = HashMap::from([(BENCH_LABEL.to_owned(), tag.to_owned())]);
    let mut body = ContainerCreateBody {
        image: Some(image()),
        cmd: Some(cmd),
        labels: Some(labels),
        ..Default::default()
    };
    match options {
        Options::Plain => return body,
        Options::NoNetwork => {
            body.network_disabled = Some(true);
            body.host_config = Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            });
            return body;
        }
        Options::Sandbox => {}
    }
    let cfg = DockerConfig::default();
    // A job that sets no limits gets the language's defaults, as the worker resolves them.
    let limits = default_languages()
        .get(LANGUAGE)
        .and_then(|l| l.default_limits(&Config::default().limits).ok())
        .unwrap_or(Limits::DEFAULT);
    // The worker's own container settings, so the baseline is like for like.
    let user = quayside_worker::runner::docker::attempt_user(&cfg);
    body.user = Some(format!("{}:{}", user.0, user.1));
    body.working_dir = Some(WORK_DIR.into());
    body.network_disabled = Some(true);
    body.host_config = Some(quayside_worker::runner::docker::host_config(
        &cfg, &limits, user,
    ));
    body
}

/// One bare Engine API cycle: create, start, wait, remove. Fails unless the program exits 0.
pub(super) async fn api_cycle(
    docker: &Docker,
    body: ContainerCreateBody,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .context("create")?
        .id;
    let ran = async {
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .context("start")?;
        match docker
            .wait_container(&id, None::<WaitContainerOptions>)
            .next()
            .await
        {
            Some(Ok(r)) if r.status_code == 0 => Ok(()),
            Some(Ok(r)) => bail!("container exited {}", r.status_code),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("wait")),
            None => bail!("wait ended without a status"),
        }
    }
    .await;
    let removed = remove(docker, &id).await.context("remove");
    ran?;
    removed?;
    Ok(t.elapsed())
}

async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        })
        | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One `docker run --rm` through the CLI; fails unless it printed exactly `hi`.
async fn cli_run(args: &[String]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("spawn docker")?;
    ensure!(
        out.status.success() && out.stdout == EXPECTED.as_bytes(),
        "docker run: {} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(t.elapsed())
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

fn hello_job() -> JobSpec {
    let mut s = JobSpec::new(
        JobKind::Run,
        LANGUAGE,
        [("main.c".to_owned(), SOURCE.to_owned())].into(),
    );
    s.result_ttl_s = Some(600);
    s
}

fn check(r: &JobResult) -> anyhow::Result<()> {
    ensure!(
        r.status == Status::Succeeded && r.stdout.lossy() == EXPECTED,
        "job {} ended {} (stdout {:?}, compile {:?}, error {:?})",
        r.id,
        r.status,
        r.stdout.lossy(),
        r.compile_output.lossy(),
        r.error
    );
    Ok(())
}

/// Submit to result, timed client-side.
async fn submit_and_wait(producer: &Producer) -> anyhow::Result<(Duration, JobResult)> {
    let spec = hello_job();
    let t = Instant::now();
    producer.enqueue(&spec).await?;
    let r = producer.wait(&spec.id, Some(STEP_TIMEOUT)).await?;
    let took = t.elapsed();
    check(&r)?;
    Ok((took, r))
}

/// The real worker in this process, on a queue of its own.
pub(super) struct Worker {
    producer: Producer,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), quayside_worker::WorkerError>>,
}

impl Worker {
    async fn start(url: &str, tag: &str, slots: usize) -> anyhow::Result<Self> {
        Self::start_with(url, tag, slots, |_| {}).await
    }

    /// A worker whose config `tweak` changes (the hardening comparison's two variants); `tag`
    /// names its queue and id apart from other workers of the run.
    pub(super) async fn start_with(
        url: &str,
        tag: &str,
        slots: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let mut cfg = Config::default();
        cfg.redis.url = url.to_owned();
        cfg.queue.name = format!("bench-docker-{tag}-s{slots}");
        cfg.worker.slots = slots;
        cfg.worker.id = Some(format!("{WORKER_PREFIX}{tag}-s{slots}"));
        cfg.languages = default_languages();
        // Metrics are recorded as in production, but nobody scrapes them here: no listener,
        // so workers side by side (and other benchmarks on the machine) need no free port.
        cfg.metrics.listen_addr = String::new();
        tweak(&mut cfg);
        cfg.validate().context("worker config")?;
        let runner = quayside_worker::runner::build(&cfg).context("docker runner")?;
        let producer = Producer::new(&cfg)?;
        let stop = CancellationToken::new();
        let mut task = tokio::spawn(quayside_worker::run(cfg, runner, stop.clone()));
        // The warm-up job: the runner connects to the engine on its first job.
        tokio::select! {
            r = &mut task => bail!("worker stopped at start: {:?}", r?.err()),
            r = bounded("warm-up job", submit_and_wait(&producer)) => { r?; }
        }
        Ok(Self {
            producer,
            stop,
            task,
        })
    }

    pub(super) async fn submit_and_wait(&self) -> anyhow::Result<(Duration, JobResult)> {
        submit_and_wait(&self.producer).await
    }

    /// `n` jobs enqueued at once; the time from the submit to the last result, and each
    /// job's worker-side time (claim to result).
    pub(super) async fn batch(&self, n: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let specs: Vec<JobSpec> = (0..n).map(|_| hello_job()).collect();
        let t = Instant::now();
        self.producer.enqueue_many(&specs).await?;
        let mut each = Vec::with_capacity(n);
        for s in &specs {
            // Results stay in Redis: waiting in order returns right after the last one ends.
            let r = self.producer.wait(&s.id, Some(STEP_TIMEOUT)).await?;
            check(&r)?;
            let d = &r.durations;
            each.push(Duration::from_millis(
                d.total_ms.saturating_sub(d.queued_ms),
            ));
        }
        Ok((t.elapsed(), each))
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        bounded("worker shutdown", async {
            self.task.await?.context("worker")
        })
        .await
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile, in ms.
pub(super) fn pct(samples: &[Duration], q: f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().map(ms).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    BareTrue,
    BareApi,
    BareNoNetwork,
    BareSandbox,
    DockerRun,
    Quayside,
}

struct Row {
    kind: Kind,
    /// 1 for the sequential (latency) rows, else how many ran at once.
    parallel: usize,
    label: String,
    samples: Vec<Duration>,
    /// Batch rows: the wall time of the whole batch.
    wall: Option<Duration>,
    /// The machine's 1-minute load average while it ran (the benchmark's own containers
    /// included), to tell a quiet measurement from one taken next to other work.
    load: f64,
}

impl Row {
    fn rate(&self) -> Option<f64> {
        self.wall
            .map(|w| self.samples.len() as f64 / w.as_secs_f64())
    }
}

fn progress(row: &Row) {
    let rate = row
        .rate()
        .map(|r| format!(", {r:.2} jobs/s"))
        .unwrap_or_default();
    eprintln!(
        "  {:<50} p50 {:>7.1} ms, p90 {:>7.1} ms{rate}, load {:.1}",
        row.label,
        pct(&row.samples, 0.5),
        pct(&row.samples, 0.9),
        row.load
    );
}

/// The 1-minute load average.
pub(super) fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Removes what this benchmark started, from this run or an interrupted earlier one:
/// baseline containers (`quayside.bench`) and job containers of bench workers.
pub(super) async fn sweep(docker: &Docker) -> anyhow::Result<usize> {
    let mut removed = 0;
    for label in [BENCH_LABEL, LABEL_WORKER] {
        let list = labelled(docker, label).await.context("list containers")?;
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let ours = labels.contains_key(BENCH_LABEL)
                || labels
                    .get(LABEL_WORKER)
                    .is_some_and(|w| w.starts_with(WORKER_PREFIX));
            if let (true, Some(id)) = (ours, c.id) {
                remove(docker, &id).await.context("remove leftover")?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Job containers (`quayside.job`) still there: `(of this benchmark, all)`.
pub(super) async fn job_containers(docker: &Docker) -> anyhow::Result<(usize, usize)> {
    let list = labelled(docker, LABEL_JOB).await?;
    let ours = list
        .iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_WORKER))
                .is_some_and(|w| w.starts_with(WORKER_PREFIX))
        })
        .count();
    Ok((ours, list.len()))
}

pub async fn main() -> anyhow::Result<()> {
    let url = std::env::var("E2E_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let seq = env_usize("BENCH_SEQ", 30);
    let batch = env_usize("BENCH_BATCH", 200);
    let parallels: Vec<usize> = std::env::var("BENCH_PARALLEL")
        .unwrap_or_else(|_| "2,4".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .filter(|&p| p > 0)
        .collect();
    let tag = format!("{}-{:04x}", std::process::id(), rand_u16());
    let docker = Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await
        .context("docker engine")?;
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
    Quayside,
}

impl Scenario {
    /// One run: its time, and for a job the worker's durations.
    async fn once(
        &self,
        docker: &Docker,
        worker: &Worker,
    ) -> anyhow::Result<(Duration, Option<Durations>)> {
        bounded(self.label, async {
            Ok(match &self.how {
                How::Api(body) => (api_cycle(docker, (**body).clone()).await?, None),
                How::Cli(args) => (cli_run(args).await?, None),
                How::Quayside => {
                    let (took, r) = worker.submit_and_wait().await?;
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
        worker: &Worker,
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
            How::Quayside => {
                // Each wait inside is bounded; so is the whole batch.
                let limit = STEP_TIMEOUT * 10;
                tokio::time::timeout(limit, worker.batch(n))
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
            how: How::Quayside,
        },
    ];
    let label = |s: &Scenario, p: usize| match s.kind {
        Kind::Quayside if p == 1 => "quayside run job, 1 slot, submit to result".to_owned(),
        Kind::Quayside => format!("quayside run jobs, {p} slots, submit to last result"),
        _ => s.label.to_owned(),
    };
    let mut rows = Vec::new();

    // Latency: the scenarios take turns (starting one further each round), so load that
    // comes and goes on the machine falls on all of them alike.
    eprintln!("latency, one at a time: {seq} rounds of every scenario, after a warm-up:");
    let worker = Worker::start(url, tag, 1).await?;
    let mut samples = vec![Vec::with_capacity(seq); scenarios.len()];
    let mut loads = Vec::with_capacity(seq);
    let mut phases = Vec::with_capacity(seq);
    for s in &scenarios {
        s.once(docker, &worker).await.context("warm-up")?;
    }
    for round in 0..seq {
        for k in 0..scenarios.len() {
            let i = (round + k) % scenarios.len();
            let (took, durations) = scenarios[i].once(docker, &worker).await?;
            samples[i].push(took);
            phases.extend(durations);
        }
        loads.push(load());
    }
    worker.stop().await?;
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
        "  quayside 1 slot, worker's view, p50: queued {:.0} ms, compile {:.0} ms, run {:.0} ms, enqueue to result {:.0} ms",
        worker_view(|d| d.queued_ms),
        worker_view(|d| d.compile_ms),
        worker_view(|d| d.run_ms),
        worker_view(|d| d.total_ms),
    );

    // Throughput: each scenario's whole batch in turn (a batch is enqueued at once).
    for &p in parallels {
        eprintln!("throughput, {batch} jobs, {p} at once:");
        let worker = Worker::start(url, tag, p).await?;
        for s in &scenarios {
            let (wall, samples) = s.batch(docker, &worker, batch, p).await?;
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
        worker.stop().await?;
    }
    Ok(rows)
}

const LEGEND: &str = "\
par 1: one at a time after a warm-up, the scenarios taking turns; p50/p90 = one job end to
  end (quayside: submit to result, client-side). par > 1: a batch, the scenarios one after
  another; jobs/s = batch size / wall time (quayside: submit of the batch to its last result);
  p50/p90 = each container's own cycle (quayside: claim to result, from the results' durations).
vs API: against `bare API, compile+run` (engine defaults: bridge network, json-file logs);
  vs API*: against the bare cycle with the worker's sandbox options, i.e. the same container
  Quayside creates. Latency rows: p50 / p50 (lower is better); batch rows: jobs/s / jobs/s
  (higher is better).
load: 1-minute load average while the row ran, this benchmark's own containers included; far
  above par + 1 means other work shared the machine and the row is noisy.
";

fn report(rows: &[Row]) {
    let find = |kind: Kind, parallel: usize| {
        rows.iter()
            .find(|r| r.kind == kind && r.parallel == parallel)
    };
    // Latency rows compare p50 (lower is better), batch rows jobs/s (higher is better).
    let ratio = |r: &Row, base: Kind| -> Option<f64> {
        let b = find(base, r.parallel)?;
        Some(match (r.rate(), b.rate()) {
            (Some(a), Some(b)) => a / b,
            _ => pct(&r.samples, 0.5) / pct(&b.samples, 0.5),
        })
    };
    let show = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
    println!();
    println!(
        "{:<50} {:>4} {:>3} {:>8} {:>8} {:>7} {:>7} {:>7} {:>5}",
        "scenario", "n", "par", "p50 ms", "p90 ms", "jobs/s", "vs API", "vs API*", "load"
    );
    for r in rows {
        println!(
            "{:<50} {:>4} {:>3} {:>8.1} {:>8.1} {:>7} {:>7} {:>7} {:>5.1}",
            r.label,
            r.samples.len(),
            r.parallel,
            pct(&r.samples, 0.5),
            pct(&r.samples, 0.9),
            show(r.rate()),
            show(ratio(r, Kind::BareApi)),
            show(ratio(r, Kind::BareSandbox)),
            r.load,
        );
    }
    println!();
    print!("{LEGEND}");
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    if let Some(q) = find(Kind::Quayside, 1) {
        let (a, s) = (ratio(q, Kind::BareApi), ratio(q, Kind::BareSandbox));
        println!(
            "target, latency p50 <= 1.15 x bare API: {} vs API* ({}), {} vs API ({})",
            show(s),
            verdict(s.is_some_and(|x| x <= 1.15)),
            show(a),
            verdict(a.is_some_and(|x| x <= 1.15)),
        );
    }
    for q in rows
        .iter()
        .filter(|r| r.kind == Kind::Quayside && r.parallel > 1)
    {
        let (a, s) = (ratio(q, Kind::BareApi), ratio(q, Kind::BareSandbox));
        println!(
            "target, jobs/s >= 0.90 x bare API, {} at once: {} vs API* ({}), {} vs API ({})",
            q.parallel,
            show(s),
            verdict(s.is_some_and(|x| x >= 0.9)),
            show(a),
            verdict(a.is_some_and(|x| x >= 0.9)),
        );
    }
}
