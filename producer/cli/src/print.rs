//! What the CLI prints: a job's result (and its exit code), the consistency check, queue
//! statistics; as text for a person or `--json` for a script.

use std::process::ExitCode;

use quayside_common::{JobResult, Status};
use quayside_producer::QueueStats;

use crate::terminal;

pub(crate) fn report(r: &JobResult, json: bool) -> ExitCode {
    if json {
        match terminal::json(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("quayside: {e}"),
        }
    } else {
        print_result(r);
    }
    if r.status == Status::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(crate) fn print_result(r: &JobResult) {
    let code = r
        .exit_code
        .map(|c| format!(" exit {c}"))
        .unwrap_or_default();
    println!(
        "{}: {}{code} (attempts {}, {} ms)",
        r.id, r.status, r.attempts, r.durations.total_ms
    );
    for (name, c) in [
        ("compile output", &r.compile_output),
        ("stdout", &r.stdout),
        ("stderr", &r.stderr),
    ] {
        if !c.is_empty() {
            let more = if c.truncated { " (truncated)" } else { "" };
            println!(
                "--- {name}{more}\n{}",
                terminal::bytes(&c.bytes()).trim_end()
            );
        }
    }
    if let Some(e) = &r.error {
        println!("--- error\n{}", terminal::text(e));
    }
}

pub(crate) fn print_check(r: &quayside_producer::CheckReport) {
    let verb = if r.repaired { "repaired" } else { "found" };
    if r.counts.is_empty() {
        println!("checked {} job records: no problems", r.records);
        return;
    }
    let total: u64 = r.counts.values().sum();
    println!("checked {} job records: {verb} {total} problems", r.records);
    for (problem, n) in &r.counts {
        println!("  {problem:<22} {n}");
    }
    for f in &r.findings {
        println!("{} {}", f.id, f.problem);
    }
    if !r.repaired {
        println!("run `quayside check --repair` to put them right");
    }
}

pub(crate) fn print_stats(s: &QueueStats) {
    match s.paused_since_ms {
        Some(ms) => println!(
            "queue {}   PAUSED for {} s: workers claim nothing (quayside resume)",
            s.queue,
            quayside_common::now_ms().saturating_sub(ms) / 1000
        ),
        None => println!("queue {}", s.queue),
    }
    println!(
        "{:<8} {:>8} {:>8} {:>8}",
        "priority", "waiting", "running", "depth"
    );
    for p in &s.priorities {
        println!(
            "{:<8} {:>8} {:>8} {:>8}",
            p.priority, p.waiting, p.pending, p.depth
        );
    }
    println!(
        "{:<8} {:>8} {:>8} {:>8}",
        "total",
        s.waiting(),
        s.pending(),
        s.waiting() + s.pending()
    );
    println!(
        "delayed retries: {}   dead letters: {}",
        s.delayed, s.dead_letters
    );
    println!(
        "webhooks: pending {}   dead-lettered {}",
        s.webhooks.pending, s.webhooks.dead
    );
    print_tenants(s);
    let num = |w: &quayside_producer::WorkerInfo, k: &str| w.0.get(k).and_then(|v| v.as_u64());
    // Worker fields come from Redis, which anyone with queue access can write.
    let text = |w: &quayside_producer::WorkerInfo, k: &str| {
        terminal::line(w.0.get(k).and_then(|v| v.as_str()).unwrap_or("-")).into_owned()
    };
    println!("workers: {}", s.workers.len());
    if s.workers.is_empty() {
        return;
    }
    println!(
        "  {:<32} {:<20} {:<10} {:>5} {:>9} {:<8}",
        "id", "host", "runner", "slots", "in_flight", "version"
    );
    let (mut slots, mut in_flight) = (0, 0);
    for w in &s.workers {
        let (ws, wi) = (num(w, "slots"), num(w, "in_flight"));
        slots += ws.unwrap_or(0);
        in_flight += wi.unwrap_or(0);
        let show = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "  {:<32} {:<20} {:<10} {:>5} {:>9} {:<8}",
            text(w, "id"),
            text(w, "host"),
            text(w, "runner"),
            show(ws),
            show(wi),
            text(w, "version")
        );
    }
    println!(
        "  {:<32} {:<20} {:<10} {:>5} {:>9}",
        "total", "", "", slots, in_flight
    );
}

/// The tenants table: only when some tenant other than the default has had work.
fn print_tenants(s: &QueueStats) {
    if s.tenants.iter().all(|t| t.tenant == "default") {
        return;
    }
    let cap = |c: Option<String>| c.unwrap_or_else(|| "-".into());
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>6} {:<7}",
        "tenant", "queued", "max", "running", "cap", "weight", "state"
    );
    for t in &s.tenants {
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>6} {:<7}",
            // Tenant ids come from Redis, which anyone with queue access can write.
            terminal::line(&t.tenant),
            t.queued,
            cap(t.queued_cap.map(|c| c.to_string())),
            t.running,
            cap(t.running_cap.map(|c| c.to_string())),
            t.weight,
            if t.paused { "PAUSED" } else { "-" }
        );
    }
}
