//! Queue core flows against a real redis-server and real worker processes.

use std::time::Duration;

use quayside_common::{JobId, Priority, Status};
use quayside_e2e::{recorded, within, TestQueue};
use quayside_producer::{CancelOutcome, Error};

#[tokio::test]
async fn jobs_run_and_report_their_output() {
    let q = TestQueue::new("basic");
    let done = q.count_completions().await;
    q.spawn_worker(|_| {});
    let ok = q.job("print hello\nprint world");
    let failing = q.job("print oops\nexit 3");
    let ids = [ok.id.clone(), failing.id.clone()];
    q.producer
        .enqueue_many(&[ok, failing])
        .await
        .expect("enqueue");
    let results = q.wait_all(&ids, 20).await;
    assert_eq!(results[0].status, Status::Succeeded);
    assert_eq!(results[0].stdout.data, "hello\nworld\n");
    assert_eq!(results[0].attempts, 1);
    assert_eq!(results[0].worker.as_deref(), Some("w0"));
    assert_eq!(
        (results[1].status, results[1].exit_code),
        (Status::Failed, Some(3)),
        "non-zero exit is a result, not retried"
    );
    assert_eq!(results[1].attempts, 1);
    q.assert_settled(&ids).await;
    done.wait_for(2, 5).await;
    done.assert_exactly_once(&ids);
}

#[tokio::test]
async fn strict_priority_under_a_mixed_backlog() {
    let q = TestQueue::new("priority");
    let done = q.count_completions().await;
    let mut specs = Vec::new();
    for p in [Priority::Low, Priority::Normal, Priority::High] {
        for _ in 0..5 {
            specs.push(q.job_at("sleep 5", p));
        }
    }
    let ids = q.enqueue_all(&specs).await;
    q.spawn_worker(|c| {
        c.worker.slots = 1;
        c.worker.starvation_guard = 0;
    });
    q.wait_all(&ids, 30).await;
    let order: Vec<Priority> = done
        .order()
        .iter()
        .map(|(id, _)| {
            specs
                .iter()
                .find(|s| s.id.as_str() == id)
                .expect("known id")
                .priority
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "all high before normal before low");
    q.assert_settled(&ids).await;
    done.assert_exactly_once(&ids);
}

#[tokio::test]
async fn starvation_guard_moves_low_priority_under_high_load() {
    let q = TestQueue::new("guard");
    let done = q.count_completions().await;
    let high: Vec<_> = (0..30)
        .map(|_| q.job_at("sleep 5", Priority::High))
        .collect();
    let low: Vec<_> = (0..3).map(|_| q.job_at("sleep 5", Priority::Low)).collect();
    let mut ids: Vec<JobId> = high.iter().map(|s| s.id.clone()).collect();
    ids.extend(low.iter().map(|s| s.id.clone()));
    q.producer.enqueue_many(&high).await.expect("enqueue high");
    q.producer.enqueue_many(&low).await.expect("enqueue low");
    q.spawn_worker(|c| {
        c.worker.slots = 1;
        c.worker.starvation_guard = 5;
    });
    q.wait_all(&ids, 30).await;
    let order = done.order();
    let positions: Vec<usize> = low
        .iter()
        .map(|l| {
            order
                .iter()
                .position(|(id, _)| id == l.id.as_str())
                .expect("low job finished")
        })
        .collect();
    // One claim in five starts from the lowest priority: low jobs finish at about 5, 10, 15,
    // not after all 30 high ones.
    assert!(
        positions.iter().all(|&p| p < 20),
        "low jobs starved: finished at {positions:?}"
    );
    q.assert_settled(&ids).await;
    done.assert_exactly_once(&ids);
}

#[tokio::test]
async fn never_runs_more_jobs_than_slots() {
    let q = TestQueue::new("slots");
    let rec = q.path("exec.log");
    let specs = q.jobs(12, &format!("record {rec}\nsleep 150"));
    let ids = q.enqueue_all(&specs).await;
    q.spawn_worker(|c| c.worker.slots = 3);
    q.wait_all(&ids, 30).await;
    let mut events: Vec<(u64, i32)> = recorded(&rec)
        .into_iter()
        .map(|(_, _, what, ms)| (ms, if what == "start" { 1 } else { -1 }))
        .collect();
    events.sort_by_key(|&(ms, delta)| (ms, delta));
    let (mut now, mut max) = (0, 0);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    assert_eq!(
        max, 3,
        "with 3 slots exactly 3 jobs ran at once at the peak"
    );
    q.assert_settled(&ids).await;
}

#[tokio::test]
async fn idempotent_enqueue_runs_a_job_once() {
    let q = TestQueue::new("idem");
    let rec = q.path("exec.log");
    let mut spec = q.job(&format!("record {rec}\nprint once"));
    spec.id = JobId::parse("order-42").expect("id");
    let first = q.producer.enqueue(&spec).await.expect("first");
    let again = q.producer.enqueue(&spec).await.expect("second");
    assert!(
        first.created && !again.created,
        "second enqueue of the same id adds nothing"
    );
    assert_eq!(again.state, Some(Status::Queued));
    // A raw producer pushing the same id directly onto a stream is deduplicated too.
    let mut conn = q.conn().await;
    let _: String = redis::cmd("XADD")
        .arg(q.keys.stream(Priority::High))
        .arg("*")
        .arg("id")
        .arg("order-42")
        .arg("job")
        .arg(quayside_common::wire::encode_spec(&spec))
        .query_async(&mut conn)
        .await
        .expect("raw XADD");
    q.spawn_worker(|_| {});
    let r = q.wait_one(&spec.id, 20).await;
    assert_eq!(r.stdout.data, "once\n");
    let after = q.producer.enqueue(&spec).await.expect("after completion");
    assert_eq!(
        (after.created, after.state),
        (false, Some(Status::Succeeded))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = recorded(&rec)
        .into_iter()
        .filter(|r| r.2 == "start")
        .count();
    assert_eq!(runs, 1, "executed exactly once");
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
}

#[tokio::test]
async fn cancel_a_queued_job_and_a_running_one() {
    let q = TestQueue::new("cancel");
    let rec = q.path("exec.log");
    let queued = q.job(&format!("record {rec}\nprint never"));
    q.producer.enqueue(&queued).await.expect("enqueue");
    assert_eq!(
        q.producer.cancel(&queued.id).await.expect("cancel"),
        CancelOutcome::Cancelled
    );

    let long = q.job(&format!("record {rec}\nsleep 60000"));
    q.producer.enqueue(&long).await.expect("enqueue long");
    q.spawn_worker(|_| {});
    q.wait_state(&long.id, Status::Running, 10).await;
    assert_eq!(
        q.producer.cancel(&long.id).await.expect("cancel running"),
        CancelOutcome::Requested
    );
    let r = within(10, "cancelled running job", q.producer.wait(&long.id, None))
        .await
        .expect("result");
    assert_eq!(r.status, Status::Cancelled);

    let after = q.job("print still serving");
    q.producer.enqueue(&after).await.expect("enqueue after");
    let r2 = q.wait_one(&after.id, 10).await;
    assert_eq!(r2.status, Status::Succeeded);

    let queued_result = q
        .producer
        .wait(&queued.id, None)
        .await
        .expect("queued result");
    assert_eq!(queued_result.status, Status::Cancelled);
    let started: Vec<String> = recorded(&rec)
        .into_iter()
        .filter(|r| r.2 == "start")
        .map(|r| r.0)
        .collect();
    assert_eq!(
        started,
        vec![long.id.to_string()],
        "the cancelled queued job never ran"
    );
    assert!(matches!(
        q.producer.cancel(&queued.id).await,
        Ok(CancelOutcome::AlreadyTerminal {
            status: Status::Cancelled
        })
    ));
    assert!(matches!(
        q.producer.cancel(&JobId::parse("nope").expect("id")).await,
        Err(Error::NotFound(_))
    ));
    q.assert_settled(&[queued.id, long.id, after.id]).await;
}

#[tokio::test]
async fn max_depth_refuses_with_a_clear_error() {
    let mut q = TestQueue::new("depth");
    q.cfg.queue.max_depth = 3;
    let producer = quayside_producer::Producer::new(&q.cfg).expect("producer");
    let specs = q.jobs(5, "print x");
    let err = producer.enqueue_many(&specs).await.expect_err("over depth");
    match err {
        Error::QueueFull { max_depth, id, .. } => {
            assert_eq!(max_depth, 3);
            assert_eq!(id, specs[3].id, "the fourth job is the first refused");
        }
        other => panic!("expected QueueFull, got {other:#}"),
    }
    assert!(err_message_names_queue(&producer, &specs[4]).await);
}

async fn err_message_names_queue(
    p: &quayside_producer::Producer,
    spec: &quayside_common::JobSpec,
) -> bool {
    match p.enqueue(spec).await {
        Err(e) => e.to_string().contains("is full (max_depth 3)"),
        Ok(_) => false,
    }
}

#[tokio::test]
async fn logs_follow_live_until_the_end() {
    use futures_util::StreamExt as _;
    let q = TestQueue::new("logs");
    q.spawn_worker(|_| {});
    let spec = q.job("print one\nsleep 300\nprint two");
    q.producer.enqueue(&spec).await.expect("enqueue");
    let entries: Vec<_> = within(20, "log follow", q.producer.logs(&spec.id, true).collect()).await;
    let entries: Vec<(String, String)> = entries
        .into_iter()
        .map(|e| e.expect("log entry"))
        .map(|e| (e.source, String::from_utf8_lossy(&e.data).into_owned()))
        .collect();
    assert_eq!(
        entries,
        vec![
            ("stdout".into(), "one\n".into()),
            ("stdout".into(), "two\n".into()),
            ("end".into(), "succeeded".into())
        ]
    );
}

#[tokio::test]
async fn cancel_never_stores_a_result_readers_cannot_decode() {
    let q = TestQueue::new("cancel-shape");
    let spec = q.job("print x");
    q.producer.enqueue(&spec).await.expect("enqueue");
    // A raw client calling the cancel script with a result of its own making (the old argument
    // layout), or garbage where the script expects its arguments.
    let source = quayside_common::scripts::source(
        quayside_common::scripts::BODIES
            .iter()
            .find(|(n, _)| *n == "cancel")
            .expect("cancel script")
            .1,
    );
    let mut conn = q.conn().await;
    let answer: redis::RedisResult<String> = redis::Script::new(&source)
        .key(q.keys.job(&spec.id))
        .arg(q.keys.prefix())
        .arg(spec.id.as_str())
        .arg(r#"{"status":"cancelled"}"#)
        .arg(86_400)
        .arg(100)
        .invoke_async(&mut conn)
        .await;
    let st = q
        .producer
        .status(&spec.id)
        .await
        .unwrap_or_else(|e| panic!("after cancel answered {answer:?}, the record: {e:#}"))
        .expect("known");
    if st.state == Status::Cancelled {
        let r = st.result.expect("a cancelled job has a result");
        assert_eq!((r.id, r.status), (spec.id.clone(), Status::Cancelled));
    } else {
        assert!(answer.is_err(), "{answer:?} left the job {}", st.state);
    }
}
