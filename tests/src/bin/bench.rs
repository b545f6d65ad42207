//! Benchmarks (not tests), run through `scripts/bench.sh MODE`, which starts a private
//! redis-server and builds in release mode. The first argument picks the mode:
//!
//! - `queue` (default): queue-core throughput and latency against a real redis-server, with a
//!   runner that returns at once (so only the queue is measured).
//! - `docker`: the real worker with the Docker runner, end to end (submit to result), next to the
//!   same container work done directly: a `docker run --rm` loop and bare Engine API cycles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use quayside_common::config::{Config, LanguageConfig};
use quayside_common::{JobId, JobKind, JobSpec, Keys, Status};
use quayside_producer::Producer;
use quayside_worker::logs::LogSink;
use quayside_worker::runner::{RunOutput, RunRequest, Runner, RunnerError};
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
        _: &LogSink,
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

/// Waits until every entry is gone from the streams: an entry is deleted when its job ends.
async fn wait_drained(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
) -> anyhow::Result<()> {
    loop {
        let mut pipe = redis::pipe();
        for s in keys.streams() {
            pipe.cmd("XLEN").arg(s);
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
    let url = std::env::var("E2E_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
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

    let phases =
        std::env::var("BENCH_PHASES").unwrap_or_else(|_| "enqueue,process,latency,logs".into());
    if phases.contains("enqueue") {
        enqueue_rates(&url, n, tag).await?;
    }
    if phases.contains("process") {
        processing_rates(&url, n, tag, &mut conn).await?;
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
            wait_drained(conn, &keys).await?;
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

/// `quayside-bench docker`: what a `run` job costs end to end with the real worker and the
/// Docker runner, next to the same container work done directly.
///
/// The worker runs in this process (`quayside_worker::run` with `runner::build`, i.e. the
/// `DockerRunner` and the default language table), one worker per slot count, each warmed up
/// by one job that is not counted. Every scenario runs the same C program in
/// `quayside/runner-c`, compiled with the language table's own build command, so the
/// baselines compile and run exactly like the job does:
///
/// - bare Engine API (bollard): create + start + wait + remove, with the engine's defaults, and
///   again with the sandbox options the worker sets (no network, read-only root, tmpfs, limits),
///   which separates the cost of the hardening from the cost of Quayside;
/// - `docker run --rm` through the CLI;
/// - the bare cycle of `true` (no compile), for reference.
///
/// Every baseline container carries the `quayside.bench` label; the job containers carry the
/// worker's `quayside.job`/`quayside.worker` labels with a worker id starting with
/// `quayside-bench-docker-`. Both kinds are swept before and after the run.
mod docker {
    use std::collections::HashMap;
    use std::future::Future;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use anyhow::{bail, ensure, Context as _};
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{
        CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
        StartContainerOptions, WaitContainerOptions,
    };
    use bollard::Docker;
    use futures_util::{stream, StreamExt as _};
    use quayside_common::config::{default_image, default_languages, Config, DockerConfig};
    use quayside_common::outcome::Durations;
    use quayside_common::{JobKind, JobResult, JobSpec, Limits, Status};
    use quayside_producer::Producer;
    use quayside_worker::runner::sandbox::protocol::{expand, shell_quote};
    use quayside_worker::runner::sandbox::{LABEL_JOB, LABEL_WORKER, WORK_DIR};
    use tokio_util::sync::CancellationToken;

    const LANGUAGE: &str = "c";
    const SOURCE: &str = "#include <stdio.h>\nint main(){puts(\"hi\");}";
    const EXPECTED: &str = "hi\n";
    /// Label on every baseline container (value: this run's tag).
    const BENCH_LABEL: &str = "quayside.bench";
    /// Worker ids (and so the `quayside.worker` label of job containers) start with this.
    const WORKER_PREFIX: &str = "quayside-bench-docker-";
    /// Bound on any one step (a container cycle, a job's result, a whole batch's wait).
    const STEP_TIMEOUT: Duration = Duration::from_secs(120);

    fn env_usize(name: &str, default: usize) -> usize {
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
            image: Some(default_image(LANGUAGE)),
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
        let worker = Config::default().limits;
        let limits = default_languages()
            .get(LANGUAGE)
            .and_then(|l| l.default_limits(&worker.default, &worker.max).ok())
            .unwrap_or(Limits::DEFAULT);
        // The worker's own container settings, so the baseline is like for like.
        body.user = Some(cfg.user.clone());
        body.working_dir = Some(WORK_DIR.into());
        body.network_disabled = Some(true);
        body.host_config = Some(quayside_worker::runner::docker::host_config(&cfg, &limits));
        body
    }

    /// One bare Engine API cycle: create, start, wait, remove. Fails unless the program exits 0.
    async fn api_cycle(docker: &Docker, body: ContainerCreateBody) -> anyhow::Result<Duration> {
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

    async fn bounded<T>(
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
    struct Worker {
        producer: Producer,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), quayside_worker::WorkerError>>,
    }

    impl Worker {
        async fn start(url: &str, tag: &str, slots: usize) -> anyhow::Result<Self> {
            let mut cfg = Config::default();
            cfg.redis.url = url.to_owned();
            cfg.queue.name = format!("bench-docker-{tag}-s{slots}");
            cfg.worker.slots = slots;
            cfg.worker.id = Some(format!("{WORKER_PREFIX}{tag}-s{slots}"));
            cfg.languages = default_languages();
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

        async fn submit_and_wait(&self) -> anyhow::Result<(Duration, JobResult)> {
            submit_and_wait(&self.producer).await
        }

        /// `n` jobs enqueued at once; the time from the submit to the last result, and each
        /// job's worker-side time (claim to result).
        async fn batch(&self, n: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
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

        async fn stop(self) -> anyhow::Result<()> {
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
    fn pct(samples: &[Duration], q: f64) -> f64 {
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
    fn load() -> f64 {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split(' ').next()?.parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// Removes what this benchmark started, from this run or an interrupted earlier one:
    /// baseline containers (`quayside.bench`) and job containers of bench workers.
    async fn sweep(docker: &Docker) -> anyhow::Result<usize> {
        let mut removed = 0;
        for label in [BENCH_LABEL, LABEL_WORKER] {
            let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
            let list = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .context("list containers")?;
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
    async fn job_containers(docker: &Docker) -> anyhow::Result<(usize, usize)> {
        let filters = HashMap::from([("label".to_owned(), vec![LABEL_JOB.to_owned()])]);
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
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
        let url =
            std::env::var("E2E_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
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
        let image = default_image(LANGUAGE);
        docker
            .inspect_image(&image)
            .await
            .with_context(|| format!("image {image} (scripts/build-images.sh c)"))?;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "quayside docker benchmark: engine {}, {cores} cores, image {image}, redis {url}",
            version.version.unwrap_or_default()
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

    fn rand_u16() -> u16 {
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
            .chain([format!("{BENCH_LABEL}={tag}"), default_image(LANGUAGE)])
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
}
