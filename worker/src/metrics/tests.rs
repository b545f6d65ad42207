use std::sync::{Arc, Mutex as StdMutex};

use quayside_common::protocol::claim::{DropReason, Dropped};
use quayside_common::protocol::DeadLetterReason;
use quayside_common::Status;

use super::*;
use crate::runner::RunnerError;

#[test]
fn names_follow_prometheus_conventions() {
    for name in ALL {
        assert!(name.starts_with("quayside_"), "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        assert!(
            !name.ends_with("_ms") && !name.contains("millis"),
            "{name}: base units"
        );
    }
    let unique: std::collections::HashSet<_> = ALL.iter().collect();
    assert_eq!(unique.len(), ALL.len());
}

#[test]
fn languages_resolve_to_a_closed_set() {
    let langs = ["python".to_owned(), "c".to_owned()];
    let m = WorkerMetrics::new("q", "script", 2, &langs);
    let c = m.labels(Priority::High, Some("c"));
    assert_eq!(&*m.language(c), "c");
    assert_eq!(
        &*m.language(m.labels(Priority::High, Some("python"))),
        "python"
    );
    for other in [Some("cobol"), Some("../etc"), None] {
        assert_eq!(
            &*m.language(m.labels(Priority::Low, other)),
            UNKNOWN_LANGUAGE
        );
    }
}

#[test]
fn recording_without_a_recorder_is_harmless() {
    let m = WorkerMetrics::new("q", "script", 2, &["c".to_owned()]);
    let j = m.labels(Priority::Normal, Some("c"));
    m.claimed(j, Duration::from_millis(3));
    m.emit(Event::Cancelled { job: j });
    m.ran(j, Duration::from_secs(1), Some(Duration::from_millis(200)));
    drop(m.slot_taken());
}

/// Runs `record` against a private Prometheus recorder with the table described; returns
/// the exposition text and the log lines written meanwhile (JSON, one per line).
fn recorded(record: impl FnOnce()) -> (String, Vec<serde_json::Value>) {
    #[derive(Clone, Default)]
    struct Lines(Arc<StdMutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        tracing::subscriber::with_default(subscriber, || {
            describe();
            record();
        })
    });
    let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
    let logs = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a json log line"))
        .collect();
    (handle.render(), logs)
}

/// The log line with `message`, or a panic listing them all.
fn line<'a>(logs: &'a [serde_json::Value], message: &str) -> &'a serde_json::Value {
    logs.iter()
        .find(|l| l["fields"]["message"] == message)
        .unwrap_or_else(|| panic!("no log line {message:?} in {logs:#?}"))
}

#[test]
fn tenant_gauges_fold_unconfigured_tenants_into_other() {
    use quayside_common::protocol::stats::TenantSample;
    let (text, _) = recorded(|| {
        let m = WorkerMetrics::new("q", "docker", 2, &["c".to_owned()])
            .with_tenants([("acme".to_owned(), Default::default())].into());
        let t = |name: &str, depth, pending, paused| TenantSample {
            tenant: name.to_owned(),
            depth: [0, depth, 0],
            pending: [0, pending, 0],
            paused_since_ms: paused,
        };
        let sample = crate::queue::QueueSample {
            tenants: vec![
                t("default", 1, 0, None),
                t("acme", 5, 2, Some(1)),
                t("made-up-1", 4, 1, None),
                t("made-up-2", 3, 3, Some(1)),
            ],
            ..Default::default()
        };
        m.set_queue(&sample);
    });
    for want in [
        "quayside_tenant_queued{queue=\"q\",tenant=\"acme\"} 3",
        "quayside_tenant_running{queue=\"q\",tenant=\"acme\"} 2",
        "quayside_tenant_paused{queue=\"q\",tenant=\"acme\"} 1",
        "quayside_tenant_queued{queue=\"q\",tenant=\"other\"} 3",
        "quayside_tenant_running{queue=\"q\",tenant=\"other\"} 4",
        "quayside_tenant_paused{queue=\"q\",tenant=\"other\"} 0",
        "quayside_tenant_queued{queue=\"q\",tenant=\"default\"} 1",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(!text.contains("made-up"), "{text}");
}

#[test]
fn every_metric_of_the_table_is_described_with_its_kind() {
    let (text, _) = recorded(|| {
        let capped = quayside_common::config::TenantConfig {
            max_running: 5,
            ..Default::default()
        };
        let m = WorkerMetrics::new("q", "docker", 2, &["c".to_owned()])
            .with_tenants([("acme".to_owned(), capped)].into());
        let j = m.labels(Priority::Normal, Some("c"));
        m.claimed(j, Duration::from_millis(3));
        m.ran(j, Duration::from_secs(1), Some(Duration::from_millis(200)));
        m.emit(Event::RunnerFailed(&RunnerError::Cancelled));
        m.emit(Event::Retried {
            job: j,
            reason: "unavailable",
            error: "engine down",
            delay_ms: 10,
            failures: 1,
        });
        m.emit(Event::Rejected {
            job: j,
            reason: DeadLetterReason::NotJson,
            error: "not json",
        });
        m.emit(Event::Reclaimed { jobs: 2 });
        m.emit(Event::HandedBack(HandBack::Drain));
        m.webhook(Some("acme"), "delivered");
        m.claim_skipped("acme", "running_cap");
        m.claim_skipped("default", "paused");
        m.webhook(Some("made-up"), "dead");
        m.set_queue(&crate::queue::QueueSample::default());
        m.emit(Event::SampleFailed(&crate::queue::QueueError::Reply {
            op: "stats",
            detail: "x".into(),
        }));
        let pool = PoolMetrics::new("q");
        pool.waiting("c", 1);
        pool.hit("c");
        pool.miss("c", Miss::Limits);
        pool.refilled("c", Duration::from_millis(150));
    });
    for want in [
        "quayside_webhooks_total{queue=\"q\",tenant=\"acme\",outcome=\"delivered\"} 1",
        "quayside_webhooks_total{queue=\"q\",tenant=\"other\",outcome=\"dead\"} 1",
        "quayside_tenant_claims_skipped_total{queue=\"q\",tenant=\"acme\",reason=\"running_cap\"} 1",
        "quayside_tenant_claims_skipped_total{queue=\"q\",tenant=\"default\",reason=\"paused\"} 1",
        "quayside_pool_misses_total{queue=\"q\",language=\"c\",reason=\"limits\"} 1",
        "quayside_pool_containers{queue=\"q\",language=\"c\"} 1",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    for metric in TABLE {
        let name = metric.name;
        assert!(
            text.contains(&format!("# HELP {name} {}\n", metric.help)),
            "{name} described: {text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} {}\n", metric.kind.as_str())),
            "{name} is a {}: {text}",
            metric.kind.as_str()
        );
    }
}

#[test]
fn an_event_writes_its_log_line_and_its_counters_together() {
    let (text, logs) = recorded(|| {
        let m = WorkerMetrics::new("q", "docker", 2, &["c".to_owned()]);
        let j = m.labels(Priority::High, Some("c"));
        m.emit(Event::RunnerGaveUp {
            job: j,
            reason: DeadLetterReason::InfraTimeout,
            error: "engine down for 10 min",
        });
        m.emit(Event::EntryDropped(&Dropped {
            priority: Priority::Low,
            entry: "1-0".into(),
            reason: DropReason::DeadLettered(DeadLetterReason::MissingField),
        }));
        m.emit(Event::Finished {
            job: j,
            status: Status::Failed,
            exit_code: Some(1),
        });
    });
    let gave_up = line(&logs, "runner failed; dead-lettering");
    assert_eq!(gave_up["level"], "ERROR");
    assert_eq!(gave_up["target"], "quayside_worker::execute");
    assert_eq!(gave_up["fields"]["reason"], "infra_timeout");
    assert_eq!(gave_up["fields"]["error"], "engine down for 10 min");
    let job = r#"queue="q",priority="high",language="c",runner="docker""#;
    for series in [
        format!(r#"quayside_jobs_finished_total{{{job},status="dead"}} 1"#),
        format!(r#"quayside_jobs_dead_lettered_total{{{job},reason="infra_timeout"}} 1"#),
        format!(r#"quayside_jobs_finished_total{{{job},status="failed"}} 1"#),
        r#"quayside_jobs_dead_lettered_total{queue="q",priority="low",language="unknown",runner="docker",reason="missing_field"} 1"#.to_owned(),
        r#"quayside_jobs_rejected_total{queue="q",priority="low",reason="missing_field"} 1"#.to_owned(),
    ] {
        assert!(text.contains(&series), "{series} in {text}");
    }
    assert!(
        !text.contains(r#"quayside_jobs_rejected_total{queue="q",priority="high""#),
        "a dead job is no rejection: {text}"
    );
    let dropped = line(&logs, "dead-lettered a malformed stream entry");
    assert_eq!(dropped["target"], "quayside_worker::claim");
    assert_eq!(dropped["fields"]["entry"], "1-0");
    assert_eq!(dropped["fields"]["priority"], "low");
    let finished = line(&logs, "job finished");
    assert_eq!(finished["fields"]["status"], "failed");
    assert_eq!(finished["fields"]["exit_code"], "Some(1)");
}

#[test]
fn runner_down_and_up_move_the_claiming_gauge_until_draining() {
    let (text, logs) = recorded(|| {
        let m = WorkerMetrics::new("q", "docker", 2, &[]);
        m.emit(Event::RunnerUp { runner: "docker" });
        m.emit(Event::RunnerDown { runner: "docker" });
        m.emit(Event::RunnerUp { runner: "docker" });
        m.set_draining();
        m.emit(Event::RunnerUp { runner: "docker" });
    });
    assert!(
        text.contains("quayside_worker_claiming{queue=\"q\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("quayside_worker_draining{queue=\"q\"} 1\n"),
        "{text}"
    );
    let down = line(&logs, "not claiming jobs until the runner is back");
    assert_eq!(down["level"], "WARN");
    assert_eq!(down["target"], "quayside_worker::gate");
    assert_eq!(down["fields"]["runner"], "docker");
}

/// The rows of `docs/metrics.md` that describe the worker's metrics (every section before the
/// gateway's): name, type and label names.
fn documented() -> Vec<(String, String, Vec<String>)> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md"),
    )
    .expect("docs/metrics.md");
    let worker = doc
        .split("\n## The HTTP gateway")
        .next()
        .expect("text before the gateway section");
    worker
        .lines()
        .filter(|l| l.starts_with("| `quayside_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let labels = cells[3].split(',').map(|s| s.trim().to_owned()).collect();
            (
                cells[1].trim_matches('`').to_owned(),
                cells[2].to_owned(),
                labels,
            )
        })
        .collect()
}

#[test]
fn the_docs_list_exactly_the_table() {
    let ours: Vec<_> = TABLE
        .iter()
        .map(|m| {
            let labels = m.labels.iter().map(|l| (*l).to_owned()).collect();
            (m.name.to_owned(), m.kind.as_str().to_owned(), labels)
        })
        .collect();
    assert_eq!(documented(), ours);
}
