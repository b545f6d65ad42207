//! The real worker in this process (`quayside_worker::run` with the Docker runner), one per
//! slot count, and the job it is given.

use quayside_common::config::QueueConfig;

use super::*;

pub(crate) fn hello_job() -> JobSpec {
    let mut s = JobSpec::new(
        JobKind::Run,
        LANGUAGE,
        [("main.c".to_owned(), SOURCE.to_owned())].into(),
    );
    // The shortest TTL the worker's (default) config allows: shorter is refused at the door.
    s.result_ttl_s = Some(QueueConfig::default().min_result_ttl_s);
    s
}

pub(crate) fn check(r: &JobResult) -> anyhow::Result<()> {
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
pub(crate) async fn submit_and_wait(producer: &Producer) -> anyhow::Result<(Duration, JobResult)> {
    let spec = hello_job();
    let t = Instant::now();
    producer.enqueue(&spec).await?;
    let r = producer.wait(&spec.id, Some(STEP_TIMEOUT)).await?;
    let took = t.elapsed();
    check(&r)?;
    Ok((took, r))
}

/// The real worker in this process, on a queue of its own.
pub(crate) struct Worker {
    producer: Producer,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), quayside_worker::WorkerError>>,
}

impl Worker {
    pub(crate) async fn start(url: &str, tag: &str, slots: usize) -> anyhow::Result<Self> {
        Self::start_with(url, tag, slots, |_| {}).await
    }

    /// A worker whose config `tweak` changes (the hardening comparison's two variants); `tag`
    /// names its queue and id apart from other workers of the run.
    pub(crate) async fn start_with(
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

    pub(crate) async fn submit_and_wait(&self) -> anyhow::Result<(Duration, JobResult)> {
        submit_and_wait(&self.producer).await
    }

    /// `n` jobs enqueued at once; the time from the submit to the last result, and each
    /// job's worker-side time (claim to result).
    pub(crate) async fn batch(&self, n: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
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

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        bounded("worker shutdown", async {
            self.task.await?.context("worker")
        })
        .await
    }
}
