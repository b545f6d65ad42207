//! The warm pool: per language, containers already created, attached and started with the
//! language's default limits and the full hardening, each waiting in the stub
//! ([`protocol::stub_command`]) for one job. A job whose limits are those defaults takes one
//! ([`Pool::take`]) and skips create, attach and start; any other job goes cold. Each
//! container serves one job and is removed after it like a cold one; a background task
//! refills the pool, one container at a time, off every job's path.
//!
//! A waiting container holds nothing of a job. Its output is watched until it is handed over:
//! a container that prints or whose stream ends (killed from outside, OOM, an engine restart)
//! is dead, and is removed and replaced, never handed a job. A taken container keeps its pool
//! name, under which the attempt's guard removes it and the kill watch follows it (a rename
//! was the slowest step of the hand-over). See `docs/design/warm-pool.md`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::container::AttachContainerResults;
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, StartContainerOptions,
};
use bollard::Docker;
use quayside_common::config::{Config, RunnerConfig};
use quayside_common::Limits;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::attempt::{attach_all, Started, DEADLINE_SLACK_S};
use super::cleanup::Sandbox;
use super::spec;
use crate::metrics::{Miss, PoolMetrics};
use crate::runner::sandbox::{self, name_safe, Fleet, Sandboxes};
use crate::runner::RunRequest;

mod waiting;

use self::waiting::{watch, Waiting};

/// Name prefix of a warm container that has not been handed a job yet.
pub(super) const POOL_PREFIX: &str = "quayside-pool-";
/// How long the refill task waits before it tries a language whose refill failed again; it
/// doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the refill task looks for containers that waited too long.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// What one language's warm containers are: its image and default limits, and how many wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub image: String,
    pub limits: Limits,
    pub size: usize,
}

/// Each language's profile under `cfg`: those with a size above 0 (`runner.docker.warm`).
pub fn profiles(cfg: &Config) -> BTreeMap<String, Profile> {
    cfg.languages
        .iter()
        .filter_map(|(name, lang)| {
            let size = cfg.runner.docker.warm.size_of(name);
            let limits = lang.default_limits(&cfg.limits).ok()?;
            (size > 0).then(|| {
                let image = lang.image.clone();
                (
                    name.clone(),
                    Profile {
                        image,
                        limits,
                        size,
                    },
                )
            })
        })
        .collect()
}

/// One runner's warm pool, refilled by [`Pool::refill_forever`] until [`Pool::stop`].
#[derive(Debug)]
pub(super) struct Pool {
    profiles: BTreeMap<String, Profile>,
    cfg: RunnerConfig,
    worker_id: String,
    fleet: Fleet,
    docker: Docker,
    sandboxes: Arc<Sandboxes>,
    waiting: Mutex<HashMap<String, VecDeque<Waiting>>>,
    /// A container was taken or died: the refill task looks again.
    wake: Arc<Notify>,
    stop: CancellationToken,
    refills: Mutex<Option<JoinHandle<()>>>,
    next: AtomicU64,
    metrics: PoolMetrics,
}

impl Pool {
    /// A pool of `profiles` for `fleet`'s jobs, refilling in the background from now on.
    pub(super) fn start(
        profiles: BTreeMap<String, Profile>,
        cfg: RunnerConfig,
        worker_id: String,
        fleet: Fleet,
        docker: Docker,
        sandboxes: Arc<Sandboxes>,
    ) -> Arc<Self> {
        let metrics = PoolMetrics::new(&fleet.queue);
        let pool = Arc::new(Self {
            profiles,
            cfg,
            worker_id,
            fleet,
            docker,
            sandboxes,
            waiting: Mutex::default(),
            wake: Arc::default(),
            stop: CancellationToken::new(),
            refills: Mutex::default(),
            next: AtomicU64::new(0),
            metrics,
        });
        let task = tokio::spawn(Arc::clone(&pool).refill_forever());
        *pool.refills.lock().expect("lock poisoned") = Some(task);
        pool
    }

    /// Stops refilling and removes every waiting container, waiting for the engine.
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        let task = self.refills.lock().expect("lock poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.empty().await;
        for language in self.profiles.keys() {
            self.metrics.waiting(language, 0);
        }
    }

    /// Stops refilling; the task removes what waits (for a runner that is dropped).
    pub(super) fn abandon(&self) {
        self.stop.cancel();
    }

    /// A warm container for `req`, registered in `sandbox` under the attempt's sandbox name,
    /// or `None` (the job goes cold): its language has no pool, its limits are not the pool's,
    /// or no container is waiting. Containers found dead are removed and the next is tried.
    pub(super) async fn take(&self, sandbox: &mut Sandbox, req: &RunRequest) -> Option<Started> {
        let profile = self.profiles.get(&req.language)?;
        if req.limits != profile.limits || req.language_config.image != profile.image {
            self.metrics.miss(&req.language, Miss::Limits);
            return None;
        }
        let mut failed = false;
        loop {
            let next = {
                let mut waiting = self.waiting.lock().expect("lock poisoned");
                let queue = waiting.entry(req.language.clone()).or_default();
                let next = queue.pop_front();
                self.metrics.waiting(&req.language, queue.len());
                next
            };
            self.wake.notify_one();
            let Some(w) = next else {
                let why = if failed { Miss::Failed } else { Miss::Empty };
                self.metrics.miss(&req.language, why);
                return None;
            };
            match self.hand_over(w, sandbox).await {
                Ok(started) => {
                    self.metrics.hit(&req.language);
                    return Some(started);
                }
                Err(why) => {
                    tracing::info!(language = %req.language, why, "warm container not usable; trying the next");
                    failed = true;
                }
            }
        }
    }

    /// Takes the output of `w` from its watch, checks the container still runs, and makes it
    /// `sandbox`'s, under its pool name.
    async fn hand_over(
        &self,
        mut w: Waiting,
        sandbox: &mut Sandbox,
    ) -> Result<Started, &'static str> {
        let since = Instant::now();
        if w.dead() {
            w.discard("it died while waiting").await;
            return Err("it died while waiting");
        }
        if let Some(hand_over) = w.hand_over.take() {
            let _ = hand_over.send(());
        }
        let watch = w.watch.take();
        let stream = match watch {
            Some(watch) => watch.await.ok().flatten(),
            None => None,
        };
        let running = self
            .docker
            .inspect_container(&w.name, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state?.running)
            == Some(true);
        let (Some(stream), true, Some(input)) = (stream, running, w.input.take()) else {
            w.discard("it died while waiting").await;
            return Err("it died while waiting");
        };
        // The attempt's guard owns it from here (`w`'s drop no longer removes it); it stays
        // on the runner's list of sandboxes, so this worker's sweep spares it.
        let name = std::mem::take(&mut w.name);
        tracing::debug!(container = %name, "served from the warm pool");
        let generation = sandbox.kills.watch(&name);
        sandbox.id = Some(name);
        Ok(Started {
            stream,
            input,
            user: w.user,
            generation,
            since,
        })
    }

    /// Keeps every language at its size until stopped, then removes what waits.
    async fn refill_forever(self: Arc<Self>) {
        let mut retry_at: HashMap<String, (Instant, Duration)> = HashMap::new();
        while !self.stop.is_cancelled() {
            self.prune().await;
            let now = Instant::now();
            let short = {
                let waiting = self.waiting.lock().expect("lock poisoned");
                self.profiles
                    .iter()
                    .map(|(l, p)| (l, p, waiting.get(l).map_or(0, VecDeque::len)))
                    .filter(|(l, p, n)| {
                        *n < p.size && retry_at.get(*l).is_none_or(|(at, _)| *at <= now)
                    })
                    .min_by_key(|(_, _, n)| *n)
                    .map(|(l, p, _)| (l.clone(), p.clone()))
            };
            let Some((language, profile)) = short else {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(PRUNE_EVERY) => {}
                    () = self.stop.cancelled() => {}
                }
                continue;
            };
            let started = Instant::now();
            match self.make(&language, &profile).await {
                Ok(w) => {
                    retry_at.remove(&language);
                    self.metrics.refilled(&language, started.elapsed());
                    let mut waiting = self.waiting.lock().expect("lock poisoned");
                    let queue = waiting.entry(language.clone()).or_default();
                    queue.push_back(w);
                    self.metrics.waiting(&language, queue.len());
                }
                Err(error) => {
                    let backoff = retry_at
                        .get(&language)
                        .map_or(FIRST_BACKOFF, |(_, b)| (*b * 2).min(MAX_BACKOFF));
                    tracing::warn!(%language, %error, retry_in_s = backoff.as_secs(), "cannot make a warm container");
                    retry_at.insert(language, (Instant::now() + backoff, backoff));
                }
            }
        }
        self.empty().await;
    }

    /// Removes every waiting container.
    async fn empty(&self) {
        let left: Vec<Waiting> = {
            let mut waiting = self.waiting.lock().expect("lock poisoned");
            waiting.values_mut().flat_map(std::mem::take).collect()
        };
        for w in left {
            w.discard("the pool stopped").await;
        }
    }

    /// Removes the containers that died or waited longer than `warm.max_idle_s`.
    async fn prune(&self) {
        let max_idle = Duration::from_secs(self.cfg.docker.warm.max_idle_s);
        let mut gone = Vec::new();
        {
            let mut waiting = self.waiting.lock().expect("lock poisoned");
            for (language, queue) in waiting.iter_mut() {
                let before = queue.len();
                let (keep, stale): (VecDeque<_>, VecDeque<_>) = std::mem::take(queue)
                    .into_iter()
                    .partition(|w| !w.dead() && w.born.elapsed() < max_idle);
                *queue = keep;
                gone.extend(stale);
                if queue.len() != before {
                    self.metrics.waiting(language, queue.len());
                }
            }
        }
        for w in gone {
            let why = if w.dead() {
                "it died while waiting"
            } else {
                "it waited too long"
            };
            if w.dead() {
                tracing::info!(container = %w.name, "warm container died while waiting; replacing it");
            }
            w.discard(why).await;
        }
    }

    /// Creates, attaches and starts one warm container of `language`.
    async fn make(
        &self,
        language: &str,
        profile: &Profile,
    ) -> Result<Waiting, bollard::errors::Error> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{POOL_PREFIX}{}-{n}-{:08x}",
            name_safe(&self.worker_id),
            rand::random::<u32>()
        );
        let user = spec::attempt_user(&self.cfg.sandbox);
        let l = &profile.limits;
        let wall_s = self.cfg.docker.warm.max_idle_s
            + (l.compile_wall_time_ms + l.run_wall_time_ms) / 1000
            + DEADLINE_SLACK_S;
        let deadline =
            sandbox::unix_now_s().saturating_add(i64::try_from(wall_s).unwrap_or(i64::MAX));
        let labels = sandbox::pool_labels(&self.fleet, language, &self.worker_id, deadline);
        let body = spec::warm_body(&self.cfg, &profile.image, l, labels, user);
        // Known before it exists: this worker's sweep spares it, and a failure removes it.
        self.sandboxes.started(&name);
        let mut w = Waiting {
            name: name.clone(),
            user,
            input: None,
            born: Instant::now(),
            hand_over: None,
            watch: None,
            docker: self.docker.clone(),
            sandboxes: Arc::clone(&self.sandboxes),
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        self.docker.create_container(Some(options), body).await?;
        let AttachContainerResults { output, input } = self
            .docker
            .attach_container(&name, Some(attach_all()))
            .await?;
        self.docker
            .start_container(&name, None::<StartContainerOptions>)
            .await?;
        let (hand_over, handed) = oneshot::channel();
        w.input = Some(input);
        w.hand_over = Some(hand_over);
        w.watch = Some(tokio::spawn(watch(output, handed, Arc::clone(&self.wake))));
        Ok(w)
    }
}
