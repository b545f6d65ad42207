//! A randomized model test of the queue protocol. It drives the real Lua scripts on a real
//! redis-server through random interleavings of what producers, workers and operators do, and
//! after every step compares the whole keyspace with a small in-memory model of what must hold:
//! at most one terminal result per job (exactly one once the queue settles), fenced writes taken
//! only from the current lease holder, batch counters equal to the model's, no key without a TTL
//! but the queue's fixed keys and what live jobs and batches hold, nothing pending at rest.
//!
//! - [`rng`]: the seeded generator, so `MODEL_SEED` replays a run exactly.
//! - [`world`]: the model and its invariants.
//! - [`ops`]: the actions (enqueue, claim, renew, finish, trims, group loss, restarts...).
//! - [`inspect`]: one script call that reads every key of the queue.
//!
//! Workers are simulated: each is a real [`RedisQueue`] (the worker's own queue code) with a
//! consumer name of its own, deciding each job's outcome the way the executor does. Time is
//! driven explicitly: a lease expires when a reclaim uses an idle threshold of 0, a delayed retry
//! falls due when its score is moved to 0, a TTL runs out when the key gets a 1 ms TTL.

pub mod inspect;
mod ops;
pub mod rng;
pub mod world;

use std::collections::VecDeque;
use std::sync::Arc;

use quayside_common::config::{Config, LanguageConfig};
use quayside_common::connection::Redis;
use quayside_common::Keys;
use quayside_producer::Producer;
use quayside_worker::queue::{Claimed, JobQueue as _, RedisQueue};

use crate::PrivateRedis;
use rng::Rng;
use world::World;

/// Steps between two settlings of the queue (each followed by the at-rest checks).
const EPOCH: usize = 250;
/// Steps between two progress lines (soaks run for a long time).
const PROGRESS: usize = 50_000;
/// Operations kept for the report of a violation: the last [`SHOWN`] of them, and the earlier
/// ones that name a job the violation names.
const RECENT: usize = 2_000;
const SHOWN: usize = 30;

/// An invariant that did not hold.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: usize,
    pub what: String,
    pub recent: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} step {}: {}\nreplay with MODEL_SEED={} (same MODEL_STEPS)\nlast operations:",
            self.seed, self.step, self.what, self.seed
        )?;
        for op in &self.recent {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// What a run did, for the test's output.
#[derive(Debug, Default)]
pub struct Stats {
    pub steps: usize,
    /// Job lives started (enqueue, raw entry, replay) and terminal results written.
    pub lives: u64,
    pub results: u64,
    /// Times the queue was settled and checked at rest.
    pub epochs: usize,
    pub redis_restarts: usize,
}

struct Held {
    claimed: Claimed,
    cancel: bool,
}

struct SimWorker {
    name: String,
    queue: RedisQueue,
    held: Vec<Held>,
}

pub(crate) struct Sim<'r> {
    redis: &'r mut PrivateRedis,
    seed: u64,
    cfg: Config,
    keys: Keys,
    producer: Producer,
    client: Arc<Redis>,
    conn: quayside_common::connection::Connection,
    workers: Vec<SimWorker>,
    world: World,
    rng: Rng,
    recent: VecDeque<String>,
    step: usize,
    counter: usize,
    restarts: usize,
    weights: [u32; 21],
}

type Step = Result<(), String>;

/// The configuration every simulated process shares: the test's `script` language only.
fn config(url: &str, queue: &str) -> Config {
    let mut cfg = Config::default();
    cfg.redis.url = url.to_owned();
    cfg.queue.name = queue.to_owned();
    let script: LanguageConfig =
        serde_json::from_value(serde_json::json!({ "image": "none" })).expect("language");
    cfg.languages = [("script".to_owned(), script)].into();
    cfg.validate().expect("model config is valid");
    cfg
}

/// The actions' weights with those named in `without` (comma-separated, see [`ops::OPS`])
/// left out, to narrow a failing run down.
///
/// # Panics
/// A name that is not an action.
pub fn weights(without: &str) -> [u32; 21] {
    let mut w = ops::WEIGHTS;
    for name in without.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let i = ops::OPS
            .iter()
            .position(|o| *o == name)
            .unwrap_or_else(|| panic!("no action {name:?}; actions: {}", ops::OPS.join(",")));
        w[i] = 0;
    }
    w
}

/// Runs `steps` random steps from `seed` against `redis` (flushed first), settling the queue
/// every [`EPOCH`] steps and at the end; `weights` from [`weights`].
///
/// # Errors
/// The first invariant that did not hold, with the operations that led to it.
pub async fn run(
    redis: &mut PrivateRedis,
    seed: u64,
    steps: usize,
    weights: [u32; 21],
) -> Result<Stats, Violation> {
    let url = redis.url();
    let queue = format!("model-{seed}");
    let cfg = config(&url, &queue);
    let client = Arc::new(Redis::new(&cfg.redis).expect("redis config"));
    let mut conn = client.dedicated().await.expect("connect");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");
    let mut sim = Sim {
        seed,
        keys: Keys::new(&queue).expect("queue name"),
        producer: Producer::new(&cfg).expect("producer"),
        client,
        conn,
        workers: Vec::new(),
        world: World::default(),
        rng: Rng::new(seed),
        recent: VecDeque::new(),
        step: 0,
        counter: 0,
        restarts: 0,
        weights,
        cfg,
        redis,
    };
    let n_workers = 2 + sim.rng.below(2);
    for _ in 0..n_workers {
        let w = sim.new_worker();
        sim.workers.push(w);
    }
    sim.workers[0]
        .queue
        .prepare()
        .await
        .map_err(|e| sim.violation(format!("prepare: {e}")))?;
    let mut epochs = 0;
    while sim.step < steps {
        sim.step += 1;
        let r = sim.random_step().await;
        sim.checked(r).await?;
        if sim.step % EPOCH == 0 || sim.step == steps {
            let r = sim.settle().await;
            sim.checked(r).await?;
            epochs += 1;
        }
        if sim.step % PROGRESS == 0 {
            eprintln!(
                "model test: seed {seed}: {} of {steps} steps, {} lives, {} results, {} redis restarts",
                sim.step, sim.world.started, sim.world.results, sim.restarts
            );
        }
    }
    Ok(Stats {
        steps,
        lives: sim.world.started,
        results: sim.world.results,
        epochs,
        redis_restarts: sim.restarts,
    })
}

impl Sim<'_> {
    fn new_worker(&mut self) -> SimWorker {
        self.counter += 1;
        let name = format!("w{}", self.counter);
        SimWorker {
            queue: RedisQueue::new(
                Arc::clone(&self.client),
                self.keys.clone(),
                self.cfg.queue.clone(),
                name.clone(),
            ),
            name,
            held: Vec::new(),
        }
    }

    fn note(&mut self, op: String) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{:>6} {op}", self.step));
    }

    fn violation(&self, what: String) -> Violation {
        let named: Vec<&str> = what
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| self.world.jobs.contains_key(*w))
            .collect();
        let last = self.recent.len().saturating_sub(SHOWN);
        let recent = self
            .recent
            .iter()
            .enumerate()
            .filter(|(i, op)| {
                *i >= last
                    || named.iter().any(|id| {
                        op.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                            .any(|w| w == *id)
                    })
            })
            .map(|(_, op)| op.clone())
            .collect();
        Violation {
            seed: self.seed,
            step: self.step,
            what,
            recent,
        }
    }

    /// The step's own outcome, then the whole keyspace against the model.
    async fn checked(&mut self, step: Step) -> Result<(), Violation> {
        step.map_err(|e| self.violation(e))?;
        if std::env::var("MODEL_NOCHECK").is_ok() {
            return Ok(());
        }
        let r = self.check(false).await;
        r.map_err(|e| self.violation(e))
    }

    async fn check(&mut self, at_rest: bool) -> Step {
        let keys = inspect::inspect(&mut self.conn, self.keys.prefix())
            .await
            .map_err(|e| format!("inspect: {e}"))?;
        let prefix = self.keys.prefix().to_owned();
        let fixed: Vec<String> = self
            .keys
            .fixed()
            .iter()
            .map(|k| k.trim_start_matches(&prefix).to_owned())
            .collect();
        self.world.check(&keys, &fixed, at_rest)
    }

    /// Drives the queue to rest: workers finish what they still hold, due retries are promoted,
    /// a fresh worker takes over every pending entry and runs everything left. Then the at-rest
    /// checks.
    async fn settle(&mut self) -> Step {
        self.note("settle".into());
        for _ in 0..12 {
            for w in 0..self.workers.len() {
                self.renew(w).await?;
                while !self.workers[w].held.is_empty() {
                    self.finish(w, 0).await?;
                }
            }
            self.time_passes().await?;
            self.promote().await?;
            self.repair().await?;
            let sweeper = self.new_worker();
            self.workers.push(sweeper);
            let w = self.workers.len() - 1;
            loop {
                let before = self.workers[w].held.len();
                self.reclaim(w, true).await?;
                self.claim(w, 16).await?;
                if self.workers[w].held.len() == before {
                    break;
                }
                while !self.workers[w].held.is_empty() {
                    self.finish(w, 0).await?;
                }
            }
            self.workers.pop();
            self.check(false).await?;
            if self.world.unsettled().is_empty() && self.check(true).await.is_ok() {
                break;
            }
        }
        self.check(true).await?;
        self.everything_expires().await
    }

    /// A day passes: every key with a TTL expires, every stale worker has long given up. Keeps
    /// the keyspace (and so each step's inspection) small over long runs.
    async fn everything_expires(&mut self) -> Step {
        self.promote().await?;
        let keys = inspect::inspect(&mut self.conn, self.keys.prefix())
            .await
            .map_err(|e| format!("inspect: {e}"))?;
        let mut pipe = redis::pipe();
        for k in keys.values().filter(|k| k.pttl > 0) {
            pipe.cmd("DEL")
                .arg(format!("{}{}", self.keys.prefix(), k.name))
                .ignore();
            if let Some(b) = k.name.strip_prefix("batch:") {
                self.world.batch_expired(b);
            }
        }
        let _: () = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("expire all: {e}"))?;
        for w in &mut self.workers {
            w.held.clear();
        }
        // Ended jobs whose keys are gone are no longer the model's business.
        self.world.jobs.retain(|_, j| j.live);
        // Keep the AOF as small as the data, so the next restart loads it quickly (a long run
        // would otherwise replay every write since the start at each restart). One already in
        // progress answers an error: that one does the job.
        let rewrite: redis::RedisResult<redis::Value> =
            redis::cmd("BGREWRITEAOF").query_async(&mut self.conn).await;
        drop(rewrite);
        self.note("a day passes: every TTL runs out".into());
        Ok(())
    }
}
