//! The shipped KEDA `ScaledObject` (deploy/k8s/base/scaledobject.yaml, and its Sentinel and
//! Cluster components) against a real Redis, without a cluster: a backlog is built on a real
//! queue with a real worker running some of it, each trigger's figure is read with the command
//! KEDA's redis-streams scaler sends for its metadata (`streamLength`: XLEN, `lagCount`:
//! XINFO GROUPS lag, `pendingEntriesCount`: XPENDING), and KEDA's replica formula is applied:
//! the `scalingModifiers` formula over the named triggers, `ceil(value / target)` for an
//! `AverageValue` target (the HPA's rule for an external metric), within min and max replicas,
//! and zero when the value is not above `activationTarget` and min is zero.
//!
//! What is not proven here: that KEDA itself is installed and reads these fields as its docs
//! say; the figures and formula are KEDA's documented behaviour, the Redis replies are real.

use std::process::Command;
use std::time::Duration;

use quayside_common::{Keys, Priority, Status};
use quayside_e2e::ops::{repo_root, run_ok};
use quayside_e2e::{within, TestQueue};
use serde_json::Value;

/// Renders `dir` (a kustomization, relative to the repository) with `kubectl kustomize` and
/// returns its `ScaledObject` as JSON, parsed by Python's YAML loader.
fn render_scaled_object(kustomization: &str) -> Value {
    let root = repo_root();
    let yaml = run_ok(
        Command::new("kubectl")
            .args(["kustomize"])
            .arg(root.join(kustomization)),
    )
    .expect("kubectl kustomize (apt-get install kubernetes-client)");
    let json = run_ok(
        Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.argv[1]) if d], sys.stdout)",
            ])
            .arg(yaml),
    )
    .expect("python3 with PyYAML");
    let docs: Vec<Value> = serde_json::from_str(&json).expect("json");
    docs.into_iter()
        .find(|d| d["kind"] == "ScaledObject")
        .unwrap_or_else(|| panic!("{kustomization} renders no ScaledObject"))
}

/// A kustomization of the base plus one component, in a folder of the repository's
/// `target/` (kustomize loads only below the folders it is given).
fn with_component(component: &str) -> String {
    let dir = format!("target/keda-{component}");
    let abs = repo_root().join(&dir);
    std::fs::create_dir_all(&abs).expect("mkdir");
    std::fs::write(
        abs.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [../../deploy/k8s/base]\ncomponents: [../../deploy/k8s/components/{component}]\n"
        ),
    )
    .expect("write kustomization");
    dir
}

struct Trigger {
    name: String,
    kind: String,
    stream: String,
    metadata: Value,
}

fn triggers(so: &Value) -> Vec<Trigger> {
    so["spec"]["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .map(|t| Trigger {
            name: t["name"]
                .as_str()
                .expect("every trigger is named")
                .to_owned(),
            kind: t["type"].as_str().expect("type").to_owned(),
            stream: t["metadata"]["stream"].as_str().expect("stream").to_owned(),
            metadata: t["metadata"].clone(),
        })
        .collect()
}

/// The figure KEDA's redis-streams scaler reads for trigger `t`, on stream `key`: the
/// metadata decides the command, as in KEDA's `parseRedisStreamsMetadata`.
async fn figure(conn: &mut redis::aio::MultiplexedConnection, t: &Trigger, key: &str) -> i64 {
    let group = t.metadata["consumerGroup"].as_str();
    match group {
        None => redis::cmd("XLEN")
            .arg(key)
            .query_async(conn)
            .await
            .expect("XLEN"),
        Some(group) if t.metadata.get("lagCount").is_some() => {
            lag(conn, key, group).await.expect("lag is known")
        }
        Some(group) => {
            let reply: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
                .arg(key)
                .arg(group)
                .query_async(conn)
                .await
                .expect("XPENDING");
            reply.0
        }
    }
}

/// The `lag` of `group` in XINFO GROUPS (Redis 7): `None` when Redis cannot tell (an entry
/// not yet delivered was deleted).
async fn lag(conn: &mut redis::aio::MultiplexedConnection, key: &str, group: &str) -> Option<i64> {
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
        .expect("XINFO GROUPS");
    let g = groups
        .iter()
        .find(
            |g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()),
        )
        .expect("the group");
    match g.get("lag") {
        Some(redis::Value::Int(n)) => Some(*n),
        _ => None,
    }
}

/// KEDA's replica count for the trigger `values` (by trigger name): the `scalingModifiers`
/// formula (a sum of trigger names), then `ceil(value / target)` within min..=max; zero when
/// min is zero and the value is not above the activation target.
fn replicas(so: &Value, values: &[(String, i64)]) -> i64 {
    let spec = &so["spec"];
    let modifiers = &spec["advanced"]["scalingModifiers"];
    assert_eq!(modifiers["metricType"], "AverageValue");
    let value: i64 = modifiers["formula"]
        .as_str()
        .expect("formula")
        .split('+')
        .map(|term| {
            let term = term.trim();
            values
                .iter()
                .find(|(n, _)| n == term)
                .unwrap_or_else(|| {
                    panic!("formula term {term:?} is no trigger (this test reads sums of triggers)")
                })
                .1
        })
        .sum();
    let num = |v: &Value| -> i64 {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("a number: {v}"))
    };
    let target = num(&modifiers["target"]);
    let activation = num(&modifiers["activationTarget"]);
    let (min, max) = (num(&spec["minReplicaCount"]), num(&spec["maxReplicaCount"]));
    if min == 0 && value <= activation {
        return 0;
    }
    ((value + target - 1) / target).clamp(min.max(1), max)
}

/// The replica count for the queue `keys` as it stands, and the figures behind it.
async fn read(q: &TestQueue, so: &Value, keys: &Keys) -> (i64, Vec<(String, i64)>) {
    let mut conn = q.conn().await;
    let mut values = Vec::new();
    for t in triggers(so) {
        // The shipped object names the `default` queue: read the same stream of the test's.
        let key = t
            .stream
            .replacen("qs:{default}:", &format!("qs:{{{}}}:", keys.queue()), 1);
        values.push((t.name.clone(), figure(&mut conn, &t, &key).await));
    }
    (replicas(so, &values), values)
}

#[test]
fn every_variant_watches_every_priority_stream_of_the_queue() {
    let default = Keys::new("default").expect("keys");
    for (dir, kind) in [
        ("deploy/k8s/base".to_owned(), "redis-streams"),
        (with_component("keda-sentinel"), "redis-sentinel-streams"),
        (with_component("keda-cluster"), "redis-cluster-streams"),
        ("deploy/k8s/overlays/dev".to_owned(), "redis-streams"),
        ("deploy/k8s/overlays/production".to_owned(), "redis-streams"),
    ] {
        let so = render_scaled_object(&dir);
        let ts = triggers(&so);
        let mut streams: Vec<&str> = ts.iter().map(|t| t.stream.as_str()).collect();
        streams.sort_unstable();
        let mut want: Vec<String> = Priority::ALL.iter().map(|p| default.stream(*p)).collect();
        want.sort_unstable();
        assert_eq!(streams, want, "{dir}: one trigger per priority stream");
        for t in &ts {
            assert_eq!(t.kind, kind, "{dir}: trigger {}", t.name);
            let m = &t.metadata;
            let address = match kind {
                "redis-streams" => m.get("addressFromEnv"),
                _ => m.get("addressesFromEnv"),
            };
            assert!(
                address.is_some(),
                "{dir}: trigger {} has no address: {m}",
                t.name
            );
            if kind == "redis-sentinel-streams" {
                assert!(m.get("sentinelMasterFromEnv").is_some(), "{dir}: {m}");
            }
        }
        // The formula uses every trigger once.
        let formula = so["spec"]["advanced"]["scalingModifiers"]["formula"]
            .as_str()
            .expect("formula");
        let mut terms: Vec<&str> = formula.split('+').map(str::trim).collect();
        terms.sort_unstable();
        let mut names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(terms, names, "{dir}: formula {formula}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_at_any_priority_raises_the_replicas_and_running_jobs_keep_theirs() {
    let so = render_scaled_object("deploy/k8s/base");
    let max = so["spec"]["maxReplicaCount"].as_i64().expect("max");
    let target: i64 = so["spec"]["advanced"]["scalingModifiers"]["target"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("target");
    let q = TestQueue::new("keda");
    let keys = q.keys.clone();

    // Nothing queued: the minimum (1 in the base).
    let (n, values) = read(&q, &so, &keys).await;
    assert_eq!(n, 1, "{values:?}");

    // A few low-priority jobs only (the old trigger watched the normal stream alone).
    let at =
        |n: usize, p: Priority| -> Vec<_> { (0..n).map(|_| q.job_at("sleep 60000", p)).collect() };
    let low = q.enqueue_all(&at(5, Priority::Low)).await;
    let (n, values) = read(&q, &so, &keys).await;
    assert_eq!(n, (5 + target - 1) / target, "{values:?}");

    // A real worker with 2 slots takes two of them: they run, and still count.
    q.spawn_worker(|c| c.worker.slots = 2);
    within(30, "the worker takes two jobs", async {
        while q.producer.stats().await.map(|s| s.pending()).unwrap_or(0) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let stats = q.producer.stats().await.expect("stats");
    let (n, values) = read(&q, &so, &keys).await;
    assert_eq!(stats.waiting() + stats.pending(), 5, "{stats:?}");
    assert_eq!(
        n,
        (5 + target - 1) / target,
        "running jobs keep their replicas: {values:?}"
    );

    // A backlog of thousands at normal priority: the maximum.
    q.enqueue_all(&at(2_000, Priority::Normal)).await;
    let (n, values) = read(&q, &so, &keys).await;
    let total: i64 = values.iter().map(|(_, v)| v).sum();
    assert_eq!(
        total, 2_005,
        "every queued and running job counted once: {values:?}"
    );
    assert_eq!(n, max, "{values:?}");

    // The figures are what `quayside stats` shows: queued plus running, per priority.
    let stats = q.producer.stats().await.expect("stats");
    for p in &stats.priorities {
        let v = values
            .iter()
            .find(|(n, _)| n == p.priority)
            .expect("trigger")
            .1;
        assert_eq!(v as u64, p.depth, "{}: {stats:?}", p.priority);
    }

    // The lag alternative (XINFO GROUPS, Redis 7) counts only what waits: the two running
    // jobs are not in it, so it would scale a fleet that is only running jobs to its minimum;
    // and once a queued job is cancelled (its entry deleted before delivery) Redis cannot
    // tell the lag at all until the group reads past it. The stream length stays exact.
    let mut conn = q.conn().await;
    let low_key = keys.stream(Priority::Low);
    assert_eq!(
        lag(&mut conn, &low_key, "workers").await,
        Some(3),
        "5 queued, 2 delivered"
    );
    let mut cancelled = false;
    for id in &low {
        let queued = q
            .producer
            .status(id)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.state == Status::Queued);
        if queued && !cancelled {
            q.producer.cancel(id).await.expect("cancel");
            cancelled = true;
        }
    }
    assert!(cancelled, "a low job still queued");
    assert_eq!(
        lag(&mut conn, &low_key, "workers").await,
        None,
        "lag unknown after a cancel"
    );
    let (_, values) = read(&q, &so, &keys).await;
    let total: i64 = values.iter().map(|(_, v)| v).sum();
    assert_eq!(total, 2_004, "{values:?}");
}

/// A kustomization of the base, `components` of the repository, then the component that
/// `scripts/keda-tenants.sh` generates for `tenants`, in `target/<dir>`.
fn with_tenant_lanes(dir: &str, components: &[&str], tenants: &[&str]) -> String {
    let root = repo_root();
    let generated = run_ok(
        Command::new("bash")
            .arg(root.join("scripts/keda-tenants.sh"))
            .args(tenants),
    )
    .expect("scripts/keda-tenants.sh");
    let abs = root.join("target").join(dir);
    std::fs::create_dir_all(abs.join("lanes")).expect("mkdir");
    std::fs::write(abs.join("lanes/kustomization.yaml"), generated).expect("write component");
    let mut list: Vec<String> = components
        .iter()
        .map(|c| format!("../../deploy/k8s/components/{c}"))
        .collect();
    list.push("lanes".into());
    std::fs::write(
        abs.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [../../deploy/k8s/base]\ncomponents: [{}]\n",
            list.join(", ")
        ),
    )
    .expect("write kustomization");
    format!("target/{dir}")
}

#[tokio::test(flavor = "multi_thread")]
async fn named_tenants_lanes_count_once_their_component_is_added() {
    let q = TestQueue::new("keda-lanes");
    let keys = q.keys.clone();
    let of = |n: usize, p: Priority, tenant: Option<&str>| -> Vec<_> {
        (0..n)
            .map(|_| {
                let mut j = q.job_at("sleep 60000", p);
                j.tenant = tenant.map(str::to_owned);
                j
            })
            .collect()
    };
    q.enqueue_all(&of(2, Priority::Normal, None)).await;
    q.enqueue_all(&of(6, Priority::Low, Some("acme"))).await;
    q.enqueue_all(&of(3, Priority::High, Some("b.c:d"))).await;
    q.enqueue_all(&of(4, Priority::Normal, Some("not-listed")))
        .await;

    // The shipped object alone sees the default tenant's two jobs only.
    let base = render_scaled_object("deploy/k8s/base");
    let (n, values) = read(&q, &base, &keys).await;
    assert_eq!(
        (n, values.iter().map(|(_, v)| v).sum::<i64>()),
        (1, 2),
        "{values:?}"
    );

    // With the generated component: every listed tenant's lanes, at every priority.
    let so = render_scaled_object(&with_tenant_lanes("keda-lanes", &[], &["acme", "b.c:d"]));
    assert_eq!(
        triggers(&so).len(),
        9,
        "three streams and three lanes per tenant"
    );
    let (n, values) = read(&q, &so, &keys).await;
    let total: i64 = values.iter().map(|(_, v)| v).sum();
    assert_eq!(
        total,
        2 + 6 + 3,
        "a tenant not listed is not read: {values:?}"
    );
    assert_eq!(n, (11 + 3) / 4, "ceil(11 / 4 slots): {values:?}");

    // Listed after the Sentinel component, the lanes are read through the sentinels too.
    let so = render_scaled_object(&with_tenant_lanes(
        "keda-lanes-sentinel",
        &["keda-sentinel"],
        &["acme"],
    ));
    for t in triggers(&so) {
        assert_eq!(t.kind, "redis-sentinel-streams", "trigger {}", t.name);
        assert!(
            t.metadata.get("sentinelMasterFromEnv").is_some(),
            "{}",
            t.name
        );
    }

    // A name that is no tenant is refused, naming it.
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/keda-tenants.sh"))
        .arg("no such")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such"));
}
