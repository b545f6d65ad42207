//! The HTTP gateway end to end: the real `quayside serve` process, a real redis-server, the
//! test worker (script runner), a plain HTTP client.

use std::process::Command;
use std::time::{Duration, Instant};

use quayside_common::JobId;
use quayside_e2e::gateway::TOKEN;
use quayside_e2e::{bin_path, recorded, stdout_ok, within, TestQueue};
use serde_json::json;

fn script_job(script: &str) -> serde_json::Value {
    json!({ "kind": "run", "language": "script", "files": { "job.txt": script } })
}

#[tokio::test]
async fn auth_body_limits_and_validation_errors_name_the_problem() {
    let q = TestQueue::new("gw-errors");
    let gw = q
        .spawn_gateway(|c| {
            c.limits.max_source_bytes = 64 << 10;
            c.limits.max_stdin_bytes = 64 << 10;
            c.gateway.max_body_bytes = 256 << 10;
        })
        .await;

    // Probes and the document need no token; /v1/ does.
    assert_eq!(gw.request("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(
        gw.request("GET", "/openapi.json", None, None).await.status,
        200
    );
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let r = gw.request("GET", "/v1/stats", token, None).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert!(r
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer")));
        assert_eq!(r.json()["error"], "unauthorized");
    }
    let body = script_job("print x").to_string().into_bytes();
    let r = gw
        .request("POST", "/v1/jobs", None, Some(("application/json", body)))
        .await;
    assert_eq!(r.status, 401, "no job without a token");
    assert_eq!(gw.get("/v1/stats").await.status, 200);

    // Over the body limit: 413, whatever the content.
    let big =
        json!({ "kind": "run", "language": "script", "files": { "a": "x".repeat(300 << 10) } });
    let r = gw.post_json("/v1/jobs", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "payload_too_large");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("gateway.max_body_bytes")));

    // Malformed JSON, schema errors and invalid specs: 422 naming the field.
    let r = gw
        .post("/v1/jobs", "application/json", b"{\"kind\": ")
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (422, Some("malformed_json"))
    );
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("not valid JSON")));
    let cases = [
        (
            json!({ "kind": "run", "langauge": "script", "files": { "a": "" } }),
            "bad_schema",
            "langauge",
        ),
        (
            json!({ "language": "script", "files": { "a": "" } }),
            "missing_field",
            "kind",
        ),
        (
            json!({ "kind": "run", "language": "cobol", "files": { "a": "" } }),
            "invalid_spec",
            "language",
        ),
        (
            json!({ "kind": "run", "language": "script", "files": { "a": "" }, "limits": { "pids": 100000 } }),
            "invalid_spec",
            "limits.pids",
        ),
        (
            json!({ "kind": "run", "language": "script", "files": { "../a": "" } }),
            "invalid_spec",
            "files[\"../a\"]",
        ),
        (
            json!({ "kind": "run", "language": "script", "files": { "a": "x".repeat(65 << 10) } }),
            "invalid_spec",
            "files",
        ),
    ];
    for (spec, kind, field) in cases {
        let r = gw.post_json("/v1/jobs", &spec).await;
        let b = r.json();
        assert_eq!(
            (r.status, b["error"].as_str(), b["field"].as_str()),
            (422, Some(kind), Some(field)),
            "{b}"
        );
        assert!(
            b["message"].as_str().is_some_and(|m| m.contains(field)),
            "{b}"
        );
    }
    let r = gw.post("/v1/jobs", "text/plain", b"{}").await;
    assert_eq!(r.status, 415);

    // Unknown and impossible ids.
    assert_eq!(gw.get("/v1/jobs/nope").await.status, 404);
    assert_eq!(gw.get("/v1/jobs/nope/wait?timeout=0").await.status, 404);
    assert_eq!(gw.get("/v1/batches/nope").await.status, 404);
    let r = gw.get("/v1/jobs/a%20b").await;
    assert_eq!((r.status, r.json()["field"].as_str()), (422, Some("id")));
    let r = gw.get("/v1/jobs/x/wait?timeout=-1").await;
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (422, Some("timeout"))
    );
    let r = gw.request("PUT", "/v1/jobs/x", Some(TOKEN), None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // Metrics: by route template and status, never a job id.
    let m = String::from_utf8(gw.request("GET", "/metrics", None, None).await.body).expect("utf8");
    assert!(
        m.contains(
            r#"quayside_gateway_requests_total{route="/v1/jobs/{id}",method="GET",status="404"}"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"route="/v1/stats",method="GET",status="401""#),
        "{m}"
    );
    assert!(!m.contains("nope"), "{m}");
}

#[tokio::test]
async fn post_follow_logs_live_wait_and_cancel() {
    let q = TestQueue::new("gw-flow");
    q.spawn_worker(|_| {});
    let gw = q.spawn_gateway(|c| c.gateway.max_wait_s = 30).await;

    let r = gw
        .post_json("/v1/jobs", &script_job("print one\nsleep 1500\nprint two"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("generated id").to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );

    // The first line arrives while the job still runs (it sleeps 1.5 s before the second).
    let mut events = gw.stream(&format!("/v1/jobs/{id}/logs")).await;
    let (kind, data) = within(15, "first log line", events.next())
        .await
        .expect("an event");
    assert_eq!(kind, "stdout");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data).expect("json")["data"],
        "one\n"
    );
    let first_event_id = events
        .last_id
        .clone()
        .expect("stored events carry their entry id");
    let st = gw.get(&format!("/v1/jobs/{id}")).await.json();
    assert_eq!(
        st["state"], "running",
        "the job has not ended when its first line arrives"
    );
    let (kind, data) = within(15, "second line", events.next())
        .await
        .expect("an event");
    assert_eq!((kind.as_str(), data.contains("two")), ("stdout", true));
    let (kind, data) = within(15, "end", events.next()).await.expect("an event");
    assert_eq!(
        (kind.as_str(), data.as_str()),
        ("end", r#"{"status":"succeeded"}"#)
    );
    assert!(within(5, "stream end", events.next()).await.is_none());

    // Reconnecting with the first event's id (as EventSource does) resumes after it: the
    // second line and the end, no repeat of the first.
    let mut resumed = gw
        .stream_with(
            &format!("/v1/jobs/{id}/logs"),
            &[("last-event-id", first_event_id.as_str())],
        )
        .await;
    let (kind, data) = within(15, "resumed line", resumed.next())
        .await
        .expect("an event");
    assert_eq!(
        (kind.as_str(), data.contains("two")),
        ("stdout", true),
        "{data}"
    );
    let (kind, _) = within(15, "resumed end", resumed.next())
        .await
        .expect("an event");
    assert_eq!(kind, "end");
    assert!(within(5, "resumed stream end", resumed.next())
        .await
        .is_none());

    let r = gw.get(&format!("/v1/jobs/{id}/wait?timeout=10")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.json()["status"].as_str(),
            r.json()["stdout"]["data"].as_str()
        ),
        (Some("succeeded"), Some("one\ntwo\n"))
    );

    // A job still running when the timeout passes: 202 and its record.
    let r = gw.post_json("/v1/jobs", &json!({ "id": "gw-long", "kind": "run", "language": "script", "files": { "a": "sleep 20000" } })).await;
    assert_eq!(r.status, 201);
    let again = gw.post_json("/v1/jobs", &json!({ "id": "gw-long", "kind": "run", "language": "script", "files": { "a": "print other" } })).await;
    assert_eq!(
        (again.status, again.json()["created"].as_bool()),
        (200, Some(false)),
        "idempotent"
    );
    q.wait_state(
        &JobId::parse("gw-long").expect("id"),
        quayside_common::Status::Running,
        15,
    )
    .await;
    let started = Instant::now();
    let r = gw.get("/v1/jobs/gw-long/wait?timeout=0.3").await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (202, Some("running"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // DELETE cancels it.
    let r = gw
        .request("DELETE", "/v1/jobs/gw-long", Some(TOKEN), None)
        .await;
    assert_eq!(
        (r.status, r.json()["outcome"].as_str()),
        (200, Some("requested"))
    );
    let r = gw.get("/v1/jobs/gw-long/wait?timeout=15").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("cancelled"))
    );

    // SIGTERM drains: an open log stream ends and the process exits 0.
    let r = gw.post_json("/v1/jobs", &json!({ "id": "gw-drain", "kind": "run", "language": "script", "files": { "a": "print x\nsleep 20000" } })).await;
    assert_eq!(r.status, 201);
    let mut events = gw.stream("/v1/jobs/gw-drain/logs").await;
    within(15, "first line", events.next())
        .await
        .expect("event");
    let pid = gw.pid();
    assert!(Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success());
    assert!(within(10, "stream to end on drain", events.next())
        .await
        .is_none());
    let mut gw = gw;
    let code = within(10, "gateway exit", async {
        loop {
            if let Some(s) = gw.try_wait() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn batches_enqueue_report_and_cancel() {
    let q = TestQueue::new("gw-batch");
    let gw = q.spawn_gateway(|_| {}).await;
    let jobs: Vec<_> = (0..3).map(|i| json!({ "id": format!("b-{i}"), "kind": "run", "language": "script", "files": { "a": format!("print {i}") } })).collect();
    let r = gw
        .post_json("/v1/batches", &json!({ "id": "gw-b1", "jobs": jobs }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        (r.json()["total"].as_u64(), r.json()["created"].as_u64()),
        (Some(3), Some(3))
    );
    let r = gw
        .post_json("/v1/batches", &json!({ "id": "gw-b1", "jobs": jobs }))
        .await;
    assert_eq!(
        (r.status, r.json()["created"].as_u64()),
        (200, Some(0)),
        "idempotent re-post"
    );
    let bad = json!({ "jobs": [jobs[0], { "kind": "run", "language": "script", "files": {} }] });
    let r = gw.post_json("/v1/batches", &bad).await;
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (422, Some("jobs[1].files"))
    );

    let b = gw.get("/v1/batches/gw-b1").await.json();
    assert_eq!(
        (
            b["total"].as_u64(),
            b["queued"].as_u64(),
            b["done"].as_bool()
        ),
        (Some(3), Some(3), Some(false))
    );
    q.spawn_worker(|_| {});
    within(30, "batch to finish", async {
        while gw.get("/v1/batches/gw-b1").await.json()["done"] != true {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let b = gw
        .get("/v1/batches/gw-b1?results=true&limit=2&offset=1")
        .await
        .json();
    assert_eq!(b["succeeded"].as_u64(), Some(3));
    let members = b["jobs"].as_array().expect("members");
    assert_eq!(members.len(), 2);
    assert_eq!(
        (
            members[0]["id"].as_str(),
            members[0]["result"]["stdout"]["data"].as_str()
        ),
        (Some("b-1"), Some("1\n"))
    );

    let r = gw
        .post_json(
            "/v1/batches",
            &json!({ "id": "gw-b2", "jobs": [script_job("sleep 20000")] }),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = gw
        .request("DELETE", "/v1/batches/gw-b2", Some(TOKEN), None)
        .await;
    assert_eq!(r.status, 200);
    let c = r.json();
    assert_eq!(
        c["cancelled"].as_u64().unwrap_or(0) + c["requested"].as_u64().unwrap_or(0),
        1,
        "{c}"
    );
}

#[tokio::test]
async fn one_id_is_one_job_through_the_gateway_the_cli_and_raw_redis() {
    let q = TestQueue::new("gw-idem");
    let gw = q.spawn_gateway(|_| {}).await;
    let record = q.path("runs.log");
    let script = format!("record {record}\nprint once");
    let spec = json!({ "v": 1, "id": "same-job", "kind": "run", "language": "script", "files": { "job.txt": script } });
    let completions = q.count_completions().await;

    // A raw producer's entry first (no record yet), then the gateway, then the CLI.
    q.raw_xadd("same-job", &spec.to_string()).await;
    let r = gw.post_json("/v1/jobs", &spec).await;
    assert!(r.status == 200 || r.status == 201, "{}", r.status);
    let r = gw.post_json("/v1/jobs", &spec).await;
    assert_eq!(
        (r.status, r.json()["created"].as_bool()),
        (200, Some(false))
    );
    let file = q.path("job.txt");
    std::fs::write(&file, &script).expect("write");
    let out = Command::new(bin_path("quayside"))
        .args([
            "--redis-url",
            &q.cfg.redis.url,
            "--queue",
            &q.cfg.queue.name,
            "--json",
        ])
        .args(["submit", "--language", "script", "--id", "same-job", &file])
        .output()
        .expect("quayside submit");
    let cli: serde_json::Value = serde_json::from_str(&stdout_ok(&out)).expect("json");
    assert_eq!(cli["created"], false, "the CLI sees the gateway's job");

    q.spawn_worker(|_| {});
    let r = gw.get("/v1/jobs/same-job/wait?timeout=30").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("succeeded"))
    );
    completions.wait_for(1, 10).await;
    // Give a stray second entry time to be (wrongly) run before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = JobId::parse("same-job").expect("id");
    completions.assert_exactly_once(std::slice::from_ref(&id));
    let starts = recorded(&record)
        .into_iter()
        .filter(|(_, _, what, _)| what == "start")
        .count();
    assert_eq!(starts, 1, "one execution");
    q.assert_settled(&[id]).await;
}

/// Reads until the peer closes the connection; the bytes it sent first.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got).await;
    got
}

#[tokio::test]
async fn slow_clients_are_dropped_and_connections_are_capped() {
    use tokio::io::AsyncWriteExt as _;
    let q = TestQueue::new("gw-slow");
    q.spawn_worker(|_| {});
    let gw = q
        .spawn_gateway(|c| {
            c.gateway.header_read_timeout_ms = 500;
            c.gateway.max_connections = 1;
        })
        .await;
    let addr = ("127.0.0.1", gw.port);

    // Slow-loris: half a request line, then nothing. The gateway hangs up instead of waiting.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    within(10, "slow client dropped", read_until_closed(&mut slow)).await;
    assert!(started.elapsed() >= Duration::from_millis(400));

    // One connection allowed: a live log follower holds it, so a second client is not served
    // until the follower leaves.
    let r = gw
        .post_json("/v1/jobs", &json!({ "id": "gw-hold", "kind": "run", "language": "script", "files": { "a": "print started\nsleep 20000" } }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut follower = gw.stream("/v1/jobs/gw-hold/logs").await;
    let (kind, _) = within(15, "first line", follower.next())
        .await
        .expect("event");
    assert_eq!(kind, "stdout");
    let second = tokio::spawn({
        let url = "/v1/jobs/gw-hold".to_owned();
        let gw_port = gw.port;
        async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw_port))
                .await
                .expect("connect");
            let req = format!(
                "GET {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.expect("write");
            read_until_closed(&mut s).await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served while the only slot was taken"
    );
    drop(follower);
    let reply = within(10, "second client served", second)
        .await
        .expect("join");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"gw-hold\""), "{reply}");
}

#[tokio::test]
async fn re_posting_a_batch_without_job_ids_adds_nothing() {
    let q = TestQueue::new("gw-batch-again");
    let gw = q.spawn_gateway(|_| {}).await;
    let body = json!({ "id": "again", "jobs": [script_job("print 1"), script_job("print 2")] });
    let first = gw.post_json("/v1/batches", &body).await;
    assert_eq!(first.status, 201, "{}", first.text());
    // A client that timed out and posts the same batch again.
    let second = gw.post_json("/v1/batches", &body).await;
    assert_eq!(
        (second.status, second.json()["created"].as_u64()),
        (200, Some(0)),
        "{}",
        second.text()
    );
    let ids = |r: &quayside_e2e::gateway::Reply| -> Vec<String> {
        r.json()["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ids(&second), "the same jobs, not new ones");
    let b = gw.get("/v1/batches/again").await.json();
    assert_eq!(b["total"].as_u64(), Some(2), "{b}");
}

#[tokio::test]
async fn a_raw_xadd_job_is_visible_and_cancellable_while_queued() {
    let q = TestQueue::new("gw-raw");
    let gw = q.spawn_gateway(|_| {}).await;
    let spec = json!({ "v": 1, "id": "raw-1", "kind": "run", "language": "script", "files": { "job.txt": "print x" } });
    q.raw_xadd("raw-1", &spec.to_string()).await;
    // No worker runs: the job stays queued, and the protocol says it can be seen and cancelled.
    let r = gw.get("/v1/jobs/raw-1").await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("queued")),
        "{}",
        r.text()
    );
    let r = gw
        .request("DELETE", "/v1/jobs/raw-1", Some(TOKEN), None)
        .await;
    assert_eq!(
        (r.status, r.json()["outcome"].as_str()),
        (200, Some("cancelled")),
        "{}",
        r.text()
    );
    let r = gw.get("/v1/jobs/raw-1/wait?timeout=5").await;
    assert_eq!(
        (
            r.status,
            r.json()["status"].as_str(),
            r.json()["id"].as_str()
        ),
        (200, Some("cancelled"), Some("raw-1"))
    );
    assert_eq!(q.queued().await, 0, "the cancelled job's entry is gone");
}
