//! The files an operator deploys with: the compose fleet, the Prometheus config, the Grafana
//! dashboard (only metrics the worker exports) and the metrics reference.

use std::collections::BTreeSet;
use std::process::Command;

use quayside_e2e::ops::{repo_root, run_ok, which};
use quayside_worker::metrics;

/// `docker-compose.yml` as JSON, parsed by Python's YAML loader.
fn compose() -> serde_json::Value {
    let file = repo_root().join("docker-compose.yml");
    let json = run_ok(
        Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
            ])
            .arg(&file),
    )
    .expect("python3 with PyYAML (apt-get install python3-yaml) parses docker-compose.yml");
    serde_json::from_str(&json).expect("json")
}

#[test]
fn the_compose_fleet_is_valid_and_complete() {
    let root = repo_root();
    let has_plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_plugin {
        run_ok(
            Command::new("docker")
                .current_dir(&root)
                .args(["compose", "config", "--quiet"]),
        )
        .expect("docker compose config");
    }
    let c = compose();
    let services = c["services"].as_object().expect("services");
    for name in ["redis", "worker", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name}");
    }
    let redis_cmd = c["services"]["redis"]["command"].to_string();
    assert!(
        redis_cmd.contains("appendonly") && redis_cmd.contains("noeviction"),
        "{redis_cmd}"
    );

    let worker = &c["services"]["worker"];
    assert!(
        worker.get("container_name").is_none(),
        "a fixed name prevents --scale"
    );
    assert!(
        worker.get("ports").is_none(),
        "published ports collide when scaled"
    );
    assert_eq!(
        worker["environment"]["QUAYSIDE_METRICS__LISTEN_ADDR"],
        "0.0.0.0:9464"
    );
    assert!(
        worker["volumes"]
            .to_string()
            .contains("/var/run/docker.sock"),
        "workers reach the host's Docker engine"
    );
    let grace = worker["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period");
    let grace_s: u64 = grace.trim_end_matches('s').parse().expect("seconds");
    let drain_s = quayside_common::config::WorkerConfig::default().drain_timeout_ms / 1000;
    assert!(
        grace_s > drain_s,
        "grace {grace_s}s must exceed the drain timeout {drain_s}s"
    );

    // Every file mounted from the repository exists.
    for svc in services.values() {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().expect("short volume syntax");
            if let Some(local) = v.strip_prefix("./") {
                let path = local.split(':').next().expect("source");
                assert!(root.join(path).exists(), "{path} is mounted but missing");
            }
        }
    }
    let prom = std::fs::read_to_string(root.join("deploy/prometheus/prometheus.yml"))
        .expect("prometheus.yml");
    assert!(
        prom.contains("dns_sd_configs")
            && prom.contains("names: [worker]")
            && prom.contains("port: 9464")
    );
}

#[test]
fn the_prometheus_config_passes_promtool() {
    let promtool =
        which("promtool").expect("promtool not installed: apt-get install -y prometheus");
    let out = run_ok(
        Command::new(promtool)
            .args(["check", "config"])
            .arg(repo_root().join("deploy/prometheus/prometheus.yml")),
    )
    .expect("promtool check config");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// PromQL words that are not metric names.
const PROMQL: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "rate",
    "irate",
    "increase",
    "deriv",
    "delta",
    "histogram_quantile",
    "label_values",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "absent",
    "vector",
    "le",
];

/// Metric names in one PromQL expression: identifiers outside label matchers, ranges, strings
/// and `by (...)` lists, that are not PromQL words.
fn metric_names(expr: &str) -> Vec<String> {
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = false;
    for ch in expr.chars() {
        match ch {
            '"' if depth_brace == 0 => in_string = !in_string,
            '{' if !in_string => depth_brace += 1,
            '}' if !in_string => depth_brace -= 1,
            '[' if !in_string => depth_bracket += 1,
            ']' if !in_string => depth_bracket -= 1,
            c if !in_string && depth_brace == 0 && depth_bracket == 0 => cleaned.push(c),
            _ => {}
        }
    }
    // Tokens: identifiers, numbers, single punctuation characters.
    let mut tokens: Vec<String> = Vec::new();
    for ch in cleaned.chars() {
        let ident = ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' || ch == '.';
        match tokens.last_mut() {
            Some(last)
                if ident
                    && last
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.') =>
            {
                last.push(ch)
            }
            _ if ch.is_whitespace() => tokens.push(String::new()),
            _ => tokens.push(ch.to_string()),
        }
    }
    tokens.retain(|t| !t.is_empty());
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        if matches!(t, "by" | "without" | "on" | "ignoring")
            && tokens.get(i + 1).map(String::as_str) == Some("(")
        {
            // A grouping list of label names: skip to its ")".
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && !PROMQL.contains(&t)
        {
            names.push(t.to_owned());
        }
        i += 1;
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le, language) (rate(quayside_job_duration_seconds_bucket{queue=~"$q"}[5m])))"#
        ),
        ["quayside_job_duration_seconds_bucket"]
    );
    assert_eq!(metric_names(r#"count(up{job="x"} == 1)"#), ["up"]);
    assert_eq!(
        metric_names("sum by (queue) (rate(a_total[5m])) / sum without (x) (b) > 0.25"),
        ["a_total", "b"]
    );
}

#[test]
fn the_dashboard_uses_only_metrics_the_worker_exports() {
    let path = repo_root().join("deploy/grafana/dashboards/quayside.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
            .expect("valid JSON");
    let mut exprs: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        assert_eq!(
            p["datasource"]["uid"], "prometheus",
            "panel {} uses the provisioned datasource",
            p["title"]
        );
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    let templating = dash["templating"]["list"][0]["definition"]
        .as_str()
        .expect("queue variable");
    assert!(templating.starts_with("label_values(quayside_worker_slots, queue)"));

    let exported: BTreeSet<&str> = metrics::ALL.iter().copied().collect();
    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                .unwrap_or(&name)
                .to_owned();
            assert!(
                exported.contains(base.as_str()) || base == "up",
                "dashboard expression {e:?} uses {name}, which the worker does not export"
            );
            used.insert(base);
        }
    }
    for must in [
        metrics::QUEUE_LAG.name,
        metrics::JOBS_FINISHED_TOTAL.name,
        metrics::JOB_DURATION_SECONDS.name,
        metrics::QUEUE_DEAD_LETTERS.name,
    ] {
        assert!(used.contains(must), "dashboard shows {must}");
    }
}

#[test]
fn every_metric_is_documented() {
    let doc =
        std::fs::read_to_string(repo_root().join("docs/metrics.md")).expect("docs/metrics.md");
    for name in metrics::ALL {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} missing from docs/metrics.md"
        );
    }
}
