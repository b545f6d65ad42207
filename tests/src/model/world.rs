//! The in-memory model: what must be true of each job and batch, learned only from the answers
//! the scripts gave, and the invariants checked against what Redis holds.

use std::collections::BTreeMap;

use quayside_common::{JobId, JobResult, Status};

use super::inspect::KeyView;

/// A claimed attempt as the model names it: entry, token and the claiming worker.
pub type LeaseKey = (String, u64, String);

/// One job id. Each enqueue that creates a record (or raw entry that starts one, or replay)
/// begins a new life; every life must end with exactly one terminal result.
#[derive(Clone, Debug, Default)]
pub struct Job {
    pub lives: u32,
    /// The current life has not ended yet.
    pub live: bool,
    /// How the current (or last) life ended.
    pub terminal: Option<Status>,
    /// The lease of the latest claim of the current life: the only one whose fenced writes may
    /// be taken.
    pub holder: Option<LeaseKey>,
    /// Started by a raw `XADD` and no record seen yet.
    pub raw_unrecorded: bool,
    /// The batch the current life counts in.
    pub batch: Option<String>,
    /// Its only trace (a raw entry, no record) was destroyed by the operator: nothing can end it.
    pub lost: bool,
}

/// One batch: its members in enqueue order and how each ended (`None`: not yet).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub members: Vec<String>,
    pub ended: BTreeMap<String, Option<Status>>,
}

impl Batch {
    fn remaining(&self) -> usize {
        self.ended.values().filter(|s| s.is_none()).count()
    }
}

#[derive(Clone, Debug, Default)]
pub struct World {
    pub jobs: BTreeMap<String, Job>,
    pub batches: BTreeMap<String, Batch>,
    /// Every batch id made over the run, expired ones too (the recent-batches list keeps them).
    pub made_batches: std::collections::BTreeSet<String>,
    /// The last few ids whose life started, newest last.
    pub recent: std::collections::VecDeque<String>,
    /// Lives started and terminal results written, over the whole run.
    pub started: u64,
    pub results: u64,
}

pub type Check = Result<(), String>;

fn fail<T>(msg: String) -> Result<T, String> {
    Err(msg)
}

impl World {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// A new life for `id`: enqueued (`raw` false), or raw `XADD` with no record.
    pub fn started(&mut self, id: &str, raw: bool, batch: Option<&str>) -> Check {
        let job = self.jobs.entry(id.to_owned()).or_default();
        if job.live {
            return fail(format!(
                "{id}: a second life started while the first is live"
            ));
        }
        job.lives += 1;
        job.live = true;
        self.started += 1;
        if self.recent.len() == 6 {
            self.recent.pop_front();
        }
        self.recent.push_back(id.to_owned());
        job.terminal = None;
        job.holder = None;
        job.raw_unrecorded = raw;
        job.lost = false;
        job.batch = batch.map(str::to_owned);
        if let Some(b) = batch {
            self.made_batches.insert(b.to_owned());
            let batch = self.batches.entry(b.to_owned()).or_default();
            if batch.ended.contains_key(id) {
                return fail(format!(
                    "{id}: re-created as a new member of batch {b}, which already counts it"
                ));
            }
            batch.members.push(id.to_owned());
            batch.ended.insert(id.to_owned(), None);
        }
        Ok(())
    }

    /// The job's record now exists.
    pub fn recorded(&mut self, id: &str) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.raw_unrecorded = false;
        }
    }

    /// A claim handed `lease` out for `id`.
    pub fn claimed(&mut self, id: &str, lease: LeaseKey) -> Check {
        let Some(job) = self.jobs.get_mut(id) else {
            return fail(format!("{id}: claimed, but no life was ever started"));
        };
        if !job.live {
            return fail(format!(
                "{id}: claimed again after it ended as {:?}",
                job.terminal
            ));
        }
        job.raw_unrecorded = false;
        job.holder = Some(lease);
        Ok(())
    }

    /// A fenced write by `lease` was taken: it must come from the current holder of a live job.
    pub fn fenced_write_taken(&self, id: &str, lease: &LeaseKey, what: &str) -> Check {
        let Some(job) = self.jobs.get(id) else {
            return fail(format!("{id}: {what} taken for a job never started"));
        };
        if !job.live {
            return fail(format!(
                "{id}: {what} by {lease:?} taken after the job ended as {:?}",
                job.terminal
            ));
        }
        if job.holder.as_ref() != Some(lease) {
            return fail(format!(
                "{id}: {what} by stale lease {lease:?} taken; the holder is {:?}",
                job.holder
            ));
        }
        Ok(())
    }

    /// The current life ended as `status` (by a finish, a cancel, or a claim-time rejection).
    pub fn ended(&mut self, id: &str, status: Status) -> Check {
        let Some(job) = self.jobs.get_mut(id) else {
            return fail(format!("{id}: ended as {status} but was never started"));
        };
        if !job.live {
            return fail(format!(
                "{id}: a second terminal result ({status}) after {:?}",
                job.terminal
            ));
        }
        job.live = false;
        job.terminal = Some(status);
        job.holder = None;
        job.raw_unrecorded = false;
        self.results += 1;
        if let Some(b) = job.batch.clone() {
            if let Some(batch) = self.batches.get_mut(&b) {
                batch.ended.insert(id.to_owned(), Some(status));
            }
        }
        Ok(())
    }

    /// A fenced retry or hand-back was taken: the job waits for its next attempt.
    pub fn handed_back(&mut self, id: &str) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.holder = None;
        }
    }

    /// A dead letter was replayed: a new life, counted in its batch again (in its old place)
    /// when the batch and the record were still there, on its own otherwise.
    pub fn replayed(&mut self, id: &str, record_existed: bool) -> Check {
        let batch = self
            .jobs
            .get(id)
            .and_then(|j| j.batch.clone())
            .filter(|b| record_existed && self.batches.contains_key(b));
        self.started(id, false, None)?;
        if let Some(b) = batch {
            if let Some(batch) = self.batches.get_mut(&b) {
                batch.ended.insert(id.to_owned(), None);
            }
            if let Some(job) = self.jobs.get_mut(id) {
                job.batch = Some(b);
            }
        }
        Ok(())
    }

    /// The batch's keys expired: its members no longer count anywhere.
    pub fn batch_expired(&mut self, b: &str) {
        if let Some(batch) = self.batches.remove(b) {
            for m in batch.members {
                if let Some(job) = self.jobs.get_mut(&m) {
                    if job.batch.as_deref() == Some(b) {
                        job.batch = None;
                    }
                }
            }
        }
    }

    /// Raw jobs whose entry and record are both gone: the operator destroyed their only trace.
    pub fn forget_lost(&mut self, id: &str) {
        if let Some(job) = self.jobs.get_mut(id) {
            if job.live && job.raw_unrecorded {
                job.live = false;
                job.lost = true;
                job.holder = None;
            }
        }
    }

    pub fn unsettled(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.live)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Everything Redis holds must agree with the model. `fixed` are the queue's fixed keys
    /// (allowed to live without a TTL); `at_rest` adds the checks for a settled queue.
    pub fn check(
        &mut self,
        keys: &BTreeMap<String, KeyView>,
        fixed: &[String],
        at_rest: bool,
    ) -> Check {
        if at_rest {
            if let Some(id) = self.unsettled().first() {
                let record = keys
                    .get(&format!("job:{id}"))
                    .map(|k| k.fields().get("state").map(|s| (*s).to_owned()));
                return fail(format!(
                    "{id}: never ended; its record's state: {record:?}; model: {:?}",
                    self.jobs[id]
                ));
            }
        }
        for (name, k) in keys {
            if fixed.contains(name) {
                self.check_fixed(k, at_rest)?;
            } else if let Some(id) = name.strip_prefix("job:") {
                self.check_record(id, k)?;
            } else if let Some(id) = name.strip_prefix("logs:") {
                check_log(id, k)?;
            } else if let Some(b) = name.strip_prefix("batch:") {
                self.check_batch(b, k, keys)?;
            } else if let Some(b) = name.strip_prefix("batch-jobs:") {
                self.check_members(b, k)?;
            } else if name == "batches" {
                self.check_recent_batches(k)?;
            } else {
                return fail(format!("unexpected key {name} ({})", k.kind));
            }
        }
        for (id, job) in &mut self.jobs {
            if job.live && !job.raw_unrecorded && !keys.contains_key(&format!("job:{id}")) {
                return fail(format!("{id}: the record of a live job vanished"));
            }
        }
        if at_rest {
            for (b, batch) in &self.batches {
                if !keys.contains_key(&format!("batch:{b}")) && !batch.members.is_empty() {
                    return fail(format!("batch {b}: its counters vanished"));
                }
            }
        }
        Ok(())
    }

    fn check_fixed(&self, k: &KeyView, at_rest: bool) -> Check {
        if !at_rest {
            return Ok(());
        }
        let empty = match (k.name.as_str(), k.kind.as_str()) {
            (n, "stream") if n.starts_with("stream:") => {
                k.detail.first().map(String::as_str) == Some("0")
                    && k.detail.get(1).map(String::as_str) != Some("nogroup")
                    && k.detail.get(1).map(String::as_str) == Some("0")
            }
            ("running", _) | ("delayed", _) => k.detail.is_empty(),
            _ => true,
        };
        if !empty {
            return fail(format!(
                "at rest, {} still holds {:?}",
                k.name,
                &k.detail[..k.detail.len().min(8)]
            ));
        }
        Ok(())
    }

    fn check_record(&mut self, id: &str, k: &KeyView) -> Check {
        if JobId::parse(id).is_err() {
            return fail(format!("a record was created for the invalid id {id:?}"));
        }
        let f = k.fields();
        let state: Status = f
            .get("state")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{id}: record without a valid state: {f:?}"))?;
        let Some(job) = self.jobs.get_mut(id) else {
            return fail(format!("{id}: a record for a job never started"));
        };
        job.raw_unrecorded = false;
        if state.is_terminal() {
            if job.live {
                return fail(format!(
                    "{id}: record says {state} but no terminal result was written"
                ));
            }
            if job.terminal != Some(state) {
                return fail(format!(
                    "{id}: record says {state}, the result written was {:?}",
                    job.terminal
                ));
            }
            let raw = f.get("result").copied().unwrap_or("");
            let result: JobResult = serde_json::from_str(raw)
                .map_err(|e| format!("{id}: stored result does not decode ({e}): {raw}"))?;
            if result.status != state || result.id.as_str() != id {
                return fail(format!(
                    "{id}: stored result is {} for id {}, the record says {state}",
                    result.status, result.id
                ));
            }
            if k.persistent() {
                return fail(format!("{id}: terminal record without a TTL"));
            }
        } else {
            if !job.live {
                return fail(format!(
                    "{id}: record says {state} after the job ended as {:?}",
                    job.terminal
                ));
            }
            if !k.persistent() {
                return fail(format!("{id}: the record of a live job has a TTL"));
            }
        }
        Ok(())
    }

    fn check_batch(&self, b: &str, k: &KeyView, keys: &BTreeMap<String, KeyView>) -> Check {
        let f = k.fields();
        let num = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok());
        let Some(total) = num("total") else {
            return fail(format!("batch {b}: hash without `total`: {f:?}"));
        };
        let remaining = num("remaining").unwrap_or(0);
        if (remaining > 0) != k.persistent() {
            return fail(format!(
                "batch {b}: remaining {remaining} but pttl {}",
                k.pttl
            ));
        }
        let Some(batch) = self.batches.get(b) else {
            return fail(format!("batch {b}: exists in Redis, not in the model"));
        };
        let want_total = batch.members.len() as i64;
        let want_remaining = batch.remaining() as i64;
        if (total, remaining) != (want_total, want_remaining) {
            return fail(format!(
                "batch {b}: total/remaining {total}/{remaining}, model {want_total}/{want_remaining}"
            ));
        }
        let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
        for s in batch.ended.values().flatten() {
            *by_status.entry(s.as_str().to_owned()).or_default() += 1;
        }
        for s in Status::TERMINAL {
            let got = num(&format!("s:{s}")).unwrap_or(0);
            let want = by_status.get(s.as_str()).copied().unwrap_or(0);
            if got != want {
                return fail(format!("batch {b}: s:{s} is {got}, model {want}"));
            }
        }
        let running = batch
            .members
            .iter()
            .filter(|m| {
                keys.get(&format!("job:{m}"))
                    .is_some_and(|r| r.fields().get("state") == Some(&"running"))
                    && self.jobs.get(*m).and_then(|j| j.batch.as_deref()) == Some(b)
            })
            .count() as i64;
        if num("running").unwrap_or(0) != running {
            return fail(format!(
                "batch {b}: running {:?}, {running} member records are running",
                num("running")
            ));
        }
        Ok(())
    }

    fn check_members(&self, b: &str, k: &KeyView) -> Check {
        let Some(batch) = self.batches.get(b) else {
            return fail(format!(
                "batch {b}: member list exists, batch not in the model"
            ));
        };
        if k.detail != batch.members {
            return fail(format!(
                "batch {b}: members {:?}, model {:?}",
                k.detail, batch.members
            ));
        }
        if (batch.remaining() > 0) != k.persistent() {
            return fail(format!(
                "batch {b}: member list pttl {} with {} remaining",
                k.pttl,
                batch.remaining()
            ));
        }
        Ok(())
    }
}

impl World {
    /// The list of recent batches: made batches only, each once, and expiring.
    fn check_recent_batches(&self, k: &KeyView) -> Check {
        let week_ms = quayside_common::keys::RECENT_BATCHES_TTL_S as i64 * 1000;
        if k.pttl <= 0 || k.pttl > week_ms {
            return fail(format!("batches: pttl {} (want 1..={week_ms})", k.pttl));
        }
        let unique: std::collections::BTreeSet<&String> = k.detail.iter().collect();
        if unique.len() != k.detail.len() {
            return fail(format!("batches: a batch listed twice: {:?}", k.detail));
        }
        if let Some(b) = k.detail.iter().find(|b| !self.made_batches.contains(*b)) {
            return fail(format!("batches: lists {b}, which no enqueue made"));
        }
        Ok(())
    }
}

fn check_log(id: &str, k: &KeyView) -> Check {
    if k.persistent() {
        return fail(format!("log of {id} has no TTL"));
    }
    let sources = &k.detail[2.min(k.detail.len())..];
    if let Some(end) = sources.iter().position(|s| s == "end") {
        if end + 1 != sources.len() {
            return fail(format!("log of {id}: entries after `end`: {sources:?}"));
        }
    }
    Ok(())
}
