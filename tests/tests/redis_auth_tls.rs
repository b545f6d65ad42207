//! Production Redis: a password, an ACL user limited to the queue's keys and channels, and TLS
//! with a private CA, for the worker, the library and the CLI. The password never shows in
//! logs, `--print-config` or metrics.

use std::process::{Command, Stdio};
use std::time::Duration;

use quayside_common::config::Secret;
use quayside_common::{JobId, Status};
use quayside_e2e::ops::{http_get, wait_http, TestCerts};
use quayside_e2e::{bin_path, free_addr};
use quayside_e2e::{private_dir, stdout_ok, PrivateRedis, TestQueue};

const PASSWORD: &str = "s3cret-Quayside-pw";

/// The commands a Quayside user needs (workers, producers, the CLI), as documented in README.md.
/// Keys and channels are confined to the queue's prefix.
const ACL_COMMANDS: &str =
    "-@all +@read +@write +@pubsub +@connection +@transaction +evalsha +eval +script|load +time -@dangerous";

/// Runs a few jobs that exercise every script: success, a renewed lease, a retry that ends in a
/// dead letter, and the cancellation of a running job.
async fn run_every_kind_of_job(q: &TestQueue) {
    let ok = q.job("print over auth");
    let renewed = q.job("sleep 1500\nprint renewed");
    let mut dead = q.job("infra runner down");
    dead.max_attempts = Some(2);
    let running = q.job("sleep 60000");
    let ids: Vec<JobId> = [&ok, &renewed, &dead, &running]
        .iter()
        .map(|s| s.id.clone())
        .collect();
    q.producer
        .enqueue_many(&[ok, renewed, dead, running.clone()])
        .await
        .expect("enqueue");
    q.wait_state(&running.id, Status::Running, 15).await;
    q.producer.cancel(&running.id).await.expect("cancel");
    let statuses: Vec<Status> = q
        .wait_all(&ids, 30)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [
            Status::Succeeded,
            Status::Succeeded,
            Status::Dead,
            Status::Cancelled
        ]
    );
    assert_eq!(q.producer.dlq_list(10).await.expect("dlq").len(), 1);
    q.assert_settled(&ids).await;
}

fn cli(q: &TestQueue, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(bin_path("quayside"))
        .args(["--queue", &q.cfg.queue.name])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run quayside")
}

#[tokio::test]
async fn a_password_from_config_or_environment_works_and_is_never_shown() {
    let dir = private_dir("auth-pw");
    let redis = PrivateRedis::start_with(&dir, &["--requirepass", PASSWORD]).expect("redis");
    let url = redis.url();
    let q = TestQueue::with_redis("auth-pw", |r| {
        r.url = url.clone();
        r.password = Some(Secret::new(PASSWORD));
    });
    let addr = free_addr();
    let w = {
        let addr = addr.clone();
        q.spawn_worker(move |c| c.metrics.listen_addr = addr)
    };
    let spec = q.job("print authenticated");
    q.producer.enqueue(&spec).await.expect("enqueue");
    let r = q.wait_one(&spec.id, 20).await;
    assert_eq!(r.status, Status::Succeeded);

    // The CLI takes the password from the environment; without it Redis refuses (exit 5).
    let out = cli(
        &q,
        &["--redis-url", &url, "--json", "stats"],
        &[("QUAYSIDE_REDIS__PASSWORD", PASSWORD)],
    );
    stdout_ok(&out);
    let out = cli(&q, &["--redis-url", &url, "stats"], &[]);
    assert_eq!(out.status.code(), Some(5));
    let url_with_password = url.replace("redis://", &format!("redis://:{PASSWORD}@"));
    let out = cli(
        &q,
        &["--redis-url", &url_with_password, "--json", "stats"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "password in the URL works too");

    // Never shown: --print-config, the startup log, error messages, metrics.
    for (key, value) in [
        ("QUAYSIDE_REDIS__PASSWORD", PASSWORD.to_owned()),
        ("QUAYSIDE_REDIS__URL", url_with_password.clone()),
    ] {
        let out = Command::new(bin_path("quayside-worker"))
            .arg("--print-config")
            .env(key, &value)
            .output()
            .expect("print-config");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && printed.contains("***"), "{printed}");
        assert!(
            !printed.contains(PASSWORD),
            "{key} leaked by --print-config"
        );
    }
    for (key, value) in [
        ("QUAYSIDE_REDIS__PASSWORD", PASSWORD),
        ("QUAYSIDE_REDIS__URL", url_with_password.as_str()),
    ] {
        let startup = startup_log_of_the_real_worker(&[(key, value)]).await;
        assert!(startup.contains("worker starting"), "{startup}");
        assert!(
            !startup.contains(PASSWORD),
            "{key}: password in the startup log"
        );
    }
    let wrong = cli(
        &q,
        &[
            "--redis-url",
            &url_with_password.replace(PASSWORD, "wrong-pw"),
            "stats",
        ],
        &[],
    );
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains("wrong-pw"));
    let (_, metrics) = http_get(&addr, "/metrics").await.expect("metrics");
    assert!(metrics.contains("quayside_jobs_finished_total") && !metrics.contains(PASSWORD));
    drop(w);
    let log = std::fs::read_to_string(q.path("w0.log")).expect("worker log");
    assert!(!log.contains(PASSWORD), "password in the worker log");
}

/// Starts the real `quayside-worker` (debug logs) and returns what it logged in its first
/// seconds: it may stop early (no runner built in) or keep running; either way it is stopped.
async fn startup_log_of_the_real_worker(env: &[(&str, &str)]) -> String {
    let log = std::env::temp_dir().join(format!("qs-startup-{}.log", std::process::id()));
    let mut child = Command::new(bin_path("quayside-worker"))
        .args(["--log-level", "debug"])
        .env("QUAYSIDE_METRICS__LISTEN_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start quayside-worker");
    for _ in 0..40 {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap_or_default()
}

#[tokio::test]
async fn an_acl_user_limited_to_the_queues_keys_runs_every_flow() {
    let dir = private_dir("auth-acl");
    let redis = PrivateRedis::start(&dir).expect("redis");
    let url = redis.url();
    let q = TestQueue::with_redis("auth-acl", |r| {
        r.url = url.clone();
        r.username = Some("quayside".into());
        r.password = Some(Secret::new(PASSWORD));
    });
    let mut admin = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let prefix = q.keys.prefix().to_owned();
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg("quayside")
        .arg("on")
        .arg(format!(">{PASSWORD}"))
        .arg("resetkeys")
        .arg(format!("~{prefix}*"))
        .arg("resetchannels")
        .arg(format!("&{prefix}*"));
    for rule in ACL_COMMANDS.split(' ') {
        setuser.arg(rule);
    }
    let _: () = setuser.query_async(&mut admin).await.expect("ACL SETUSER");
    let _: () = redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async(&mut admin)
        .await
        .expect("ACL LOG RESET");

    let addr = free_addr();
    {
        let addr = addr.clone();
        q.spawn_worker(move |c| {
            c.metrics.listen_addr = addr;
            c.worker.slots = 4;
        });
    }
    wait_http(&addr, "/readyz", 20, "ready as the ACL user", |s, _| {
        s == 200
    })
    .await;
    run_every_kind_of_job(&q).await;
    let env = [
        ("QUAYSIDE_REDIS__USERNAME", "quayside"),
        ("QUAYSIDE_REDIS__PASSWORD", PASSWORD),
    ];
    for args in [&["stats"][..], &["dlq", "list"], &["dlq", "purge"]] {
        let out = cli(&q, &[&["--redis-url", &url][..], args].concat(), &env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Everything was allowed except what the worker only tries (CONFIG GET, to warn about
    // eviction and persistence settings), and nothing outside the queue is reachable.
    let denied: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin)
        .await
        .expect("ACL LOG");
    let denied: Vec<String> = denied
        .iter()
        .map(|e| format!("{e:?}"))
        .filter(|e| !e.to_lowercase().contains("config|get"))
        .collect();
    assert!(
        denied.is_empty(),
        "commands the ACL user was refused: {denied:?}"
    );
    let mut user =
        redis::Client::open(url.replace("redis://", &format!("redis://quayside:{PASSWORD}@")))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect as the ACL user");
    let e = redis::cmd("SET")
        .arg("other:key")
        .arg("x")
        .query_async::<()>(&mut user)
        .await
        .expect_err("a key outside the queue");
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
}

#[tokio::test]
async fn tls_with_a_private_ca_for_worker_library_and_cli() {
    let dir = private_dir("tls");
    let certs = TestCerts::generate(&dir.join("certs")).expect("certificates");
    let ca = certs.ca.display().to_string();
    let mut args = certs.redis_server_args();
    args.extend(["--requirepass".to_owned(), PASSWORD.to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let redis = PrivateRedis::start_with(&dir, &args).expect("redis with TLS");
    let url = format!("rediss://localhost:{}", redis.port);
    let q = TestQueue::with_redis("tls", |r| {
        r.url = url.clone();
        r.tls_ca_file = Some(certs.ca.clone());
        r.password = Some(Secret::new(PASSWORD));
    });
    let addr = free_addr();
    {
        let addr = addr.clone();
        q.spawn_worker(move |c| c.metrics.listen_addr = addr);
    }
    let ready = wait_http(&addr, "/readyz", 20, "ready over TLS", |s, _| s == 200).await;
    assert!(ready.contains("\"redis\":\"ok\""), "{ready}");
    run_every_kind_of_job(&q).await;

    // The CLI reads the same settings from a config file.
    let file = q.path("cli.toml");
    std::fs::write(
        &file,
        format!("[redis]\nurl = \"{url}\"\ntls_ca_file = \"{ca}\"\npassword = \"{PASSWORD}\"\n"),
    )
    .expect("write cli config");
    let out = cli(&q, &["--config", &file, "--json", "stats"], &[]);
    let stats: serde_json::Value = serde_json::from_str(&stdout_ok(&out)).expect("json");
    assert_eq!(stats["dead_letters"], 1);

    // Without the CA the server's certificate is not trusted; without TLS nothing answers.
    for (url, ca) in [
        (url.clone(), None),
        (format!("redis://localhost:{}", redis.port), None),
        (url.clone(), Some(&certs.ca)),
    ] {
        let trusted = ca.is_some();
        let mut cfg = q.cfg.clone();
        cfg.redis.url = url;
        cfg.redis.tls_ca_file = ca.cloned();
        let producer = quayside_producer::Producer::new(&cfg).expect("producer");
        let got = tokio::time::timeout(Duration::from_secs(15), producer.stats()).await;
        assert_eq!(
            matches!(got, Ok(Ok(_))),
            trusted,
            "{:?}",
            got.map(|r| r.map(|s| s.queue))
        );
    }
}
