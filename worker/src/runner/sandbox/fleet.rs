//! Whose sandboxes are whose: the labels that tie a sandbox to its fleet, the rule that says
//! which sandboxes are garbage, and each runner's own list of sandboxes it is running or failed
//! to remove.
//!
//! A fleet is every worker of one queue on one Redis. Many fleets may share one Docker engine
//! (or one Kubernetes namespace), so a sweep judges only its own fleet's sandboxes by liveness:
//! a sandbox of another queue, or of the same queue name on another Redis, is never touched
//! unless it ran past the deadline its creator wrote on it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use quayside_common::JobId;

/// Label carrying the job id; what cleanup checks and the stop hook count.
pub const LABEL_JOB: &str = "quayside.job";
/// Label carrying the id of the worker that owns the sandbox.
pub const LABEL_WORKER: &str = "quayside.worker";
/// Label carrying the attempt number.
pub const LABEL_ATTEMPT: &str = "quayside.attempt";
/// Label carrying the queue name (for people and filters; the fleet id is what sweeps match).
pub const LABEL_QUEUE: &str = "quayside.queue";
/// Label carrying the fleet id: random per queue per Redis, stored once in the queue's
/// `fleet` key.
pub const LABEL_FLEET: &str = "quayside.fleet";
/// Label carrying the unix second by which the creating worker had given up on the sandbox
/// (both wall times plus the worker's own backstop): past it, it is garbage whoever made it.
pub const LABEL_DEADLINE: &str = "quayside.deadline";

/// Label carrying the language of a warm container (Docker's pool), created before its job
/// is known: it has no [`LABEL_JOB`] or [`LABEL_ATTEMPT`].
pub const LABEL_POOL: &str = "quayside.pool";

/// How long past its deadline a sandbox of another fleet is left alone (clock skew between
/// hosts sharing an engine, a worker paused for a while).
pub const DEADLINE_GRACE_S: i64 = 600;

/// Unix seconds now, as labels and sweeps count them.
pub fn unix_now_s() -> i64 {
    i64::try_from(quayside_common::now_ms() / 1000).unwrap_or(i64::MAX)
}

/// The workers a sandbox belongs to: one queue on one Redis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    pub queue: String,
    /// Random, created once per queue per Redis (see `keys::Keys::fleet`).
    pub id: String,
}

/// The labels every sandbox of one attempt carries. `deadline_s`: see [`LABEL_DEADLINE`].
pub fn labels(
    fleet: &Fleet,
    job_id: &JobId,
    attempt: u32,
    worker_id: &str,
    deadline_s: i64,
) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_JOB.to_owned(), job_id.to_string()),
        (LABEL_WORKER.to_owned(), worker_id.to_owned()),
        (LABEL_ATTEMPT.to_owned(), attempt.to_string()),
        (LABEL_QUEUE.to_owned(), fleet.queue.clone()),
        (LABEL_FLEET.to_owned(), fleet.id.clone()),
        (LABEL_DEADLINE.to_owned(), deadline_s.to_string()),
    ])
}

/// The labels of a warm container of `language`: [`labels`]' without the job's, plus
/// [`LABEL_POOL`].
pub fn pool_labels(
    fleet: &Fleet,
    language: &str,
    worker_id: &str,
    deadline_s: i64,
) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POOL.to_owned(), language.to_owned()),
        (LABEL_WORKER.to_owned(), worker_id.to_owned()),
        (LABEL_QUEUE.to_owned(), fleet.queue.clone()),
        (LABEL_FLEET.to_owned(), fleet.id.clone()),
        (LABEL_DEADLINE.to_owned(), deadline_s.to_string()),
    ])
}

/// What a sweep knows when it judges the sandboxes it lists.
#[derive(Debug)]
pub struct Sweep<'a> {
    pub fleet: &'a Fleet,
    /// This worker's id (as it appears in labels).
    pub me: &'a str,
    /// Workers of the fleet whose heartbeat has not expired (as they appear in labels).
    pub live: &'a [String],
    /// Unix seconds now.
    pub now_s: i64,
    /// Another worker's sandbox younger than this is spared: that worker may not have
    /// heartbeated yet.
    pub min_age_s: i64,
}

impl Sweep<'_> {
    /// The sandbox belongs to another worker of this fleet whose heartbeat is live: that
    /// worker removes it itself.
    pub fn owner_is_live_peer(&self, labels: &HashMap<String, String>) -> bool {
        let ours = labels.get(LABEL_FLEET) == Some(&self.fleet.id) && !self.fleet.id.is_empty();
        let owner = labels.get(LABEL_WORKER).map(String::as_str);
        ours && owner.is_some_and(|o| o != self.me && self.live.iter().any(|w| w == o))
    }

    /// Why the sandbox `name` with `labels`, created at `created_s`, is garbage, or `None`.
    /// `active`: whether this runner is using it right now.
    pub fn verdict(
        &self,
        labels: &HashMap<String, String>,
        created_s: Option<i64>,
        active: bool,
    ) -> Option<&'static str> {
        let get = |k: &str| labels.get(k).map(String::as_str);
        let past_deadline = get(LABEL_DEADLINE)
            .and_then(|d| d.parse::<i64>().ok())
            .is_some_and(|d| d + DEADLINE_GRACE_S < self.now_s);
        if active {
            return None;
        }
        let owner = get(LABEL_WORKER);
        let ours = get(LABEL_FLEET) == Some(self.fleet.id.as_str()) && !self.fleet.id.is_empty();
        if ours && owner == Some(self.me) {
            // Ours and not running here: a previous process with this id left it, or its
            // removal failed.
            return Some("left by this worker");
        }
        if ours {
            let old = created_s.is_some_and(|c| c + self.min_age_s <= self.now_s);
            let owner_gone = owner.is_some_and(|o| !self.live.iter().any(|w| w == o));
            if old && owner_gone {
                return Some("its worker is gone");
            }
        }
        past_deadline.then_some("past the deadline its worker set")
    }
}

/// One runner's sandboxes: those it is using now, and those whose removal failed (retried
/// from the worker's upkeep until they succeed). Names, as the backend knows them.
#[derive(Debug, Default)]
pub struct Sandboxes {
    active: Mutex<BTreeSet<String>>,
    failed: Mutex<BTreeSet<String>>,
}

impl Sandboxes {
    /// A sandbox is about to be created under `name`: the sweep must spare it from now on.
    pub fn started(&self, name: &str) {
        self.active
            .lock()
            .expect("lock poisoned")
            .insert(name.to_owned());
    }

    /// `name` is gone for good.
    pub fn removed(&self, name: &str) {
        self.active.lock().expect("lock poisoned").remove(name);
        self.failed.lock().expect("lock poisoned").remove(name);
    }

    /// Removing `name` failed: it is no longer in use, but still there.
    pub fn removal_failed(&self, name: &str) {
        self.active.lock().expect("lock poisoned").remove(name);
        self.failed
            .lock()
            .expect("lock poisoned")
            .insert(name.to_owned());
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.active.lock().expect("lock poisoned").contains(name)
    }

    /// Tries `remove` on every name whose removal failed; returns how many are still left.
    pub async fn retry_failed<F, Fut>(&self, remove: F) -> usize
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for name in self.failed() {
            if remove(name.clone()).await {
                self.removed(&name);
                tracing::info!(sandbox = %name, "removed sandbox whose removal had failed");
            }
        }
        self.failed().len()
    }

    /// Names whose removal failed, to try again.
    pub fn failed(&self) -> Vec<String> {
        self.failed
            .lock()
            .expect("lock poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet {
        Fleet {
            queue: "qa".into(),
            id: "f1".into(),
        }
    }

    fn sandbox(
        queue: &str,
        fleet_id: &str,
        worker: &str,
        deadline: i64,
    ) -> HashMap<String, String> {
        let f = Fleet {
            queue: queue.into(),
            id: fleet_id.into(),
        };
        labels(&f, &JobId::parse("j").expect("id"), 1, worker, deadline)
    }

    #[test]
    fn only_the_own_fleet_is_judged_by_liveness() {
        let f = fleet();
        let live = vec!["w2".to_owned()];
        let s = Sweep {
            fleet: &f,
            me: "w1",
            live: &live,
            now_s: 10_000,
            min_age_s: 120,
        };
        let (old, young, far) = (Some(1_000), Some(9_990), 20_000);
        let cases = [
            (
                sandbox("qa", "f1", "w9", far),
                old,
                false,
                Some("its worker is gone"),
                "dead owner",
            ),
            (
                sandbox("qa", "f1", "w2", far),
                old,
                false,
                None,
                "live owner",
            ),
            (
                sandbox("qa", "f1", "w9", far),
                young,
                false,
                None,
                "too young to judge",
            ),
            (
                sandbox("qb", "f2", "w9", far),
                old,
                false,
                None,
                "another queue",
            ),
            (
                sandbox("qa", "f2", "w9", far),
                old,
                false,
                None,
                "same queue, another Redis",
            ),
            (
                sandbox("qb", "f2", "w9", 1_000),
                old,
                false,
                Some("past the deadline its worker set"),
                "anyone's, long past its deadline",
            ),
            (
                sandbox("qb", "f2", "w9", 10_000 - DEADLINE_GRACE_S),
                old,
                false,
                None,
                "within the grace",
            ),
            (
                sandbox("qa", "f1", "w1", far),
                young,
                false,
                Some("left by this worker"),
                "own, idle",
            ),
            (
                sandbox("qa", "f1", "w1", far),
                young,
                true,
                None,
                "own and running",
            ),
            (
                sandbox("qb", "f2", "w1", far),
                old,
                false,
                None,
                "same worker id, other queue",
            ),
            (
                sandbox("qa", "f9", "w1", far),
                old,
                false,
                None,
                "same id and queue, another Redis",
            ),
            (HashMap::new(), old, false, None, "not ours"),
        ];
        for (labels, created, active, expected, why) in cases {
            assert_eq!(s.verdict(&labels, created, active), expected, "{why}");
        }
    }

    #[test]
    fn sandboxes_track_use_and_failed_removals() {
        let s = Sandboxes::default();
        s.started("a");
        s.started("b");
        assert!(s.is_active("a"));
        s.removal_failed("a");
        assert!(!s.is_active("a"));
        assert_eq!(s.failed(), ["a"]);
        s.removed("a");
        s.removed("b");
        assert!(s.failed().is_empty() && !s.is_active("b"));
    }
}
