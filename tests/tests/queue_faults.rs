//! Fault injection: killed workers, expired and renewed leases, stale results, infrastructure
//! failures, malformed entries, Redis restarts and draining. Every multi-job test checks that
//! each job ended exactly once and nothing is left pending.

use std::time::{Duration, Instant};

use quayside_common::keys::GROUP;
use quayside_common::{JobId, JobResult, Priority, Status};
use quayside_e2e::leases::{worker_queues, LeaseCalls};
use quayside_e2e::{private_dir, recorded, wait_started, within, PrivateRedis, TestQueue};
use quayside_producer::ReplayOutcome;
use quayside_worker::queue::{Claimed, JobQueue, LeaseState, RedisQueue, Write};

#[tokio::test]
async fn a_job_whose_worker_is_killed_completes_on_another_exactly_once() {
    let q = TestQueue::new("sigkill");
    let done = q.count_completions().await;
    let rec = q.path("exec.log");
    let spec = q.job(&format!("record {rec}\nsleep 1500\nprint finished"));
    q.producer.enqueue(&spec).await.expect("enqueue");
    let a = q.spawn_worker(|c| c.worker.lease_ms = 1_000);
    q.wait_state(&spec.id, Status::Running, 10).await;
    wait_started(&rec, 1, 10).await;
    a.signal(9);
    assert_eq!(a.wait_exit(5).await, None, "killed by the signal");
    q.spawn_worker(|c| c.worker.lease_ms = 1_000);
    let r = q.wait_one(&spec.id, 20).await;
    assert_eq!(r.status, Status::Succeeded);
    assert_eq!(
        r.worker.as_deref(),
        Some("w1"),
        "finished by the surviving worker"
    );
    assert_eq!(r.attempts, 2, "the killed execution counts as an attempt");
    assert_eq!(recorded(&rec).iter().filter(|e| e.2 == "start").count(), 2);
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
    done.assert_exactly_once(std::slice::from_ref(&spec.id));
}

#[tokio::test]
async fn a_lease_renewed_past_its_timeout_is_not_stolen() {
    let q = TestQueue::new("renew");
    let done = q.count_completions().await;
    let rec = q.path("exec.log");
    let specs = q.jobs(4, &format!("record {rec}\nsleep 3000"));
    let ids = q.enqueue_all(&specs).await;
    // Jobs run three times longer than the lease; two workers with free slots keep reclaiming.
    q.spawn_workers(2, |c| {
        c.worker.lease_ms = 900;
        c.worker.reclaim_interval_ms = 100;
        c.worker.slots = 4;
    });
    let results = q.wait_all(&ids, 30).await;
    assert!(
        results
            .iter()
            .all(|r| r.status == Status::Succeeded && r.attempts == 1),
        "{results:?}"
    );
    assert_eq!(
        recorded(&rec).iter().filter(|e| e.2 == "start").count(),
        4,
        "each job ran once"
    );
    q.assert_settled(&ids).await;
    done.assert_exactly_once(&ids);
}

/// One job, claimed by `first`, which then stalls past its lease: `second` takes it over.
async fn claimed_then_taken_over(
    q: &TestQueue,
    first: &RedisQueue,
    second: &RedisQueue,
) -> (quayside_common::JobSpec, Claimed, Claimed) {
    first.prepare().await.expect("groups");
    let spec = q.job("print x");
    q.producer.enqueue(&spec).await.expect("enqueue");
    let stale = first.claim_one().await;
    let taken = second.reclaim_one().await;
    (spec, stale, taken)
}

#[tokio::test]
async fn a_stale_workers_late_result_is_refused() {
    let q = TestQueue::new("fence");
    let [old, new] = worker_queues(&q, ["old", "new"]);
    let (spec, first, taken) = claimed_then_taken_over(&q, &old, &new).await;
    assert_eq!(
        (taken.lease.entry.as_str(), taken.attempts),
        (first.lease.entry.as_str(), 2)
    );
    assert!(
        taken.lease.token > first.lease.token,
        "takeover moves the fencing token on"
    );

    assert_eq!(old.renew_one(&first.lease).await, LeaseState::Lost);
    let late = JobResult::without_output(spec.id.clone(), Status::Failed, Some("late".into()), 1);
    assert_eq!(
        old.finish_with(&first.lease, &late).await,
        Write::Fenced,
        "stale result refused"
    );
    assert_eq!(
        old.retry_now(&first.lease, "late").await,
        Write::Fenced,
        "stale retry refused"
    );

    let good = JobResult::without_output(spec.id.clone(), Status::Succeeded, None, 2);
    assert_eq!(new.finish_with(&taken.lease, &good).await, Write::Taken);
    assert_eq!(
        new.finish_with(&taken.lease, &good).await,
        Write::Fenced,
        "a result is written once"
    );
    let stored = q.producer.wait(&spec.id, None).await.expect("result");
    assert_eq!((stored.status, stored.attempts), (Status::Succeeded, 2));
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
}

#[tokio::test]
async fn infrastructure_failures_retry_with_backoff_then_dead_letter_then_replay() {
    let q = TestQueue::new("retry");
    let done = q.count_completions().await;
    let flag = q.path("runner-fixed");
    let record = q.path("runs");
    let mut spec = q.job(&format!(
        "record {record}\ninfra_unless_file {flag}\nprint recovered"
    ));
    // Counts only workers that die mid-job: a flaky runner never uses it up.
    spec.max_attempts = Some(1);
    let started = Instant::now();
    q.producer.enqueue(&spec).await.expect("enqueue");
    q.spawn_worker(|_| {});
    let dead = q.wait_one(&spec.id, 20).await;
    let elapsed = started.elapsed();
    let error = dead.error.as_deref().unwrap_or("");
    assert_eq!((dead.status, dead.attempts), (Status::Dead, 1), "{error}");
    assert!(
        error.contains("runner-fixed does not exist") && error.contains("kept failing for"),
        "{error}"
    );
    // Bounded by time (retry.give_up_after_ms = 1 s), not by count: several tries, with
    // backoff (base 100 ms, equal jitter) between them.
    let runs = recorded(&record).iter().filter(|e| e.2 == "start").count();
    assert!(runs >= 3, "tried {runs} times");
    assert!(
        elapsed >= Duration::from_millis(1_000),
        "gave up before retry.give_up_after_ms: {elapsed:?}"
    );
    assert!(
        runs <= 12,
        "retried without backoff: {runs} runs in {elapsed:?}"
    );

    let letters = q.producer.dlq_list(10).await.expect("dlq");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].job_id.as_str(), letters[0].reason.as_str()),
        (spec.id.as_str(), "infra_timeout")
    );
    assert!(letters[0].error.contains("does not exist"));

    std::fs::write(&flag, "").expect("fix the runner");
    assert_eq!(
        q.producer
            .dlq_replay(&letters[0].entry)
            .await
            .expect("replay"),
        ReplayOutcome::Queued
    );
    let r = within(20, "replayed job", async {
        loop {
            let st = q.status(&spec.id).await;
            if st.state == Status::Succeeded {
                return st.result.expect("result");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        (r.attempts, r.stdout.data.as_str()),
        (1, "recovered\n"),
        "replay starts a fresh attempt budget"
    );
    assert!(
        q.producer.dlq_list(10).await.expect("dlq").is_empty(),
        "replayed letter removed"
    );
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
    let announced: Vec<String> = done.order().into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        announced,
        ["dead", "succeeded"],
        "one terminal result per run"
    );
}

#[tokio::test]
async fn permanent_runner_errors_are_dead_lettered_without_retry() {
    let q = TestQueue::new("permanent");
    let spec = q.job("permanent this can never work");
    q.producer.enqueue(&spec).await.expect("enqueue");
    q.spawn_worker(|_| {});
    let r = q.wait_one(&spec.id, 20).await;
    assert_eq!((r.status, r.attempts), (Status::Dead, 1));
    assert_eq!(
        q.producer.dlq_list(10).await.expect("dlq")[0].reason,
        "permanent_error"
    );
}

#[tokio::test]
async fn a_job_that_kills_every_worker_is_quarantined() {
    let q = TestQueue::new("poison");
    let mut spec = q.job("crash");
    spec.max_attempts = Some(2);
    q.producer.enqueue(&spec).await.expect("enqueue");
    // Both allowed attempts take their worker down with them.
    for _ in 0..2 {
        let w = q.spawn_worker(|c| c.worker.lease_ms = 600);
        assert_eq!(w.wait_exit(15).await, None, "the job aborted its worker");
    }
    let w = q.spawn_worker(|c| c.worker.lease_ms = 600);
    let r = q.wait_one(&spec.id, 20).await;
    assert_eq!(r.status, Status::Dead);
    assert!(
        r.error.as_deref().unwrap_or("").contains("none finished"),
        "{:?}",
        r.error
    );
    let ok = q.job("print alive");
    q.producer.enqueue(&ok).await.expect("enqueue");
    assert_eq!(
        q.wait_one(&ok.id, 10).await.status,
        Status::Succeeded,
        "{} serves on",
        w.id
    );
    q.assert_settled(&[spec.id, ok.id]).await;
}

#[tokio::test]
async fn malformed_entries_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving() {
    let q = TestQueue::new("malformed");
    let mut conn = q.conn().await;
    let stream = q.keys.stream(Priority::Normal);
    let good = q.job("print fine");
    let mut over = q.job("print x");
    over.limits.memory_bytes = Some(u64::MAX);
    let mut unknown = q.job("print x");
    unknown.language = "cobol".into();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "m-notjson",
            "{not json".into(),
            "not_json",
            "not valid JSON",
        ),
        (
            "m-version",
            r#"{"v":7,"id":"m-version"}"#.into(),
            "bad_version",
            "unsupported protocol version v=7",
        ),
        (
            "m-missing",
            r#"{"v":1,"id":"m-missing","language":"script","files":{"a":"b"}}"#.into(),
            "missing_field",
            "missing field `kind`",
        ),
        (
            "m-lang",
            with_id(&unknown, "m-lang"),
            "invalid_spec",
            "unknown language \"cobol\"",
        ),
        (
            "m-limits",
            with_id(&over, "m-limits"),
            "invalid_spec",
            "limits.memory_bytes",
        ),
    ];
    for (id, payload, _, _) in &cases {
        q.raw_xadd(id, payload).await;
    }
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("job")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .expect("XADD no id");
    q.producer.enqueue(&good).await.expect("enqueue good");
    q.spawn_worker(|_| {});
    assert_eq!(q.wait_one(&good.id, 10).await.status, Status::Succeeded);
    let mut ids = vec![good.id.clone()];
    for (id, _, reason, message) in &cases {
        let id = JobId::parse(id).expect("id");
        let r = q.wait_one(&id, 10).await;
        assert_eq!(r.status, Status::Rejected, "{id}");
        assert!(
            r.error.as_deref().unwrap_or("").contains(message),
            "{id}: {:?}",
            r.error
        );
        let letters = q.producer.dlq_list(100).await.expect("dlq");
        let l = letters
            .iter()
            .find(|l| l.job_id == id.as_str())
            .unwrap_or_else(|| panic!("{id} not dead-lettered"));
        assert_eq!(l.reason, *reason, "{id}");
        ids.push(id);
    }
    let letters = q.producer.dlq_list(100).await.expect("dlq");
    assert!(
        letters
            .iter()
            .any(|l| l.job_id.is_empty() && l.reason == "missing_field"),
        "entry without id dead-lettered"
    );
    q.assert_settled(&ids).await;
}

fn with_id(spec: &quayside_common::JobSpec, id: &str) -> String {
    let mut s = spec.clone();
    s.id = JobId::parse(id).expect("id");
    quayside_common::wire::encode_spec(&s)
}

#[tokio::test]
async fn workers_survive_a_redis_restart_and_nothing_is_lost() {
    let mut redis = PrivateRedis::start(&private_dir("redis-restart")).expect("private redis");
    let q = TestQueue::on("restart", &redis.url());
    let rec = q.path("exec.log");
    let specs = q.jobs(150, &format!("record {rec}\nsleep 20"));
    let ids = q.enqueue_all(&specs).await;
    q.spawn_workers(2, |c| {
        c.worker.lease_ms = 1_500;
        c.worker.slots = 4;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.restart().expect("restart redis");
    let results = q.wait_all(&ids, 60).await;
    assert!(
        results.iter().all(|r| r.status == Status::Succeeded),
        "every job succeeded"
    );
    let mut ran: Vec<String> = recorded(&rec)
        .into_iter()
        .filter(|e| e.2 == "end")
        .map(|e| e.0)
        .collect();
    ran.sort();
    ran.dedup();
    assert_eq!(
        ran.len(),
        ids.len(),
        "every job ran to the end at least once"
    );
    q.assert_settled(&ids).await;
}

#[tokio::test]
async fn drain_finishes_running_jobs_within_the_grace_period() {
    let q = TestQueue::new("drain");
    let done = q.count_completions().await;
    let specs = q.jobs(4, "sleep 700\nprint done");
    let ids = q.enqueue_all(&specs).await;
    let w = q.spawn_worker(|c| c.worker.slots = 2);
    for id in &ids[..2] {
        q.wait_state(id, Status::Running, 10).await;
    }
    w.signal(15);
    assert_eq!(w.wait_exit(10).await, Some(0), "a drained worker exits 0");
    let st: Vec<Status> = futures_util::future::join_all(ids.iter().map(|id| q.status(id)))
        .await
        .into_iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(
        &st[..2],
        [Status::Succeeded, Status::Succeeded],
        "in-flight jobs finished"
    );
    assert_eq!(
        &st[2..],
        [Status::Queued, Status::Queued],
        "no new claims after SIGTERM"
    );
    q.spawn_worker(|_| {});
    q.wait_all(&ids, 20).await;
    q.assert_settled(&ids).await;
    done.assert_exactly_once(&ids);
}

#[tokio::test]
async fn drain_past_the_grace_period_hands_jobs_back_without_spending_an_attempt() {
    let q = TestQueue::new("handback");
    let done = q.count_completions().await;
    let rec = q.path("exec.log");
    let specs = q.jobs(2, &format!("record {rec}\nsleep 4000"));
    let ids = q.enqueue_all(&specs).await;
    let w = q.spawn_worker(|c| {
        c.worker.slots = 2;
        c.worker.drain_timeout_ms = 300;
    });
    for id in &ids {
        q.wait_state(id, Status::Running, 10).await;
    }
    let signalled = Instant::now();
    w.signal(15);
    assert_eq!(w.wait_exit(10).await, Some(0), "a drained worker exits 0");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "drain took {:?}",
        signalled.elapsed()
    );
    for id in &ids {
        let st = q.status(id).await;
        assert_eq!(
            (st.state, st.attempts),
            (Status::Queued, 0),
            "{id} handed back, attempt refunded"
        );
    }
    q.spawn_worker(|c| c.worker.id = Some("other".into()));
    let results = q.wait_all(&ids, 20).await;
    for r in &results {
        assert_eq!(
            (r.status, r.attempts, r.worker.as_deref()),
            (Status::Succeeded, 1, Some("other"))
        );
    }
    let stopped = recorded(&rec).iter().filter(|e| e.2 == "stopped").count();
    assert_eq!(stopped, 2, "the first executions were stopped");
    q.assert_settled(&ids).await;
    done.assert_exactly_once(&ids);
}

/// The keys one claim writes, as `DUMP` saw them (None: the key did not exist).
async fn snapshot(
    conn: &mut quayside_common::connection::Connection,
    keys: &[String],
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for k in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(k)
            .query_async(conn)
            .await
            .expect("DUMP");
        out.push((k.clone(), dump));
    }
    out
}

/// Puts the keys back as they were: what a failover to a replica that missed the last write,
/// or a restart that lost the unsynced tail of the AOF, leaves behind.
async fn roll_back(
    conn: &mut quayside_common::connection::Connection,
    snap: &[(String, Option<Vec<u8>>)],
) {
    for (k, dump) in snap {
        let _: () = match dump {
            Some(d) => redis::cmd("RESTORE")
                .arg(k)
                .arg(0)
                .arg(d.as_slice())
                .arg("REPLACE")
                .query_async(conn)
                .await
                .expect("RESTORE"),
            None => redis::cmd("DEL")
                .arg(k)
                .query_async::<i64>(conn)
                .await
                .map(drop)
                .expect("DEL"),
        };
    }
}

#[tokio::test]
async fn a_claim_lost_in_a_failover_never_lets_two_executions_hold_the_job() {
    let q = TestQueue::new("failover");
    let [a, b] = worker_queues(&q, ["a", "b"]);
    a.prepare().await.expect("groups");
    let spec = q.job("print x");
    q.producer.enqueue(&spec).await.expect("enqueue");
    let mut conn = q.conn().await;
    let touched = [
        q.keys.stream(Priority::Normal),
        q.keys.job(&spec.id),
        q.keys.running(),
    ];

    // Worker a claims; the write is lost; worker b claims the same entry again.
    let before = snapshot(&mut conn, &touched).await;
    let first = a.claim_one().await;
    roll_back(&mut conn, &before).await;
    let second = b.claim_one().await;
    assert_eq!(second.attempts, 1, "the lost claim left no trace");
    // a still runs the job: its renewal must not take the entry back from b, ever.
    for _ in 0..2 {
        assert_eq!(
            a.renew_one(&first.lease).await,
            LeaseState::Lost,
            "the stale execution stops"
        );
        assert_eq!(b.renew_one(&second.lease).await, LeaseState::Held);
    }
    let late = JobResult::without_output(spec.id.clone(), Status::Failed, Some("late".into()), 1);
    assert_eq!(a.finish_with(&first.lease, &late).await, Write::Fenced);

    // The same worker losing its own claim and claiming again gets a lease of its own.
    let before = snapshot(&mut conn, &touched).await;
    let again = b.reclaim_one().await;
    roll_back(&mut conn, &before).await;
    let third = b.reclaim_one().await;
    assert_ne!(
        again.lease, third.lease,
        "a lost claim's lease is never issued twice"
    );
    assert_eq!(b.renew_one(&again.lease).await, LeaseState::Lost);
    let good = JobResult::without_output(spec.id.clone(), Status::Succeeded, None, 2);
    assert_eq!(b.finish_with(&third.lease, &good).await, Write::Taken);
    assert_eq!(b.finish_with(&again.lease, &good).await, Write::Fenced);
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
}

#[tokio::test]
async fn a_job_deleted_and_enqueued_again_refuses_the_first_lifes_stale_writes() {
    let q = TestQueue::new("second-life");
    let [a, b] = worker_queues(&q, ["a", "b"]);
    let (spec, stale, taken) = claimed_then_taken_over(&q, &a, &b).await;
    // b ends the first life; its record goes at once (as with `result_ttl_s: 0`, or an
    // operator deleting it).
    let done = JobResult::without_output(spec.id.clone(), Status::Succeeded, None, 2);
    assert_eq!(b.finish_with(&taken.lease, &done).await, Write::Taken);
    let mut conn = q.conn().await;
    let _: i64 = redis::cmd("DEL")
        .arg(q.keys.job(&spec.id))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    // The id is free again: a second life starts and is claimed.
    let again = q.producer.enqueue(&spec).await.expect("enqueue");
    assert!(again.created);
    let second = b.claim_one().await;
    // a wakes up with the first life's lease: nothing it writes may land on the second life.
    let late = JobResult::without_output(spec.id.clone(), Status::Failed, Some("stale".into()), 1);
    assert_eq!(a.renew_one(&stale.lease).await, LeaseState::Lost);
    assert_eq!(
        a.finish_with(&stale.lease, &late).await,
        Write::Fenced,
        "the first life's lease {:?} must not finish the second life {:?}",
        stale.lease,
        second.lease
    );
    assert_eq!(a.retry_now(&stale.lease, "stale").await, Write::Fenced);
    let good = JobResult::without_output(spec.id.clone(), Status::Succeeded, None, 1);
    assert_eq!(b.finish_with(&second.lease, &good).await, Write::Taken);
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
}

#[tokio::test]
async fn a_running_job_whose_entry_is_deleted_runs_again_and_ends_once() {
    let q = TestQueue::new("entry-gone");
    let done = q.count_completions().await;
    let rec = q.path("exec.log");
    let spec = q.job(&format!("record {rec}\nsleep 1500\nprint done"));
    q.producer.enqueue(&spec).await.expect("enqueue");
    // Renewals every 300 ms; no reclaim would come for a long time.
    q.spawn_worker(|c| {
        c.worker.lease_ms = 900;
        c.worker.claim_block_ms = 300;
        c.worker.reclaim_interval_ms = 60_000;
    });
    q.wait_state(&spec.id, Status::Running, 10).await;
    // A raw producer's XADD ... MAXLEN 0 (or an operator's XDEL) removes the pending entry.
    let mut conn = q.conn().await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(q.keys.stream(Priority::Normal))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("XTRIM");
    let r = q.wait_one(&spec.id, 20).await;
    assert_eq!(r.status, Status::Succeeded);
    assert_eq!(
        recorded(&rec).iter().filter(|e| e.2 == "start").count(),
        2,
        "the lost attempt stopped; the job ran again"
    );
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
    done.assert_exactly_once(std::slice::from_ref(&spec.id));
}

#[tokio::test]
async fn workers_recreate_lost_consumer_groups_and_keep_serving() {
    let q = TestQueue::new("group-lost");
    q.spawn_worker(|_| {});
    let first = q.job("print before");
    q.producer.enqueue(&first).await.expect("enqueue");
    q.wait_one(&first.id, 20).await;
    // An operator deletes an empty stream and destroys another's group.
    let mut conn = q.conn().await;
    let _: i64 = redis::cmd("DEL")
        .arg(q.keys.stream(Priority::Normal))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(q.keys.stream(Priority::High))
        .arg(GROUP)
        .query_async(&mut conn)
        .await
        .expect("XGROUP DESTROY");
    let specs: Vec<_> = (0..6)
        .map(|i| q.job_at(&format!("print {i}"), Priority::ALL[i % 3]))
        .collect();
    let ids = q.enqueue_all(&specs).await;
    let results = q.wait_all(&ids, 30).await;
    assert!(
        results
            .iter()
            .all(|r| r.status == Status::Succeeded && r.attempts == 1),
        "no attempt spent on the missing group: {results:?}"
    );
    q.assert_settled(&ids).await;
}
