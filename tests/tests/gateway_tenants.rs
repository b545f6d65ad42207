//! The gateway and tenants (issue 15): a token acts as its tenant, so a caller cannot enqueue as
//! another; a tenant's tokens are rate-limited (`429` + `Retry-After`), `gateway.tokens` are not.

use quayside_common::config::{Secret, TenantConfig};
use quayside_common::JobSpec;
use quayside_e2e::gateway::GatewayProcess;
use quayside_e2e::TestQueue;
use redis::AsyncCommands as _;

const ACME: &str = "acme-token-0123456789abcdef";
const SLOW: &str = "slow-token-0123456789abcdef";

/// The spec stored in the job's record, as a worker will read it.
async fn stored_spec(q: &TestQueue, id: &str) -> JobSpec {
    let id = quayside_common::JobId::parse(id).expect("job id");
    let json: String = q
        .conn()
        .await
        .hget(q.producer.keys().job(&id), "spec")
        .await
        .expect("record spec");
    serde_json::from_str(&json).expect("stored spec parses")
}

/// The gateway's `quayside_gateway_rejected_total` for `tenant` and `reason` (0 when absent).
async fn rejected(gw: &GatewayProcess, tenant: &str, reason: &str) -> f64 {
    let r = gw.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let series =
        format!("quayside_gateway_rejected_total{{tenant=\"{tenant}\",reason=\"{reason}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

/// A gateway for `q` with one tenant, `name`, whose one token is `token`, its rate `per_s`
/// (0: none) with `burst`.
async fn gateway_with_tenant(
    q: &TestQueue,
    name: &str,
    token: &str,
    per_s: u32,
    burst: u32,
) -> GatewayProcess {
    let tenant = TenantConfig {
        tokens: vec![Secret::new(token)],
        rate_per_s: per_s,
        rate_burst: burst,
        ..TenantConfig::default()
    };
    q.spawn_gateway(|c| {
        c.tenants.insert(name.to_owned(), tenant);
    })
    .await
}

#[tokio::test]
async fn a_token_enqueues_as_its_tenant_and_cannot_name_another() {
    let q = TestQueue::new("gw-tenant");
    let gw = gateway_with_tenant(&q, "acme", ACME, 0, 1).await;
    let body = |tenant: Option<&str>| {
        let mut spec = serde_json::to_value(q.job("print hi")).expect("spec json");
        if let Some(t) = tenant {
            spec["tenant"] = t.into();
        }
        ("application/json", spec.to_string().into_bytes())
    };

    let r = gw
        .request("POST", "/v1/jobs", Some(ACME), Some(body(None)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(stored_spec(&q, &id).await.tenant.as_deref(), Some("acme"));

    let r = gw
        .request("POST", "/v1/jobs", Some(ACME), Some(body(Some("acme"))))
        .await;
    assert_eq!(r.status, 201, "naming its own tenant is fine: {}", r.text());

    let r = gw
        .request(
            "POST",
            "/v1/jobs",
            Some(quayside_e2e::gateway::TOKEN),
            Some(body(None)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(stored_spec(&q, &id).await.tenant, None, "default tenant");

    for (token, named) in [(ACME, "beta"), (quayside_e2e::gateway::TOKEN, "acme")] {
        let r = gw
            .request("POST", "/v1/jobs", Some(token), Some(body(Some(named))))
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["error"], "tenant_mismatch");
        assert_eq!(r.json()["field"], "tenant");
    }
    let batch = serde_json::json!({"jobs": [serde_json::to_value(q.job("print 1")).expect("json"),
        {"tenant": "beta", "kind": "run", "language": "script", "files": {"job.txt": "print 2"}}]});
    let r = gw.post_json_as("/v1/batches", ACME, &batch).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["field"], "jobs[1].tenant", "nothing enqueued");

    // A pause stops every tenant's work: operators only.
    for path in ["/v1/pause", "/v1/resume"] {
        let r = gw.request("POST", path, Some(ACME), None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], "operator_only");
    }
    assert!(
        !q.producer.stats().await.expect("stats").paused,
        "the queue was not paused"
    );
    let r = gw
        .request(
            "POST",
            "/v1/jobs",
            Some("not-a-token-0123456789"),
            Some(body(None)),
        )
        .await;
    assert_eq!(r.status, 401);
    // Each refusal counted by the caller's tenant and why (a bounded label set).
    assert_eq!(rejected(&gw, "acme", "tenant_mismatch").await, 2.0);
    assert_eq!(rejected(&gw, "default", "tenant_mismatch").await, 1.0);
    assert_eq!(rejected(&gw, "acme", "operator_only").await, 2.0);
    assert_eq!(rejected(&gw, "unknown", "unauthorized").await, 1.0);
}

#[tokio::test]
async fn a_tenants_token_is_rate_limited_and_told_when_to_retry() {
    let q = TestQueue::new("gw-rate");
    let gw = gateway_with_tenant(&q, "slow", SLOW, 1, 3).await;
    // The burst passes at once; the next request is refused with when to come back.
    for i in 0..3 {
        let r = gw.request("GET", "/v1/stats", Some(SLOW), None).await;
        assert_eq!(r.status, 200, "burst request {i}: {}", r.text());
    }
    let r = gw.request("GET", "/v1/stats", Some(SLOW), None).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "rate_limited");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert_eq!(
        wait, 1,
        "one request a second: the next fits within a second"
    );
    assert_eq!(rejected(&gw, "slow", "rate_limited").await, 1.0);

    // Other tokens are not held back by it.
    for _ in 0..10 {
        let r = gw.get("/v1/stats").await;
        assert_eq!(r.status, 200, "gateway.tokens have no rate limit");
    }

    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let r = gw.request("GET", "/v1/stats", Some(SLOW), None).await;
    assert_eq!(r.status, 200, "admitted after Retry-After: {}", r.text());
}

#[tokio::test]
async fn a_tenant_past_its_queued_cap_gets_429_with_retry_after() {
    let q = TestQueue::new("gw-qcap");
    let tenant = TenantConfig {
        tokens: vec![Secret::new(ACME)],
        max_queued: 2,
        ..TenantConfig::default()
    };
    let gw = q
        .spawn_gateway(|c| {
            c.tenants.insert("acme".to_owned(), tenant);
        })
        .await;
    let body = |script: &str| {
        let spec = serde_json::to_value(q.job(script)).expect("spec json");
        ("application/json", spec.to_string().into_bytes())
    };
    for i in 0..2 {
        let r = gw
            .request("POST", "/v1/jobs", Some(ACME), Some(body("print ok")))
            .await;
        assert_eq!(r.status, 201, "job {i} fits: {}", r.text());
    }
    let r = gw
        .request("POST", "/v1/jobs", Some(ACME), Some(body("print no")))
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "tenant_queue_full");
    assert_eq!(r.json()["field"], "tenant");
    let msg = r.json()["message"].as_str().expect("message").to_owned();
    assert!(msg.contains("max_queued 2"), "{msg}");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(wait >= 1, "{wait}");
    // A batch past the cap is refused whole: nothing of it is queued.
    let batch =
        serde_json::json!({"jobs": [serde_json::to_value(q.job("print 1")).expect("json")]});
    let r = gw.post_json_as("/v1/batches", ACME, &batch).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let stats = q.producer.stats().await.expect("stats");
    let acme = stats
        .tenants
        .iter()
        .find(|t| t.tenant == "acme")
        .expect("acme");
    assert_eq!(acme.queued, 2, "{acme:?}");
    assert_eq!(rejected(&gw, "acme", "tenant_queue_full").await, 2.0);
    // The default tenant (operator token) is not held to acme's cap.
    let r = gw
        .request(
            "POST",
            "/v1/jobs",
            Some(quayside_e2e::gateway::TOKEN),
            Some(body("print ok")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn a_tenant_may_pause_itself_and_only_operators_pause_others() {
    let q = TestQueue::new("gw-tpause");
    let gw = gateway_with_tenant(&q, "acme", ACME, 0, 1).await;
    let r = gw
        .request("POST", "/v1/tenants/acme/pause", Some(ACME), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tenant"], "acme");
    assert_eq!(
        (r.json()["paused"].clone(), r.json()["changed"].clone()),
        (true.into(), true.into())
    );
    let r = gw
        .request("POST", "/v1/tenants/beta/pause", Some(ACME), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "operator_only");
    let r = gw
        .request(
            "POST",
            "/v1/tenants/beta/pause",
            Some(quayside_e2e::gateway::TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "operators pause any tenant: {}", r.text());
    let r = gw
        .request(
            "POST",
            "/v1/tenants/no%20such/pause",
            Some(quayside_e2e::gateway::TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["field"], "tenant");

    let stats = q.producer.stats().await.expect("stats");
    assert!(!stats.paused, "the queue itself runs");
    let r = gw.get("/v1/stats").await;
    let tenants = r.json()["tenants"].clone();
    assert!(
        tenants
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["tenant"] == "default")),
        "{tenants}"
    );
    // A tenant's token sees its own line only; operators see every tenant's.
    for tenant in ["acme", "beta"] {
        let mut job = q.job("sleep 1");
        job.tenant = Some(tenant.into());
        q.enqueue_all(&[job]).await;
    }
    let all = gw.get("/v1/stats").await.json()["tenants"].to_string();
    assert!(
        all.contains("\"acme\"") && all.contains("\"beta\""),
        "{all}"
    );
    let r = gw.request("GET", "/v1/stats", Some(ACME), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let names: Vec<String> = r.json()["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["tenant"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["acme"], "{}", r.text());
    let r = gw
        .request("POST", "/v1/tenants/acme/resume", Some(ACME), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], true);
}

/// Every route that reads or acts on a job or a batch by id, with the method.
const BY_ID: [(&str, &str); 7] = [
    ("GET", "/v1/jobs/{job}"),
    ("GET", "/v1/jobs/{job}/wait?timeout=0"),
    ("GET", "/v1/jobs/{job}/logs?follow=false"),
    ("DELETE", "/v1/jobs/{job}"),
    ("GET", "/v1/batches/{batch}"),
    ("GET", "/v1/batches/{batch}?results=true"),
    ("DELETE", "/v1/batches/{batch}"),
];

#[tokio::test]
async fn a_tenants_token_reaches_only_its_own_jobs_and_batches() {
    let q = TestQueue::new("gw-isolation");
    const ZETA: &str = "zeta-token-0123456789abcdef";
    let gw = q
        .spawn_gateway(|c| {
            for (name, token) in [("acme", ACME), ("zeta", ZETA)] {
                let t = TenantConfig {
                    tokens: vec![Secret::new(token)],
                    ..TenantConfig::default()
                };
                c.tenants.insert(name.to_owned(), t);
            }
        })
        .await;
    let operator = quayside_e2e::gateway::TOKEN;
    let job = |id: &str| {
        let mut spec = serde_json::to_value(q.job("print hi")).expect("spec json");
        spec["id"] = id.into();
        spec
    };
    let r = gw.post_json_as("/v1/jobs", ACME, &job("iso-a")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let batch = serde_json::json!({"id": "iso-b", "jobs": [job("iso-b1"), job("iso-b2")]});
    let r = gw.post_json_as("/v1/batches", ACME, &batch).await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Another tenant finds nothing, on every route by id, and changes nothing.
    for (method, path) in BY_ID {
        let path = path.replace("{job}", "iso-a").replace("{batch}", "iso-b");
        let r = gw.request(method, &path, Some(ZETA), None).await;
        assert_eq!(r.status, 404, "{method} {path} as zeta: {}", r.text());
        assert_eq!(r.json()["error"], "not_found", "{method} {path}");
        let r = gw.request(method, &path, Some(ACME), None).await;
        assert_ne!(r.status, 404, "{method} {path} as acme: {}", r.text());
    }
    // (acme cancelled its own jobs last; the records say who did what.)
    let st = q.producer.batch_status("iso-b").await.expect("status");
    assert_eq!(st.expect("batch").total, 2, "nothing joined acme's batch");
    // Operators see every tenant's.
    let r = gw
        .request("GET", "/v1/jobs/iso-a", Some(operator), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["spec"]["tenant"], "acme");

    // An id another tenant holds is refused, not answered with that job's state.
    let r = gw.post_json_as("/v1/jobs", ZETA, &job("iso-a")).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        (r.json()["error"].clone(), r.json()["field"].clone()),
        ("id_conflict".into(), "id".into())
    );
    assert_eq!(rejected(&gw, "zeta", "id_conflict").await, 1.0);
    let r = gw.post_json_as("/v1/jobs", ACME, &job("iso-a")).await;
    assert_eq!(r.status, 200, "its own tenant re-posts: {}", r.text());
    let inside = serde_json::json!({"id": "iso-z", "jobs": [job("iso-z1"), job("iso-a")]});
    let r = gw.post_json_as("/v1/batches", ZETA, &inside).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["field"], "jobs[1].id");
    assert!(
        q.producer
            .batch_status("iso-z")
            .await
            .expect("status")
            .is_none(),
        "nothing of a refused batch is enqueued"
    );

    // A batch holds one tenant's jobs: no other caller adds to (and counts in) it.
    for (token, who) in [(ZETA, "zeta"), (operator, "operator")] {
        let more = serde_json::json!({"id": "iso-b", "jobs": [job("iso-x")]});
        let r = gw.post_json_as("/v1/batches", token, &more).await;
        assert_eq!(r.status, 409, "{who}: {}", r.text());
        assert_eq!(
            (r.json()["error"].clone(), r.json()["field"].clone()),
            ("batch_conflict".into(), "id".into()),
            "{who}"
        );
        let mut one = job("iso-y");
        one["batch"] = "iso-b".into();
        let r = gw.post_json_as("/v1/jobs", token, &one).await;
        assert_eq!(r.status, 409, "{who}: {}", r.text());
        assert_eq!(r.json()["field"], "batch", "{who}");
    }
    let st = q.producer.batch_status("iso-b").await.expect("status");
    assert_eq!(st.expect("batch").total, 2, "nothing joined acme's batch");
    assert_eq!(rejected(&gw, "zeta", "batch_conflict").await, 2.0);
    assert_eq!(rejected(&gw, "default", "batch_conflict").await, 2.0);

    // The list of recent batches: each tenant its own, operators all, newest first.
    let r = gw
        .post_json_as(
            "/v1/batches",
            ZETA,
            &serde_json::json!({"id": "iso-c", "jobs": [job("iso-c1")]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let list = |token: &'static str| {
        let gw = &gw;
        async move {
            let r = gw.request("GET", "/v1/batches", Some(token), None).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["batches"]
                .as_array()
                .expect("batches")
                .iter()
                .map(|b| {
                    (
                        b["id"].as_str().unwrap_or_default().to_owned(),
                        b["tenant"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(ACME).await, [("iso-b".to_owned(), "acme".into())]);
    assert_eq!(list(ZETA).await, [("iso-c".to_owned(), "zeta".into())]);
    assert_eq!(
        list(operator).await,
        [
            ("iso-c".to_owned(), "zeta".into()),
            ("iso-b".to_owned(), "acme".into())
        ]
    );
    let r = gw
        .request("GET", "/v1/batches?limit=0", Some(operator), None)
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["field"], "limit");
}
