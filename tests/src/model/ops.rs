//! The model's actions: each one calls the real code (producer, worker queue, raw Redis), then
//! tells the model what the answer means.

use std::time::Duration;

use quayside_common::admission;
use quayside_common::protocol::DeadLetterReason;
use quayside_common::wire::{decode_spec, encode_spec};
use quayside_common::{JobId, JobKind, JobResult, JobSpec, Priority, Status};
use quayside_producer::{CancelOutcome, Error as ProducerError, ReplayOutcome};
use quayside_worker::queue::LogSource;
use quayside_worker::queue::{
    Charge, ClaimBatch, Completion, JobQueue, Lease, LeaseState, Retry, Write,
};

use super::world::LeaseKey;
use super::{Held, Sim, Step};

/// Names of the random actions, for `MODEL_WITHOUT` (e.g. `MODEL_WITHOUT=log,restart`), in the
/// order of [`WEIGHTS`].
pub const OPS: [&str; 21] = [
    "enqueue", "batch", "raw", "claim", "reclaim", "renew", "finish", "retry", "handback", "log",
    "promote", "time", "cancel", "status", "replay", "death", "ttl", "trim", "group", "restart",
    "repair",
];

/// Relative weights of the random actions, in the order of [`Sim::random_step`]'s match.
pub const WEIGHTS: [u32; 21] = [
    14, // enqueue one job
    5,  // enqueue a batch (sometimes again)
    6,  // raw XADD
    14, // claim
    5,  // reclaim
    8,  // renew
    12, // finish
    4,  // retry
    2,  // runner outage: hand everything back
    6,  // log write
    3,  // promote
    2,  // time passes (delayed retries fall due)
    4,  // cancel
    3,  // status
    3,  // replay a dead letter
    2,  // worker death
    4,  // a TTL runs out
    2,  // stream trim or entry delete
    1,  // consumer group lost
    1,  // redis restart (1 in ~3 of these)
    1,  // an operator runs `quayside check --repair` against the live queue
];

fn key(lease: &Lease, worker: &str) -> LeaseKey {
    (lease.entry.clone(), lease.token, worker.to_owned())
}

impl Sim<'_> {
    pub(super) async fn random_step(&mut self) -> Step {
        match self.rng.weighted(&self.weights) {
            0 => self.enqueue().await,
            1 => self.enqueue_batch().await,
            2 => self.raw_xadd().await,
            3 => {
                let w = self.any_worker();
                let n = 1 + self.rng.below(3);
                self.claim(w, n).await
            }
            4 => {
                let w = self.any_worker();
                let expired = self.rng.chance(60);
                self.reclaim(w, expired).await
            }
            5 => {
                let w = self.any_worker();
                self.renew(w).await
            }
            6 => match self.any_held() {
                Some((w, i)) => self.finish(w, i).await,
                None => Ok(()),
            },
            7 => match self.any_held() {
                Some((w, i)) => {
                    let refund = self.rng.chance(30);
                    let delay = if self.rng.chance(50) { 0 } else { 60_000 };
                    self.retry(w, i, delay, refund).await
                }
                None => Ok(()),
            },
            8 => {
                let w = self.any_worker();
                self.hand_back(w).await
            }
            9 => match self.any_held() {
                Some((w, i)) => self.log_write(w, i).await,
                None => Ok(()),
            },
            10 => self.promote().await,
            11 => self.time_passes().await,
            12 => self.cancel().await,
            13 => self.status().await,
            14 => self.replay().await,
            15 => {
                let w = self.any_worker();
                self.note(format!("{} dies", self.workers[w].name));
                self.workers[w] = self.new_worker();
                Ok(())
            }
            16 => self.ttl_runs_out().await,
            17 => self.trim().await,
            18 => self.lose_group().await,
            20 => self.repair().await,
            _ => {
                if self.rng.chance(35) {
                    self.restart_redis().await
                } else {
                    Ok(())
                }
            }
        }
    }

    fn any_worker(&mut self) -> usize {
        self.rng.below(self.workers.len())
    }

    fn any_held(&mut self) -> Option<(usize, usize)> {
        let all: Vec<(usize, usize)> = self
            .workers
            .iter()
            .enumerate()
            .flat_map(|(w, sw)| (0..sw.held.len()).map(move |i| (w, i)))
            .collect();
        self.rng.pick(&all).copied()
    }

    /// A known id (for duplicates, cancels, status), if any: half the time one of the last few
    /// started, as a client retrying a recent submission would.
    fn known_id(&mut self) -> Option<String> {
        let ids: Vec<String> = if self.rng.chance(50) {
            self.world.jobs.keys().cloned().collect()
        } else {
            self.world.recent.iter().cloned().collect()
        };
        self.rng.pick(&ids).cloned()
    }

    fn spec(&mut self, id: &str, batch: Option<&str>) -> JobSpec {
        let mut s = JobSpec::new(
            JobKind::Run,
            "script",
            [("job.txt".to_owned(), "print x".to_owned())].into(),
        );
        s.id = JobId::parse(id).expect("model ids are valid");
        s.batch = batch.map(str::to_owned);
        s.priority = *self.rng.pick(&Priority::ALL).expect("three priorities");
        match self.rng.below(24) {
            0 | 1 => s.result_ttl_s = Some(0),
            2 => s.language = "cobol".into(),
            3 | 4 => s.max_attempts = Some(1),
            _ => {}
        }
        s
    }

    async fn enqueue(&mut self) -> Step {
        let id = match self.known_id() {
            Some(id) if self.rng.chance(30) => id,
            _ => {
                self.counter += 1;
                format!("j{}", self.counter)
            }
        };
        if id.starts_with('b') {
            return Ok(()); // batch members are enqueued with their batch
        }
        let spec = self.spec(&id, None);
        let r = self.producer.enqueue(&spec).await;
        self.note(format!("enqueue {id} ttl={:?} -> {r:?}", spec.result_ttl_s));
        match r {
            // The producer checks the TTL floor at the door: nothing is written (the keyspace
            // check after this step proves it). Raw producers still send such specs.
            Err(ProducerError::Invalid(_)) if self.below_ttl_floor(&[spec]) => Ok(()),
            // A raw entry of this id not yet seen by anyone: the record now made is that job's
            // (the raw entry is dropped as a duplicate when claimed).
            Ok(e)
                if e.created
                    && self
                        .world
                        .job(&id)
                        .is_some_and(|j| j.live && j.raw_unrecorded) =>
            {
                self.world.recorded(&id);
                Ok(())
            }
            Ok(e) if e.created => self.world.started(&id, false, None),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("enqueue {id}: {e}")),
        }
    }

    /// A batch `b<k>` of 1-4 jobs `b<k>-<i>`; one time in three a batch enqueued before, again
    /// (as `quayside batch` re-run with the same batch id does).
    async fn enqueue_batch(&mut self) -> Step {
        let known: Vec<String> = self
            .world
            .batches
            .keys()
            .cloned()
            .chain(self.world.jobs.values().filter_map(|j| j.batch.clone()))
            .collect();
        let (b, size) = match self.rng.pick(&known).cloned() {
            Some(b) if self.rng.chance(35) => {
                let size = self.batch_size(&b);
                (b, size)
            }
            _ => {
                self.counter += 1;
                (format!("b{}", self.counter), 1 + self.rng.below(4))
            }
        };
        let specs: Vec<JobSpec> = (0..size)
            .map(|i| self.spec(&format!("{b}-{i}"), Some(&b)))
            .collect();
        let r = self.producer.enqueue_many(&specs).await;
        self.note(format!(
            "enqueue batch {b} x{size} -> {:?}",
            r.as_ref()
                .map(|v| v.iter().map(|e| e.created).collect::<Vec<_>>())
        ));
        let out = match r {
            Err(ProducerError::Invalid(_)) if self.below_ttl_floor(&specs) => return Ok(()),
            r => r.map_err(|e| format!("enqueue batch {b}: {e}"))?,
        };
        for (s, e) in specs.iter().zip(out) {
            if e.created {
                self.world.started(s.id.as_str(), false, Some(&b))?;
            }
        }
        Ok(())
    }

    /// Some spec asks for a result TTL under `queue.min_result_ttl_s`, which the producer refuses.
    fn below_ttl_floor(&self, specs: &[JobSpec]) -> bool {
        let floor = self.cfg.queue.min_result_ttl_s;
        specs
            .iter()
            .any(|s| s.result_ttl_s.is_some_and(|t| t < floor))
    }

    fn batch_size(&self, b: &str) -> usize {
        let prefix = format!("{b}-");
        self.world
            .jobs
            .keys()
            .filter(|id| id.starts_with(&prefix))
            .count()
            .max(1)
    }

    /// A raw producer's `XADD`: a well-formed entry (new or duplicate id), or one of the
    /// malformed kinds the protocol promises to dead-letter.
    async fn raw_xadd(&mut self) -> Step {
        let prio = 1 + self.rng.below(3);
        let stream = self.keys.streams()[prio - 1].clone();
        let kind = self.rng.below(12);
        let id = match self.known_id() {
            Some(id) if kind == 1 && !id.starts_with('b') => id,
            _ => {
                self.counter += 1;
                format!("r{}", self.counter)
            }
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg("*");
        let what = match kind {
            0..=6 => {
                let spec = encode_spec(&self.spec(&id, None));
                cmd.arg("id").arg(&id).arg("job").arg(spec);
                "well-formed"
            }
            7 => {
                cmd.arg("job").arg("{}");
                "no id"
            }
            8 => {
                cmd.arg("id")
                    .arg(format!("bad id {id}!"))
                    .arg("job")
                    .arg("{}");
                "invalid id"
            }
            9 => {
                cmd.arg("id").arg(&id).arg("job").arg("{not json");
                "not json"
            }
            10 => {
                let mut spec = self.spec(&id, None);
                spec.id = JobId::parse("someone-else").expect("valid");
                cmd.arg("id").arg(&id).arg("job").arg(encode_spec(&spec));
                "id mismatch"
            }
            _ => {
                cmd.arg("id").arg(&id);
                "no job field"
            }
        };
        let had_record: bool = redis::cmd("EXISTS")
            .arg(self.keys.job(&JobId::parse(&id).expect("valid")))
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("EXISTS: {e}"))?;
        let entry: String = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("XADD: {e}"))?;
        self.note(format!("raw XADD {id} ({what}) p{prio} -> {entry}"));
        let is_job = !matches!(what, "no id" | "invalid id" | "no job field");
        let live = self.world.job(&id).is_some_and(|j| j.live);
        if is_job && !had_record && !live {
            self.world.started(&id, true, None)?;
        }
        Ok(())
    }

    pub(super) async fn claim(&mut self, w: usize, n: usize) -> Step {
        let r = self.workers[w].queue.claim(n, &Priority::ALL).await;
        self.claimed(w, "claim", r).await
    }

    pub(super) async fn reclaim(&mut self, w: usize, expired: bool) -> Step {
        let idle = if expired { 0 } else { self.cfg.worker.lease_ms };
        let r = self.workers[w].queue.reclaim(8, idle).await;
        self.claimed(
            w,
            if expired {
                "reclaim(expired)"
            } else {
                "reclaim"
            },
            r,
        )
        .await
    }

    async fn claimed(
        &mut self,
        w: usize,
        what: &str,
        r: Result<ClaimBatch, quayside_worker::queue::QueueError>,
    ) -> Step {
        let name = self.workers[w].name.clone();
        let batch = match r {
            Ok(b) => b,
            Err(e) => {
                // A worker logs this and tries again later; nothing was handed to it.
                self.note(format!("{name} {what} failed: {e}"));
                return Ok(());
            }
        };
        self.note(format!(
            "{name} {what} -> {:?} dropped {:?}",
            batch
                .claimed
                .iter()
                .map(|c| format!("{}@{}#{}", c.lease.job_id, c.lease.entry, c.lease.token))
                .collect::<Vec<_>>(),
            batch
                .dropped
                .iter()
                .map(|d| format!("{}:{}", d.entry, d.reason))
                .collect::<Vec<_>>()
        ));
        for c in batch.claimed {
            self.world.claimed(&c.lease.job_id, key(&c.lease, &name))?;
            let cancel = c.cancel_requested;
            self.workers[w].held.push(Held { claimed: c, cancel });
        }
        Ok(())
    }

    pub(super) async fn renew(&mut self, w: usize) -> Step {
        let name = self.workers[w].name.clone();
        let leases: Vec<Lease> = self.workers[w]
            .held
            .iter()
            .map(|h| h.claimed.lease.clone())
            .collect();
        if leases.is_empty() {
            return Ok(());
        }
        let states = match self.workers[w].queue.renew(&leases).await {
            Ok(s) => s,
            Err(e) => {
                self.note(format!("{name} renew failed: {e}"));
                return Ok(());
            }
        };
        self.note(format!("{name} renew -> {states:?}"));
        let mut keep = Vec::new();
        for (h, state) in std::mem::take(&mut self.workers[w].held)
            .into_iter()
            .zip(states)
        {
            let id = h.claimed.lease.job_id.clone();
            let k = key(&h.claimed.lease, &name);
            match state {
                LeaseState::Lost | LeaseState::Requeued => continue,
                LeaseState::Held => self.world.fenced_write_taken(&id, &k, "renew")?,
                LeaseState::CancelRequested => {
                    self.world.fenced_write_taken(&id, &k, "renew")?;
                    keep.push(Held { cancel: true, ..h });
                    continue;
                }
            }
            keep.push(h);
        }
        self.workers[w].held = keep;
        Ok(())
    }

    /// What the executor would conclude for a claimed job: rejected if its spec does not pass
    /// (with the worker's default TTL), cancelled if asked, dead past its attempts, else a
    /// program verdict.
    fn outcome(&mut self, h: &Held) -> (JobResult, u64, Option<DeadLetterReason>) {
        let c = &h.claimed;
        let q = &self.cfg.queue;
        // As the executor does: the entry's id, or a fresh one when it is not a valid id.
        let id = JobId::parse(&c.lease.job_id).unwrap_or_else(|_| JobId::generate());
        let spec = decode_spec(&c.spec_json)
            .map_err(|e| (e.reason(), e.to_string()))
            .and_then(|s| {
                if s.id.as_str() == c.lease.job_id {
                    Ok(s)
                } else {
                    Err((DeadLetterReason::IdMismatch, "id mismatch".into()))
                }
            })
            .and_then(|s| {
                admission::check(&self.cfg, &s)
                    .map(|()| s)
                    .map_err(|e| (DeadLetterReason::InvalidSpec, e.to_string()))
            });
        let spec = match spec {
            Ok(s) => s,
            Err((reason, msg)) => {
                let r = JobResult::without_output(id, Status::Rejected, Some(msg), c.attempts);
                return (r, q.default_result_ttl_s, Some(reason));
            }
        };
        let ttl = spec.result_ttl_s.unwrap_or(q.default_result_ttl_s);
        let max = spec.max_attempts.unwrap_or(q.default_max_attempts);
        let (status, reason) = if h.cancel {
            (Status::Cancelled, None)
        } else if c.attempts > max {
            (Status::Dead, Some(DeadLetterReason::AttemptsExhausted))
        } else {
            let verdicts = [
                Status::Succeeded,
                Status::Succeeded,
                Status::Failed,
                Status::CompileError,
                Status::TimedOut,
            ];
            (*self.rng.pick(&verdicts).expect("verdicts"), None)
        };
        let error = reason.map(|r| r.as_str().to_owned());
        (
            JobResult::without_output(id, status, error, c.attempts),
            ttl,
            reason,
        )
    }

    pub(super) async fn finish(&mut self, w: usize, i: usize) -> Step {
        let name = self.workers[w].name.clone();
        let h = self.workers[w].held.remove(i);
        let (result, ttl, reason) = self.outcome(&h);
        let lease = h.claimed.lease.clone();
        let mut done = Completion::new(&lease, &result, ttl);
        let error = result.error.clone().unwrap_or_default();
        if let Some(reason) = reason {
            done = done.dead_letter(reason, &error);
        }
        let r = self.workers[w].queue.finish(done).await;
        self.note(format!(
            "{name} finish {}@{}#{} {} ttl={ttl} -> {r:?}",
            lease.job_id, lease.entry, lease.token, result.status
        ));
        match r {
            Ok(Write::Taken) => {
                self.world
                    .fenced_write_taken(&lease.job_id, &key(&lease, &name), "finish")?;
                self.world.ended(&lease.job_id, result.status)
            }
            Ok(Write::Fenced) => Ok(()),
            // The worker would retry the write; the model's worker keeps the job for later.
            Err(_) => {
                self.workers[w].held.push(h);
                Ok(())
            }
        }
    }

    async fn retry(&mut self, w: usize, i: usize, delay_ms: u64, refund: bool) -> Step {
        let name = self.workers[w].name.clone();
        let h = self.workers[w].held.remove(i);
        let lease = h.claimed.lease.clone();
        let r = self.workers[w]
            .queue
            .retry(
                &lease,
                Retry {
                    delay_ms,
                    error: "runner failed",
                    charge: if refund {
                        Charge::Refund
                    } else {
                        Charge::Attempt
                    },
                },
            )
            .await;
        self.note(format!(
            "{name} retry {}@{}#{} delay={delay_ms} refund={refund} -> {r:?}",
            lease.job_id, lease.entry, lease.token
        ));
        match r {
            Ok(Write::Taken) => {
                self.world
                    .fenced_write_taken(&lease.job_id, &key(&lease, &name), "retry")?;
                self.world.handed_back(&lease.job_id);
                Ok(())
            }
            Ok(Write::Fenced) => Ok(()),
            Err(_) => {
                self.workers[w].held.push(h);
                Ok(())
            }
        }
    }

    /// The runner went away: every job this worker holds goes back without spending an attempt
    /// (the drain hand-back).
    async fn hand_back(&mut self, w: usize) -> Step {
        while !self.workers[w].held.is_empty() {
            self.retry(w, 0, 0, true).await?;
        }
        Ok(())
    }

    async fn log_write(&mut self, w: usize, i: usize) -> Step {
        let name = self.workers[w].name.clone();
        let id = self.workers[w].held[i].claimed.lease.job_id.clone();
        let Ok(job) = JobId::parse(&id) else {
            return Ok(());
        };
        let lease = self.workers[w].held[i].claimed.lease.clone();
        let sink = self.workers[w].queue.log_sink(&job, &lease);
        sink.write(LogSource::Stdout, b"line\n").await;
        self.note(format!("{name} log {id} -> {}", sink.wrote()));
        Ok(())
    }

    pub(super) async fn promote(&mut self) -> Step {
        let r = self.workers[0].queue.promote(1000).await;
        self.note(format!("promote -> {r:?}"));
        Ok(())
    }

    /// Time passes: every delayed retry falls due.
    pub(super) async fn time_passes(&mut self) -> Step {
        let due: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.delayed())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("ZRANGE: {e}"))?;
        for id in &due {
            let _: i64 = redis::cmd("ZADD")
                .arg(self.keys.delayed())
                .arg("XX")
                .arg(0)
                .arg(id)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| format!("ZADD: {e}"))?;
        }
        self.note(format!("time passes: {} retries due", due.len()));
        Ok(())
    }

    async fn cancel(&mut self) -> Step {
        let Some(id) = self.known_id() else {
            return Ok(());
        };
        let job = JobId::parse(&id).expect("valid");
        let r = self.producer.cancel(&job).await;
        self.note(format!("cancel {id} -> {r:?}"));
        let model = self.world.job(&id).cloned().unwrap_or_default();
        match r {
            Ok(CancelOutcome::Cancelled) => self.world.ended(&id, Status::Cancelled),
            Ok(CancelOutcome::Requested) if model.live => Ok(()),
            Ok(CancelOutcome::Requested) => Err(format!("{id}: cancel says running, it ended")),
            Ok(CancelOutcome::AlreadyTerminal { status }) => {
                if model.live || model.terminal != Some(status) {
                    Err(format!("{id}: cancel says {status}, model {model:?}"))
                } else {
                    Ok(())
                }
            }
            Err(ProducerError::NotFound(_)) if model.live && !model.lost => Err(format!(
                "{id}: cancel cannot find a job that has not ended ({model:?})"
            )),
            Err(ProducerError::NotFound(_)) => Ok(()),
            Err(e) => Err(format!("cancel {id}: {e}")),
        }
    }

    async fn status(&mut self) -> Step {
        let Some(id) = self.known_id() else {
            return Ok(());
        };
        let r = self
            .producer
            .status(&JobId::parse(&id).expect("valid"))
            .await;
        let model = self.world.job(&id).cloned().unwrap_or_default();
        self.note(format!(
            "status {id} -> {:?}",
            r.as_ref().map(|s| s.as_ref().map(|s| s.state))
        ));
        match r {
            Ok(None) if model.live && !model.lost => Err(format!(
                "{id}: status cannot see a job that has not ended ({model:?})"
            )),
            Ok(Some(st)) if st.state.is_terminal() == model.live => {
                Err(format!("{id}: status says {}, model {model:?}", st.state))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(format!("status {id}: {e}")),
        }
    }

    async fn replay(&mut self) -> Step {
        let letters = self
            .producer
            .dlq_list(200)
            .await
            .map_err(|e| format!("dlq list: {e}"))?;
        let Some(letter) = self.rng.pick(&letters).cloned() else {
            return Ok(());
        };
        let existed = match JobId::parse(&letter.job_id) {
            Ok(id) => redis::cmd("EXISTS")
                .arg(self.keys.job(&id))
                .query_async::<bool>(&mut self.conn)
                .await
                .map_err(|e| format!("EXISTS: {e}"))?,
            Err(_) => false,
        };
        let r = self.producer.dlq_replay(&letter.entry).await;
        self.note(format!(
            "replay {} ({}, {}) -> {r:?}",
            letter.entry, letter.job_id, letter.reason
        ));
        match r {
            Ok(ReplayOutcome::Queued) => {
                if JobId::parse(&letter.job_id).is_err() {
                    return Err(format!(
                        "replay queued {:?}, which is not a valid job id",
                        letter.job_id
                    ));
                }
                self.world.replayed(&letter.job_id, existed)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(format!("replay: {e}")),
        }
    }

    /// A TTL runs out: a job's record or log, or a batch's counters and members, expires.
    /// Time enough has passed for every stale worker of that job to have given up.
    async fn ttl_runs_out(&mut self) -> Step {
        // So much time passes that workers have run their upkeep (promote and adopt) meanwhile.
        self.promote().await?;
        let keys = super::inspect::inspect(&mut self.conn, self.keys.prefix())
            .await
            .map_err(|e| format!("inspect: {e}"))?;
        let expiring: Vec<String> = keys
            .values()
            .filter(|k| k.pttl > 0 && !k.name.starts_with("batch-jobs:"))
            .map(|k| k.name.clone())
            .collect();
        let Some(name) = self.rng.pick(&expiring).cloned() else {
            return Ok(());
        };
        // A key's companions share its TTL: a batch's counters and members, a job's record and
        // log (both set when it ends).
        let mut doomed = vec![name.clone()];
        if let Some(b) = name.strip_prefix("batch:") {
            doomed.push(format!("batch-jobs:{b}"));
        }
        if let Some(id) = name.strip_prefix("job:") {
            doomed.push(format!("logs:{id}"));
        }
        if let Some(id) = name.strip_prefix("logs:") {
            // A live job's record has no TTL; an ended one's expires with its log.
            if keys.get(&format!("job:{id}")).is_some_and(|r| r.pttl > 0) {
                doomed.push(format!("job:{id}"));
            }
        }
        for k in &doomed {
            let _: i64 = redis::cmd("PEXPIRE")
                .arg(format!("{}{k}", self.keys.prefix()))
                .arg(1)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| format!("PEXPIRE: {e}"))?;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.note(format!("TTL runs out: {doomed:?}"));
        if let Some(b) = name.strip_prefix("batch:") {
            self.world.batch_expired(b);
        } else if let Some(id) = name
            .strip_prefix("job:")
            .or_else(|| name.strip_prefix("logs:"))
        {
            for w in &mut self.workers {
                w.held.retain(|h| h.claimed.lease.job_id != id);
            }
        }
        Ok(())
    }

    /// An operator or raw producer trims a job stream or deletes an entry.
    async fn trim(&mut self) -> Step {
        let stream = self.keys.streams()[self.rng.below(3)].clone();
        let before = self.entries(&stream).await?;
        let what = match self.rng.below(3) {
            0 => {
                let n = self.rng.below(3);
                let _: i64 = redis::cmd("XTRIM")
                    .arg(&stream)
                    .arg("MAXLEN")
                    .arg(n)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(|e| format!("XTRIM: {e}"))?;
                format!("XTRIM {stream} MAXLEN {n}")
            }
            1 => {
                let ids = self.entries(&stream).await?;
                match self.rng.pick(&ids).cloned() {
                    Some((entry, _)) => {
                        let _: i64 = redis::cmd("XDEL")
                            .arg(&stream)
                            .arg(&entry)
                            .query_async(&mut self.conn)
                            .await
                            .map_err(|e| format!("XDEL: {e}"))?;
                        format!("XDEL {stream} {entry}")
                    }
                    None => return Ok(()),
                }
            }
            _ => {
                self.counter += 1;
                let id = format!("r{}", self.counter);
                let spec = encode_spec(&self.spec(&id, None));
                let _: String = redis::cmd("XADD")
                    .arg(&stream)
                    .arg("MAXLEN")
                    .arg(1)
                    .arg("*")
                    .arg("id")
                    .arg(&id)
                    .arg("job")
                    .arg(spec)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(|e| format!("XADD MAXLEN: {e}"))?;
                self.world.started(&id, true, None)?;
                format!("raw XADD {id} MAXLEN 1 to {stream}")
            }
        };
        let after = self.entries(&stream).await?;
        let gone: Vec<String> = before
            .into_iter()
            .filter(|e| !after.contains(e))
            .map(|(entry, id)| format!("{id}@{entry}"))
            .collect();
        self.note(format!("{what}: deleted {gone:?}"));
        self.forget_destroyed().await
    }

    /// The consumer group of a stream is destroyed, or the whole stream is deleted.
    async fn lose_group(&mut self) -> Step {
        let stream = self.keys.streams()[self.rng.below(3)].clone();
        if self.rng.chance(50) {
            // An error (no such stream) is what the operator would see too.
            let r: redis::RedisResult<redis::Value> = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(&stream)
                .arg("workers")
                .query_async(&mut self.conn)
                .await;
            drop(r);
            self.note(format!("XGROUP DESTROY {stream}"));
        } else {
            let _: i64 = redis::cmd("DEL")
                .arg(&stream)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| format!("DEL: {e}"))?;
            self.note(format!("DEL {stream}"));
        }
        self.forget_destroyed().await
    }

    async fn entries(&mut self, stream: &str) -> Result<Vec<(String, String)>, String> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("XRANGE: {e}"))?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| {
                let id = match e.map.get("id") {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                (e.id, id)
            })
            .collect())
    }

    /// Raw jobs whose only trace, their entry, is gone and that have no record: the operator
    /// destroyed them, and the protocol cannot bring them back.
    async fn forget_destroyed(&mut self) -> Step {
        let mut present = std::collections::BTreeSet::new();
        for stream in self.keys.streams() {
            for (_, id) in self.entries(&stream).await? {
                present.insert(id);
            }
        }
        let raw: Vec<String> = self
            .world
            .jobs
            .iter()
            .filter(|(_, j)| j.live && j.raw_unrecorded)
            .map(|(id, _)| id.clone())
            .collect();
        for id in raw {
            let has_record: bool = redis::cmd("EXISTS")
                .arg(self.keys.job(&JobId::parse(&id).expect("valid")))
                .query_async(&mut self.conn)
                .await
                .map_err(|e| format!("EXISTS: {e}"))?;
            if !has_record && !present.contains(&id) {
                self.note(format!("{id} destroyed before any worker saw it"));
                self.world.forget_lost(&id);
            }
        }
        Ok(())
    }

    /// SIGKILL and restart the private redis-server (AOF `always`: nothing acknowledged is lost),
    /// then wait until every client has reconnected.
    async fn restart_redis(&mut self) -> Step {
        self.redis.kill();
        self.redis
            .restart()
            .map_err(|e| format!("restart redis: {e:#}"))?;
        self.restarts += 1;
        self.note("redis SIGKILLed and restarted".into());
        self.conn = self
            .client
            .dedicated()
            .await
            .map_err(|e| format!("reconnect: {e}"))?;
        let mut last = String::new();
        for _ in 0..100 {
            let q = self.workers[0].queue.ping().await;
            let p = self.producer.stats().await;
            match (q, p) {
                (Ok(()), Ok(_)) => return Ok(()),
                (q, p) => last = format!("{q:?} {:?}", p.map(|_| ())),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "clients did not reconnect after the restart: {last}"
        ))
    }

    /// An operator runs `quayside check --repair`: jobs that can no longer reach their next
    /// step (entry trimmed or deleted, group lost) are queued again.
    pub(super) async fn repair(&mut self) -> Step {
        let r = self.producer.check(true).await;
        self.note(format!(
            "check --repair -> {:?}",
            r.as_ref().map(|r| &r.findings)
        ));
        r.map(drop).map_err(|e| format!("check: {e}"))
    }
}
