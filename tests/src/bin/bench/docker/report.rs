//! Samples to milliseconds and percentiles, one progress line per row, and the final table with
//! its legend.

use super::*;

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile, in ms.
pub(crate) fn pct(samples: &[Duration], q: f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().map(ms).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    BareTrue,
    BareApi,
    BareNoNetwork,
    BareSandbox,
    DockerRun,
    /// The real worker with its warm pool (the default).
    Quayside,
    /// The real worker with `runner.docker.warm.enabled = false`.
    QuaysideCold,
}

pub(crate) struct Row {
    pub(crate) kind: Kind,
    /// 1 for the sequential (latency) rows, else how many ran at once.
    pub(crate) parallel: usize,
    pub(crate) label: String,
    pub(crate) samples: Vec<Duration>,
    /// Batch rows: the wall time of the whole batch.
    pub(crate) wall: Option<Duration>,
    /// The machine's 1-minute load average while it ran (the benchmark's own containers
    /// included), to tell a quiet measurement from one taken next to other work.
    pub(crate) load: f64,
}

impl Row {
    pub(crate) fn rate(&self) -> Option<f64> {
        self.wall
            .map(|w| self.samples.len() as f64 / w.as_secs_f64())
    }
}

pub(crate) fn progress(row: &Row) {
    let rate = row
        .rate()
        .map(|r| format!(", {r:.2} jobs/s"))
        .unwrap_or_default();
    eprintln!(
        "  {:<50} p50 {:>7.1} ms, p90 {:>7.1} ms{rate}, load {:.1}",
        row.label,
        pct(&row.samples, 0.5),
        pct(&row.samples, 0.9),
        row.load
    );
}

/// The 1-minute load average.
pub(crate) fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub(crate) const LEGEND: &str = "\
par 1: one at a time after a warm-up, the scenarios taking turns; p50/p90 = one job end to
  end (quayside: submit to result, client-side). par > 1: a batch, the scenarios one after
  another; jobs/s = batch size / wall time (quayside: submit of the batch to its last result);
  p50/p90 = each container's own cycle (quayside: claim to result, from the results' durations).
quayside rows: the real worker with its warm pool (the default: a job whose limits are the
  language's defaults runs in a container created and started before it was claimed) and
  with `runner.docker.warm.enabled = false` (every job creates and starts its container).
vs API: against `bare API, compile+run` (engine defaults: bridge network, json-file logs);
  vs API*: against the bare cycle with the worker's sandbox options, i.e. the same container
  Quayside creates. Latency rows: p50 / p50 (lower is better); batch rows: jobs/s / jobs/s
  (higher is better).
load: 1-minute load average while the row ran, this benchmark's own containers included; far
  above par + 1 means other work shared the machine and the row is noisy.
";

pub(crate) fn report(rows: &[Row]) {
    let find = |kind: Kind, parallel: usize| {
        rows.iter()
            .find(|r| r.kind == kind && r.parallel == parallel)
    };
    // Latency rows compare p50 (lower is better), batch rows jobs/s (higher is better).
    let ratio = |r: &Row, base: Kind| -> Option<f64> {
        let b = find(base, r.parallel)?;
        Some(match (r.rate(), b.rate()) {
            (Some(a), Some(b)) => a / b,
            _ => pct(&r.samples, 0.5) / pct(&b.samples, 0.5),
        })
    };
    let show = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
    println!();
    println!(
        "{:<50} {:>4} {:>3} {:>8} {:>8} {:>7} {:>7} {:>7} {:>5}",
        "scenario", "n", "par", "p50 ms", "p90 ms", "jobs/s", "vs API", "vs API*", "load"
    );
    for r in rows {
        println!(
            "{:<50} {:>4} {:>3} {:>8.1} {:>8.1} {:>7} {:>7} {:>7} {:>5.1}",
            r.label,
            r.samples.len(),
            r.parallel,
            pct(&r.samples, 0.5),
            pct(&r.samples, 0.9),
            show(r.rate()),
            show(ratio(r, Kind::BareApi)),
            show(ratio(r, Kind::BareSandbox)),
            r.load,
        );
    }
    println!();
    print!("{LEGEND}");
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    if let Some(q) = find(Kind::QuaysideCold, 1) {
        let (a, s) = (ratio(q, Kind::BareApi), ratio(q, Kind::BareSandbox));
        println!(
            "target, cold latency p50 <= 1.15 x bare API: {} vs API* ({}), {} vs API ({})",
            show(s),
            verdict(s.is_some_and(|x| x <= 1.15)),
            show(a),
            verdict(a.is_some_and(|x| x <= 1.15)),
        );
    }
    for q in rows
        .iter()
        .filter(|r| r.kind == Kind::QuaysideCold && r.parallel > 1)
    {
        let (a, s) = (ratio(q, Kind::BareApi), ratio(q, Kind::BareSandbox));
        println!(
            "target, jobs/s >= 0.90 x bare API, {} at once: {} vs API* ({}), {} vs API ({})",
            q.parallel,
            show(s),
            verdict(s.is_some_and(|x| x >= 0.9)),
            show(a),
            verdict(a.is_some_and(|x| x >= 0.9)),
        );
    }
    warm_verdict(rows, &find_ratio(rows));
}

/// `a`'s p50 (latency rows) or jobs/s (batch rows) over `b`'s at the same parallelism.
fn find_ratio(rows: &[Row]) -> impl Fn(Kind, Kind, usize) -> Option<f64> + '_ {
    move |a: Kind, b: Kind, parallel: usize| {
        let find = |kind: Kind| {
            rows.iter()
                .find(|r| r.kind == kind && r.parallel == parallel)
        };
        let (a, b) = (find(a)?, find(b)?);
        Some(match (a.rate(), b.rate()) {
            (Some(x), Some(y)) => x / y,
            _ => pct(&a.samples, 0.5) / pct(&b.samples, 0.5),
        })
    }
}

/// The warm pool's targets (issue 14): p50 <= 0.5 and p99 <= 0.8 x the bare cycle with the
/// worker's sandbox options (the container a job runs in), batch jobs/s not below the cold
/// path's; the last line is the p50 ratio.
fn warm_verdict(rows: &[Row], ratio: &impl Fn(Kind, Kind, usize) -> Option<f64>) {
    let show = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let p99 = |kind: Kind| {
        rows.iter()
            .find(|r| r.kind == kind && r.parallel == 1)
            .map(|r| pct(&r.samples, 0.99))
    };
    let warm_p99 = p99(Kind::Quayside)
        .zip(p99(Kind::BareSandbox))
        .map(|(w, b)| w / b);
    let cold = ratio(Kind::Quayside, Kind::QuaysideCold, 1);
    println!(
        "warm pool: p50 {} x cold quayside; p99 {} x bare API* (target <= 0.8: {})",
        show(cold),
        show(warm_p99),
        verdict(warm_p99.is_some_and(|x| x <= 0.8)),
    );
    for p in rows
        .iter()
        .filter(|r| r.kind == Kind::Quayside && r.parallel > 1)
        .map(|r| r.parallel)
    {
        let x = ratio(Kind::Quayside, Kind::QuaysideCold, p);
        println!(
            "warm pool, {p} slots: jobs/s {} x pool off (target >= 1.00: {})",
            show(x),
            verdict(x.is_some_and(|x| x >= 1.0)),
        );
    }
    let vs_plain = ratio(Kind::Quayside, Kind::BareApi, 1);
    println!(
        "warm/bare p50 vs the plain bare API cycle: {}",
        show(vs_plain)
    );
    let warm = ratio(Kind::Quayside, Kind::BareSandbox, 1);
    let target = verdict(warm.is_some_and(|x| x <= 0.5));
    println!("warm pool p50 target <= 0.50 x bare API*: {target}");
    println!("warm/bare p50 ratio: {}", show(warm));
}
