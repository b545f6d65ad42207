//! The dashboard end to end: the real `quayside serve` and a test worker, each page loaded in
//! headless Chromium (driven over the DevTools protocol, see `quayside_e2e::browser`), the DOM
//! checked against what the queue holds, screenshots saved under `target/dashboard/`.

use quayside_e2e::browser::Browser;
use quayside_e2e::gateway::{GatewayProcess, TOKEN};
use quayside_e2e::{bin_path, TestQueue};
use serde_json::json;

fn script(text: &str) -> serde_json::Value {
    json!({ "kind": "run", "language": "script", "files": { "job.txt": text } })
}

fn artifacts() -> std::path::PathBuf {
    let bin = bin_path("quayside");
    let target = bin.parent().and_then(|p| p.parent()).expect("target dir");
    target.join("dashboard")
}

/// An expression true when element `id` shows exactly `text`.
fn shows(id: &str, text: impl std::fmt::Display) -> String {
    format!(
        "(document.getElementById({id:?}) || {{}}).textContent === {:?}",
        text.to_string()
    )
}

async fn log_has(gw: &GatewayProcess, id: &str, text: &str) -> bool {
    let r = gw.get(&format!("/v1/jobs/{id}/logs?follow=false")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().contains(text)
}

#[tokio::test]
async fn pages_show_the_queue_batches_and_live_job_logs_as_text() {
    let q = TestQueue::new("dashboard");
    let gw = q.spawn_gateway(|_| {}).await;
    let base = gw.url();

    // The files: exact types, the policy, no token needed (they hold no data).
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let r = gw.request("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let body = r.text().to_ascii_lowercase();
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("\"//"),
            "{path} names another origin"
        );
    }
    let r = gw.request("GET", "/ui/../Cargo.toml", None, None).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        gw.request("GET", "/ui/nope.js", None, None).await.status,
        404
    );

    // A paused queue with a known backlog, and one worker that heartbeats but claims nothing.
    assert_eq!(gw.post_json("/v1/pause", &json!({})).await.status, 200);
    let batch = format!("{}-b", q.cfg.queue.name);
    let jobs: Vec<_> = [
        ("print ok", "high"),
        ("print ok", "high"),
        ("print ok", "normal"),
        ("exit 3", "normal"),
        ("eprint broken\nexit 4", "low"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (s, p))| {
        let mut j = script(&format!("{s}\n# {i}"));
        j["priority"] = json!(p);
        j["labels"] = json!({ "name": format!("member-{i}") });
        j
    })
    .collect();
    let r = gw
        .post_json("/v1/batches", &json!({ "id": batch, "jobs": jobs }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let _worker = q.spawn_worker(|c| c.worker.slots = 2);

    let shots = artifacts();
    let mut b = Browser::start(&q.dir).await.expect("chromium");

    // A wrong token: the sign-in form, saying why.
    b.open(&format!("{base}/#token=wrong-token-0123456789abcdef"))
        .await
        .expect("open");
    b.wait_for(
        "!document.getElementById('login').hidden && document.getElementById('login-why').textContent.includes('401')",
        20,
        "the sign-in form after a 401",
    )
    .await
    .expect("401");

    // Overview, with the token passed once in the address and removed from it.
    b.open(&format!("{base}/#token={TOKEN}"))
        .await
        .expect("open");
    let overview = [
        shows("waiting-high", 2),
        shows("waiting-normal", 2),
        shows("waiting-low", 1),
        shows("running-normal", 0),
        shows("delayed", 0),
        shows("dead-letters", 0),
        shows("paused", "yes"),
        "!!document.querySelector('tr[data-worker=\"w0\"]')".into(),
    ]
    .join(" && ");
    b.wait_for(&overview, 20, "the backlog, the pause and the worker")
        .await
        .expect("overview");
    let worker = b.text("tr[data-worker=\"w0\"]").await.expect("row");
    assert!(
        worker.contains("script") && worker.contains('2'),
        "{worker}"
    );
    let cells = b
        .eval(
            "[...document.querySelectorAll('tr[data-worker=\"w0\"] td')].map(td => td.textContent)",
        )
        .await
        .expect("cells");
    assert_eq!(cells[2], "script", "runner: {cells}");
    assert_eq!(cells[3], "2", "slots: {cells}");
    assert_eq!(cells[4], "0", "in flight (paused): {cells}");
    // The recent batches: the one posted, all five queued, linking to its page.
    let row = b
        .eval(&format!(
            "[...document.querySelectorAll('tr[data-batch=\"{batch}\"] td')].map(td => td.textContent)"
        ))
        .await
        .expect("batch row");
    assert_eq!(row[0], format!("{batch} in progress"), "{row}");
    assert_eq!(
        (&row[3], &row[4], &row[5], &row[6]),
        (&json!("0/5"), &json!("0"), &json!("0"), &json!("5")),
        "{row}"
    );
    let link = b
        .eval(&format!(
            "document.querySelector('tr[data-batch=\"{batch}\"] a').getAttribute('href')"
        ))
        .await
        .expect("link");
    assert_eq!(link, json!(format!("#/batch/{batch}")));
    let href = b.eval("location.href").await.expect("href");
    assert!(!href.to_string().contains(TOKEN), "token left in {href}");
    let kept = b.eval("sessionStorage.getItem('quayside.token')").await;
    assert_eq!(kept.expect("storage"), json!(TOKEN));
    b.screenshot(&shots.join("overview.png"))
        .await
        .expect("shot");

    // The batch page: all queued, then (same page, refreshed) the outcome and its failures.
    b.eval(&format!("location.hash = '#/batch/{batch}'"))
        .await
        .expect("go");
    b.wait_for(
        &format!(
            "{} && {}",
            shows("batch-queued", 5),
            shows("batch-total", 5)
        ),
        20,
        "five queued of five",
    )
    .await
    .expect("batch queued");
    assert_eq!(gw.post_json("/v1/resume", &json!({})).await.status, 200);
    b.wait_for(
        &[
            shows("batch-succeeded", 3),
            shows("batch-failed", 2),
            shows("batch-running", 0),
            shows("batch-queued", 0),
            "document.querySelectorAll('#failures tr[data-job] a[href^=\"#/job/\"]').length === 2"
                .into(),
        ]
        .join(" && "),
        30,
        "three succeeded, two failed and their links",
    )
    .await
    .expect("batch done");
    b.screenshot(&shots.join("batch.png")).await.expect("shot");

    // A failure's link opens its job page.
    b.eval("document.querySelector('#failures tr[data-job] a').click()")
        .await
        .expect("click");
    b.wait_for(
        &format!(
            "{} && {} && {}",
            shows("job-kind", "run"),
            shows("job-language", "script"),
            shows("job-batch", &batch)
        ),
        20,
        "the failed member's spec",
    )
    .await
    .expect("member page");

    // A live log: the first line shows while the job sleeps, the second arrives on the same page.
    let live = format!("{}-live", q.cfg.queue.name);
    let mut spec = script("print first line\nsleep 4000\nprint second line");
    spec["id"] = json!(live);
    assert_eq!(gw.post_json("/v1/jobs", &spec).await.status, 201);
    quayside_e2e::within(20, "the first line", async {
        while !log_has(&gw, &live, "first line").await {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    b.eval(&format!("location.hash = '#/job/{live}'"))
        .await
        .expect("go");
    b.wait_for(
        "document.getElementById('log') && document.getElementById('log').textContent.includes('first line')",
        20,
        "the first line",
    )
    .await
    .expect("first line");
    let early = b.text("#log").await.expect("log");
    assert!(
        !log_has(&gw, &live, "second line").await,
        "the job printed its second line before the page showed the first: the machine is too slow for this check"
    );
    assert!(!early.contains("second line"), "{early}");
    b.screenshot(&shots.join("job-live.png"))
        .await
        .expect("shot");
    // The gateway goes away mid-stream and comes back on its port: the page reconnects with
    // Last-Event-ID, so the first line is not shown twice.
    let port = gw.port;
    drop(gw);
    b.wait_for(
        "document.getElementById('log-state').textContent.includes('reconnecting')",
        20,
        "the dropped connection noticed",
    )
    .await
    .expect("drop");
    let gw = q.spawn_gateway_on(port, |_| {}).await;
    b.wait_for(
        &format!(
            "document.getElementById('log').textContent.includes('second line') && {} && {}",
            shows("log-state", "ended: succeeded"),
            shows("result-status", "succeeded")
        ),
        30,
        "the second line, live, and the result",
    )
    .await
    .expect("second line");
    assert_eq!(
        b.text("#log").await.expect("log"),
        "first line\nsecond line\n",
        "resumed after the last event seen"
    );
    // A later load shows both, once each.
    b.eval("window.beforeReload = true").await.expect("mark");
    b.reload().await.expect("reload");
    b.wait_for(
        &format!(
            "!window.beforeReload && {} && {}",
            shows("log-state", "ended: succeeded"),
            shows("result-status", "succeeded")
        ),
        20,
        "the whole log again",
    )
    .await
    .expect("reload log");
    assert_eq!(
        b.text("#log").await.expect("log"),
        "first line\nsecond line\n"
    );
    assert_eq!(
        b.text("#result-stdout").await.expect("stdout"),
        "first line\nsecond line\n"
    );

    // Output that looks like markup is shown as text and never runs.
    let xss = format!("{}-xss", q.cfg.queue.name);
    let mut spec = script("print <script>alert(1)</script>\neprint <img src=x onerror=alert(2)>");
    spec["id"] = json!(xss);
    spec["labels"] = json!({ "name": "<b>bold</b>" });
    assert_eq!(gw.post_json("/v1/jobs", &spec).await.status, 201);
    b.eval(&format!("location.hash = '#/job/{xss}'"))
        .await
        .expect("go");
    b.wait_for(
        &format!(
            "{} && {}",
            shows("log-state", "ended: succeeded"),
            shows("result-status", "succeeded")
        ),
        30,
        "the hostile job's result",
    )
    .await
    .expect("xss page");
    let log = b.text("#log").await.expect("log");
    assert!(log.contains("<script>alert(1)</script>"), "{log}");
    assert!(log.contains("<img src=x onerror=alert(2)>"), "{log}");
    assert!(b
        .text("#result-stdout")
        .await
        .expect("stdout")
        .contains("<script>alert(1)</script>"));
    assert!(b
        .text("#job-labels")
        .await
        .expect("labels")
        .contains("<b>bold</b>"));
    let injected = b
        .eval("[document.scripts.length, document.querySelectorAll('#view img, #view b b, #view script').length]")
        .await
        .expect("elements");
    assert_eq!(
        injected,
        json!([1, 0]),
        "only app.js runs; no element came from job output"
    );
    b.screenshot(&shots.join("job-xss.png"))
        .await
        .expect("shot");
    assert!(b.dialogs.is_empty(), "a dialog opened: {:?}", b.dialogs);

    // Nothing but the gateway was ever asked for.
    assert!(b.requests.iter().any(|u| u.ends_with("/ui/app.js")));
    assert!(b.requests.iter().any(|u| u.contains("/v1/stats")));
    assert!(b.requests.iter().any(|u| u.contains("/logs")));
    let outside: Vec<_> = b
        .requests
        .iter()
        .filter(|u| !u.starts_with(&format!("{base}/")) && *u != "about:blank")
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the gateway: {outside:?}"
    );
}
