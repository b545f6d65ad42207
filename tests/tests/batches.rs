//! Batch counters, member list, live follow and cancel, against a real redis-server and real
//! worker processes (test script runner).

use std::collections::HashSet;

use futures_util::StreamExt as _;
use quayside_common::Status;
use quayside_e2e::{within, TestQueue};
use quayside_producer::{BatchEvent, Error};

#[tokio::test]
async fn a_followed_batch_reports_every_ending_once_and_final_counters() {
    let q = TestQueue::new("batch-follow");
    let mut specs = Vec::new();
    for i in 0..60 {
        let script = match i % 3 {
            0 => "print ok".to_owned(),
            1 => "exit 2".to_owned(),
            _ => format!("sleep {}", 10 + i),
        };
        let mut s = q.job(&script);
        s.batch = Some("b1".into());
        specs.push(s);
    }
    let ids = q.enqueue_all(&specs).await;
    // A second enqueue of the same ids is idempotent: the batch still counts 60.
    q.producer.enqueue_many(&specs).await.expect("re-enqueue");

    let before = q.producer.batch_status("b1").await.expect("status");
    let before = before.expect("batch exists");
    assert_eq!(
        (before.total, before.remaining, before.queued),
        (60, 60, 60)
    );
    assert!(!before.done);
    assert_eq!(q.producer.batch_jobs("b1").await.expect("members"), ids);

    let mut events = q.producer.follow_batch("b1");
    // Endings are reported from the first counters on: start the worker only after them.
    let first = within(10, "first counters", events.next()).await;
    assert!(
        matches!(first, Some(Ok(BatchEvent::Progress(ref p))) if p.remaining == 60),
        "{first:?}"
    );
    q.spawn_worker(|c| c.worker.slots = 4);
    let mut ended = Vec::new();
    let last = within(60, "batch to finish", async {
        let mut last = None;
        while let Some(ev) = events.next().await {
            match ev.expect("event") {
                BatchEvent::JobEnded { id, status } => ended.push((id, status)),
                BatchEvent::Progress(p) => last = Some(p),
            }
        }
        last.expect("at least one progress")
    })
    .await;
    assert!(
        last.done,
        "the stream ends with the final counters: {last:?}"
    );
    assert_eq!((last.total, last.remaining, last.running), (60, 0, 0));
    assert_eq!(last.succeeded, 40, "{last:?}");
    assert_eq!(last.unsuccessful, 20);
    assert_eq!(last.by_status.get("failed"), Some(&20));
    let (created, finished) = (
        last.created_at_ms
            .expect("created_at is stamped at enqueue"),
        last.finished_at_ms
            .expect("finished_at is stamped when the last job ends"),
    );
    assert!(finished >= created, "{created} .. {finished}");
    let unique: HashSet<_> = ended.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ended.len(), 60, "each ending reported exactly once");
    assert_eq!(unique, ids.iter().cloned().collect());

    let records = q.producer.statuses(&ids).await.expect("records");
    for (i, r) in records.iter().enumerate() {
        let r = r.as_ref().expect("record");
        let want = if i % 3 == 1 {
            Status::Failed
        } else {
            Status::Succeeded
        };
        assert_eq!(r.state, want, "job {i}");
        assert_eq!(r.batch.as_deref(), Some("b1"));
    }
    q.assert_settled(&ids).await;
}

#[tokio::test]
async fn cancelling_a_batch_ends_what_is_left() {
    let q = TestQueue::new("batch-cancel");
    let mut specs = Vec::new();
    for _ in 0..30 {
        let mut s = q.job("sleep 30000");
        s.batch = Some("b2".into());
        specs.push(s);
    }
    let ids = q.enqueue_all(&specs).await;
    q.spawn_worker(|c| c.worker.slots = 2);
    q.wait_state(&ids[0], Status::Running, 20).await;
    q.wait_state(&ids[1], Status::Running, 20).await;

    let tally = q.producer.cancel_batch("b2").await.expect("cancel");
    assert_eq!((tally.requested, tally.cancelled), (2, 28), "{tally:?}");
    let results = q.wait_all(&ids, 30).await;
    assert!(results.iter().all(|r| r.status == Status::Cancelled));
    let status = q.producer.batch_status("b2").await.expect("status");
    let status = status.expect("batch");
    assert!(status.done);
    assert_eq!(status.by_status.get("cancelled"), Some(&30));
    q.assert_settled(&ids).await;

    match q.producer.cancel_batch("no-such-batch").await {
        Err(Error::BatchNotFound(b)) => assert_eq!(b, "no-such-batch"),
        other => panic!("expected BatchNotFound, got {other:?}"),
    }
    assert!(q
        .producer
        .batch_status("no-such-batch")
        .await
        .expect("status")
        .is_none());
}

#[tokio::test]
async fn a_rerun_batch_never_reruns_a_member_whose_record_expired_even_from_a_legacy_list() {
    let q = TestQueue::new("batch-rerun");
    let specs: Vec<_> = (0..2)
        .map(|i| {
            let mut s = q.job(&format!("print {i}"));
            s.batch = Some("b1".into());
            s
        })
        .collect();
    let ids = q.enqueue_all(&specs).await;
    // The member list as a batch made before it was a sorted set kept it.
    let mut conn = q.conn().await;
    let members = q.keys.batch_jobs("b1");
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(&members)
        .ignore()
        .cmd("RPUSH")
        .arg(&members)
        .arg(ids[0].as_str())
        .arg(ids[1].as_str())
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("legacy list");
    assert_eq!(q.producer.batch_jobs("b1").await.expect("members"), ids);
    q.spawn_worker(|_| {});
    q.wait_all(&ids, 20).await;
    // The first member's record expires long before the batch's counters do.
    let _: i64 = redis::cmd("DEL")
        .arg(q.keys.job(&ids[0]))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let again = q
        .producer
        .enqueue_many(&specs)
        .await
        .expect("enqueue again");
    assert_eq!(
        again
            .iter()
            .map(|e| (e.created, e.state))
            .collect::<Vec<_>>(),
        vec![(false, None), (false, Some(Status::Succeeded))],
        "nothing added: the expired member is known to its batch"
    );
    let b = q
        .producer
        .batch_status("b1")
        .await
        .expect("status")
        .expect("known");
    assert_eq!((b.total, b.remaining, b.succeeded), (2, 0, 2));
    assert_eq!(q.producer.batch_jobs("b1").await.expect("members"), ids);
}

#[tokio::test]
async fn the_newest_batches_are_listed_bounded_and_expiring() {
    let q = TestQueue::new("batch-recent");
    let mut specs = Vec::new();
    for (batch, tenant) in [("old", None), ("mid", Some("acme")), ("new", None)] {
        let mut s = q.job("print hi");
        s.batch = Some(batch.into());
        s.tenant = tenant.map(str::to_owned);
        specs.push(s);
        // A second job joins its batch: the batch is listed once.
        let mut s = q.job("print hi");
        s.batch = Some(batch.into());
        s.tenant = tenant.map(str::to_owned);
        specs.push(s);
        q.enqueue_all(&specs).await;
        specs.clear();
        // Creation times in ms order the list: keep them apart.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let listed = q.producer.recent_batches(10, None).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["new", "mid", "old"], "newest first, each once");
    assert_eq!(listed[1].tenant.as_deref(), Some("acme"));
    assert_eq!((listed[0].total, listed[0].queued), (2, 2));
    assert_eq!(listed[0].tenant, None, "the default tenant's");

    let producer = &q.producer;
    let only = |t| async move {
        let l = producer.recent_batches(10, Some(t)).await.expect("list");
        l.into_iter().map(|b| b.id).collect::<Vec<_>>()
    };
    assert_eq!(only(Some("acme")).await, ["mid"]);
    assert_eq!(only(None).await, ["new", "old"]);
    assert_eq!(
        q.producer
            .recent_batches(1, None)
            .await
            .expect("list")
            .len(),
        1,
        "limit"
    );

    let mut conn = q.conn().await;
    let key = q.producer.keys().batches();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("ttl");
    assert!(
        ttl > 0 && ttl <= 7 * 24 * 3600,
        "the list expires 7 days after the last batch: ttl {ttl}"
    );
    // A batch whose counters expired is skipped.
    let _: () = redis::cmd("DEL")
        .arg(q.producer.keys().batch("mid"))
        .query_async(&mut conn)
        .await
        .expect("del");
    let listed = q.producer.recent_batches(10, None).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["new", "old"]);

    // Bounded: 1,000 more batches push the oldest out.
    let many: Vec<_> = (0..1_000)
        .map(|i| {
            let mut s = q.job("print hi");
            s.batch = Some(format!("many-{i}"));
            s
        })
        .collect();
    q.enqueue_all(&many).await;
    let n: u64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("zcard");
    assert_eq!(n, quayside_common::keys::RECENT_BATCHES);
    let listed = q.producer.recent_batches(2_000, None).await.expect("list");
    assert!(
        listed.iter().all(|b| b.id.starts_with("many-")),
        "the three first batches left the list"
    );
}
