//! Tenants sharing one queue (issue 15), against real worker processes (the worker binary with
//! the script runner) on a real Redis: fair share within a priority, weights, the fleet-wide
//! running cap, the queued cap, a tenant's pause, and raw producers served in the rotation.

use std::collections::BTreeMap;
use std::time::Duration;

use quayside_common::config::TenantConfig;
use quayside_common::{JobId, JobSpec, Status};
use quayside_e2e::ops::{http_get, wait_http};
use quayside_e2e::{free_addr, recorded, within, TestQueue};
use quayside_producer::{Error, Producer};

/// A queue whose producer and workers know `tenants`.
fn queue_with(test: &str, tenants: &[(&str, TenantConfig)]) -> TestQueue {
    let mut q = TestQueue::new(test);
    q.cfg.tenants = tenants
        .iter()
        .map(|(n, t)| ((*n).to_owned(), t.clone()))
        .collect::<BTreeMap<_, _>>();
    q.producer = Producer::new(&q.cfg).expect("producer");
    q
}

/// `n` jobs of `tenant` running `script`.
fn jobs_of(q: &TestQueue, tenant: &str, n: usize, script: &str) -> Vec<JobSpec> {
    (0..n)
        .map(|_| {
            let mut j = q.job(script);
            j.tenant = Some(tenant.to_owned());
            j
        })
        .collect()
}

fn ids(specs: &[JobSpec]) -> Vec<JobId> {
    specs.iter().map(|s| s.id.clone()).collect()
}

/// Positions (0-based) in completion order of the jobs in `specs`.
fn positions(order: &[(String, String)], specs: &[JobSpec]) -> Vec<usize> {
    order
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| specs.iter().any(|s| s.id.as_str() == id))
        .map(|(i, _)| i)
        .collect()
}

/// `quayside_tenant_claims_skipped_total` of `tenant` for `reason`, added up over the workers
/// serving `/metrics` at `addrs`.
async fn claims_skipped(q: &TestQueue, addrs: &[String], tenant: &str, reason: &str) -> f64 {
    let series = format!(
        "quayside_tenant_claims_skipped_total{{queue=\"{}\",tenant=\"{tenant}\",reason=\"{reason}\"}} ",
        q.cfg.queue.name
    );
    let mut sum = 0.0;
    for addr in addrs {
        wait_http(addr, "/readyz", 10, "worker ready", |s, _| s == 200).await;
        let (_, text) = http_get(addr, "/metrics").await.expect("scrape");
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.parse().expect("a number"));
    }
    sum
}

/// Spawns `n` workers of `slots` each, each serving `/metrics` on an address of its own.
fn workers_with_metrics(q: &TestQueue, n: usize, slots: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let addr = free_addr();
            let a = addr.clone();
            q.spawn_worker(move |c| {
                c.worker.slots = slots;
                c.metrics.listen_addr = a;
            });
            addr
        })
        .collect()
}

/// Most executions of `path`'s recording that overlapped at any moment.
fn peak_concurrency(path: &str) -> usize {
    let mut edges: Vec<(u64, i32)> = recorded(path)
        .into_iter()
        .map(|(_, _, what, ms)| (ms, if what == "start" { 1 } else { -1 }))
        .collect();
    // At the same millisecond an end comes before a start: they did not overlap.
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

#[tokio::test]
async fn a_small_tenant_finishes_long_before_a_big_tenants_backlog() {
    let q = queue_with(
        "fair",
        &[
            ("big", TenantConfig::default()),
            ("small", TenantConfig::default()),
        ],
    );
    let done = q.count_completions().await;
    let big = jobs_of(&q, "big", 2_000, "sleep 2");
    q.producer.enqueue_many(&big).await.expect("enqueue big");
    let small = jobs_of(&q, "small", 20, "sleep 2");
    q.producer
        .enqueue_many(&small)
        .await
        .expect("enqueue small");
    q.spawn_workers(2, |c| c.worker.slots = 4);

    let mut all = ids(&big);
    all.extend(ids(&small));
    q.wait_all(&all, 300).await;
    let order = done.order();
    let small_at = positions(&order, &small);
    assert_eq!(small_at.len(), 20);
    // Served in turn with the backlog: 20 small jobs end among the first ~40 completions. In
    // arrival order they would end after all 2,000 big ones.
    let last_small = *small_at.last().expect("small jobs");
    assert!(
        last_small < 100,
        "the last small job ended {last_small}th of {}; positions {small_at:?}",
        order.len()
    );
    done.assert_exactly_once(&all);
    q.assert_settled(&all).await;
    let stats = q.producer.stats().await.expect("stats");
    for t in stats.tenants.iter().filter(|t| t.tenant != "default") {
        assert_eq!((t.queued, t.running), (0, 0), "{t:?}");
    }
}

#[tokio::test]
async fn weights_share_claims_in_proportion() {
    let heavy = TenantConfig {
        weight: 3,
        ..TenantConfig::default()
    };
    let q = queue_with(
        "weights",
        &[("heavy", heavy), ("light", TenantConfig::default())],
    );
    let done = q.count_completions().await;
    let h = jobs_of(&q, "heavy", 300, "sleep 1");
    let l = jobs_of(&q, "light", 300, "sleep 1");
    q.producer.enqueue_many(&l).await.expect("enqueue light");
    q.producer.enqueue_many(&h).await.expect("enqueue heavy");
    q.spawn_worker(|c| c.worker.slots = 2);
    done.wait_for(200, 120).await;
    let first: Vec<_> = done.order().into_iter().take(200).collect();
    let heavy_n = positions(&first, &h).len();
    assert!(
        (135..=165).contains(&heavy_n),
        "weight 3 to 1 while both have work: {heavy_n} of the first 200 are heavy's"
    );
    let mut all = ids(&h);
    all.extend(ids(&l));
    q.wait_all(&all, 120).await;
    done.assert_exactly_once(&all);
    q.assert_settled(&all).await;
}

#[tokio::test]
async fn the_running_cap_holds_fleet_wide_under_a_burst() {
    let capped = TenantConfig {
        max_running: 3,
        ..TenantConfig::default()
    };
    let q = queue_with(
        "cap",
        &[("capped", capped), ("free", TenantConfig::default())],
    );
    let (cp, fp) = (q.path("capped.rec"), q.path("free.rec"));
    let c = jobs_of(&q, "capped", 40, &format!("record {cp}\nsleep 150"));
    let f = jobs_of(&q, "free", 40, &format!("record {fp}\nsleep 150"));
    let addrs = workers_with_metrics(&q, 3, 4);
    q.producer.enqueue_many(&c).await.expect("enqueue capped");
    q.producer.enqueue_many(&f).await.expect("enqueue free");
    let mut all = ids(&c);
    all.extend(ids(&f));
    // What `quayside stats` shows (the PEL of its lanes) never passes the cap either.
    let mut seen_running = 0;
    within(120, "every job ends", async {
        loop {
            let s = q.producer.stats().await.expect("stats");
            let t = s
                .tenants
                .iter()
                .find(|t| t.tenant == "capped")
                .expect("capped in stats");
            assert!(t.running <= 3, "stats show {} running", t.running);
            assert_eq!(t.running_cap, Some(3));
            seen_running = seen_running.max(t.running);
            let mut ended = 0;
            for id in &all {
                if q.status(id).await.state.is_terminal() {
                    ended += 1;
                }
            }
            if ended == all.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let peak = peak_concurrency(&cp);
    assert_eq!(peak, 3, "capped tenant at most 3 at once, and its cap used");
    assert!(seen_running >= 1, "stats saw it running");
    let free_peak = peak_concurrency(&fp);
    assert!(
        free_peak > 3,
        "the other tenant used the slots the capped one could not: peak {free_peak}"
    );
    // The workers say why the capped tenant waited; the other was never passed over.
    let skipped = claims_skipped(&q, &addrs, "capped", "running_cap").await;
    assert!(
        skipped >= 1.0,
        "claims skipped the capped tenant: {skipped}"
    );
    assert_eq!(claims_skipped(&q, &addrs, "free", "running_cap").await, 0.0);
    q.assert_settled(&all).await;
}

#[tokio::test]
async fn the_queued_cap_refuses_whole_calls_and_frees_as_jobs_run() {
    let capped = TenantConfig {
        max_queued: 5,
        ..TenantConfig::default()
    };
    let big = TenantConfig {
        max_queued: 300,
        ..TenantConfig::default()
    };
    let q = queue_with("qcap", &[("capped", capped), ("big", big)]);
    let five = jobs_of(&q, "capped", 5, "print ok");
    q.producer.enqueue_many(&five).await.expect("five fit");
    // Enqueueing the same ids again answers their state: nothing new is added.
    let again = q.producer.enqueue_many(&five).await.expect("idempotent");
    assert!(again.iter().all(|e| !e.created));

    let sixth = jobs_of(&q, "capped", 1, "print no");
    match q.producer.enqueue(&sixth[0]).await {
        Err(Error::TenantQueueFull {
            tenant,
            queued,
            cap,
            id,
        }) => {
            assert_eq!((tenant.as_str(), queued, cap), ("capped", 5, 5));
            assert_eq!(id, sixth[0].id);
        }
        other => panic!("expected TenantQueueFull, got {other:?}"),
    }
    assert!(q
        .producer
        .status(&sixth[0].id)
        .await
        .expect("status")
        .is_none());
    // Other tenants and the default tenant are not held to it.
    let other = jobs_of(&q, "someone-else", 3, "print ok");
    q.producer
        .enqueue_many(&other)
        .await
        .expect("others enqueue");

    // A call larger than one script call is held to the cap as a whole: nothing of it is
    // queued (the scripts alone would queue its first 256 jobs).
    let batch = jobs_of(&q, "big", 301, "print no");
    match q.producer.enqueue_many(&batch).await {
        Err(Error::TenantQueueFull { queued, cap, .. }) => assert_eq!((queued, cap), (0, 300)),
        other => panic!("expected TenantQueueFull, got {other:?}"),
    }
    let statuses = q.producer.statuses(&ids(&batch)).await.expect("statuses");
    assert!(
        statuses.iter().all(Option::is_none),
        "part of a refused call was queued"
    );
    let fits = &batch[..300];
    let added = q.producer.enqueue_many(fits).await.expect("300 fit");
    assert!(added.iter().all(|e| e.created));
    let again = q
        .producer
        .enqueue_many(fits)
        .await
        .expect("re-posting adds nothing, so it fits");
    assert!(again.iter().all(|e| !e.created));
    let mut all = ids(fits);

    q.spawn_worker(|_| {});
    all.extend(ids(&five));
    all.extend(ids(&other));
    q.wait_all(&all, 60).await;
    q.producer
        .enqueue(&sixth[0])
        .await
        .expect("room again once the queued jobs ran");
    all.push(sixth[0].id.clone());
    q.wait_all(&all, 60).await;
    q.assert_settled(&all).await;
}

#[tokio::test]
async fn a_paused_tenant_waits_while_the_others_run() {
    let q = queue_with("tpause", &[]);
    let out = q
        .cli()
        .args(["pause", "--tenant", "a"])
        .output()
        .expect("cli");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tenant a of queue {} paused", q.cfg.queue.name)
    );
    let a = jobs_of(&q, "a", 5, "print a");
    let b = jobs_of(&q, "b", 5, "print b");
    q.producer
        .enqueue_many(&a)
        .await
        .expect("a's enqueues accepted");
    q.producer.enqueue_many(&b).await.expect("enqueue b");
    let addrs = workers_with_metrics(&q, 1, 2);
    q.wait_all(&ids(&b), 30).await;
    // Give a worker every chance to (wrongly) take a's jobs.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for id in ids(&a) {
        assert_eq!(q.status(&id).await.state, Status::Queued, "{id}");
    }
    let stats = q.producer.stats().await.expect("stats");
    let ta = stats.tenants.iter().find(|t| t.tenant == "a").expect("a");
    assert!(ta.paused && ta.queued == 5, "{ta:?}");
    assert!(!stats.paused, "only the tenant is paused");
    // Tenant `a` is not configured: its label is `other` (the label set stays the config's).
    let skipped = claims_skipped(&q, &addrs, "other", "paused").await;
    assert!(
        skipped >= 1.0,
        "claims passed over the paused tenant: {skipped}"
    );

    let out = q
        .cli()
        .args(["resume", "--tenant", "a"])
        .output()
        .expect("cli");
    assert!(out.status.success(), "{out:?}");
    let mut all = ids(&a);
    all.extend(ids(&b));
    q.wait_all(&all, 30).await;
    q.assert_settled(&all).await;
}

#[tokio::test]
async fn a_raw_producers_job_is_served_in_the_rotation() {
    let q = queue_with("rawturn", &[("big", TenantConfig::default())]);
    let done = q.count_completions().await;
    let big = jobs_of(&q, "big", 300, "sleep 5");
    q.producer.enqueue_many(&big).await.expect("enqueue big");
    q.spawn_worker(|c| c.worker.slots = 2);
    done.wait_for(10, 30).await;
    let raw = q.job("print raw");
    q.raw_enqueue(&raw).await;
    let result = q.wait_one(&raw.id, 30).await;
    assert_eq!(result.status, Status::Succeeded);
    let at = positions(&done.order(), std::slice::from_ref(&raw));
    assert!(
        at.first().is_some_and(|&i| i < 100),
        "the raw job (default tenant) ended at {at:?} of a 300-job backlog"
    );
    let mut all = ids(&big);
    all.push(raw.id.clone());
    q.wait_all(&all, 120).await;
    q.assert_settled(&all).await;
}
