//! `BENCH_COMPARE=hardening scripts/bench.sh docker`: what Quayside's seccomp profile and
//! per-attempt uids cost, as ratios measured side by side in one run.
//!
//! Two real workers in this process, identical but for `runner.sandbox.seccomp` and
//! `runner.sandbox.uid_range`: *hardened* (Quayside's profile, a uid per attempt, the defaults)
//! and *baseline* (the engine's default profile, one fixed uid). Both run the docker
//! benchmark's C job (compile and run one line):
//!
//! - latency: `BENCH_SEQ` rounds, one job on each 1-slot worker per round, the order
//!   alternating; p50 of submit to result;
//! - throughput: `BENCH_BATCH` jobs per variant on 4-slot workers, in four chunks ordered
//!   hardened, baseline, baseline, hardened (load that drifts falls on both alike); jobs/s;
//! - the wrapper's undumpable-shell prelude, which both variants run: bare Engine API cycles
//!   of `true` in the sandbox's own host config, with and without it, alternating.
//!
//! The target (issue 11): both ratios within 5%.

use std::time::Duration;

use anyhow::Context as _;
use bollard::models::ContainerCreateBody;
use bollard::Docker;
use quayside_common::config::{Config, RunnerConfig, SeccompProfile};
use quayside_common::Limits;
use quayside_worker::runner::docker::{attempt_user, host_config};
use quayside_worker::runner::sandbox::protocol::{sandbox_command, WrapperShell};
use quayside_worker::runner::sandbox::WORK_DIR;

use super::docker::engine::{api_cycle, connect, job_containers, sweep};
use super::docker::report::{load, pct};
use super::docker::{bounded, image, Params, Worker, BENCH_LABEL};

/// Throughput runs in this many chunks per variant, ordered ABBA-style.
const CHUNKS: usize = 4;
const SLOTS: usize = 4;

/// Cold containers on both sides: what the hardening costs at create and start is measured,
/// not hidden by a warm pool.
fn hardened(cfg: &mut Config) {
    cfg.runner.docker.warm.enabled = false;
}

fn baseline(cfg: &mut Config) {
    hardened(cfg);
    cfg.runner.sandbox.seccomp = SeccompProfile::RuntimeDefault;
    cfg.runner.sandbox.uid_range = 1;
}

pub async fn main() -> anyhow::Result<()> {
    let Params {
        url,
        seq,
        batch,
        tag,
    } = Params::from_env();
    let docker = connect().await?;
    let version = docker.version().await.context("docker version")?;
    println!(
        "quayside hardening cost: engine {}, image {}, {seq} latency rounds, {batch} jobs per variant at {SLOTS} slots",
        version.version.unwrap_or_default(),
        image()
    );
    println!("  hardened: seccomp quayside, uid_range 2^20 (defaults); baseline: seccomp runtime_default, uid_range 1");
    sweep(&docker).await?;
    let outcome = measure(&docker, &url, &tag, seq, batch).await;
    let swept = sweep(&docker).await;
    let (ours, _) = job_containers(&docker).await?;
    outcome?;
    swept?;
    anyhow::ensure!(
        ours == 0,
        "{ours} job containers of this benchmark are left"
    );
    Ok(())
}

async fn measure(
    docker: &Docker,
    url: &str,
    tag: &str,
    seq: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let mut loads = Vec::new();

    // Latency: one job per variant per round, the order alternating.
    let a = Worker::start_with(url, &format!("{tag}-hard"), 1, hardened).await?;
    let b = Worker::start_with(url, &format!("{tag}-base"), 1, baseline).await?;
    let (mut hard, mut base) = (Vec::with_capacity(seq), Vec::with_capacity(seq));
    for round in 0..seq {
        for first in [round % 2 == 0, round % 2 != 0] {
            let (worker, samples) = if first {
                (&a, &mut hard)
            } else {
                (&b, &mut base)
            };
            samples.push(bounded("job", worker.submit_and_wait()).await?.0);
        }
        loads.push(load());
    }
    a.stop().await?;
    b.stop().await?;
    let (lat_hard, lat_base) = (pct(&hard, 0.5), pct(&base, 0.5));
    eprintln!("  latency p50: hardened {lat_hard:.1} ms, baseline {lat_base:.1} ms");

    // Throughput: ABBA chunks at SLOTS slots.
    let a = Worker::start_with(url, &format!("{tag}-hard"), SLOTS, hardened).await?;
    let b = Worker::start_with(url, &format!("{tag}-base"), SLOTS, baseline).await?;
    let chunk = batch.div_ceil(CHUNKS);
    let (mut wall_hard, mut wall_base) = (Duration::ZERO, Duration::ZERO);
    for i in 0..CHUNKS {
        for hardened_first in [i % 2 == 0, i % 2 != 0] {
            let (worker, wall) = if hardened_first {
                (&a, &mut wall_hard)
            } else {
                (&b, &mut wall_base)
            };
            *wall += worker.batch(chunk).await?.0;
            loads.push(load());
        }
    }
    a.stop().await?;
    b.stop().await?;
    let jobs = (chunk * CHUNKS) as f64;
    let (rate_hard, rate_base) = (
        jobs / wall_hard.as_secs_f64(),
        jobs / wall_base.as_secs_f64(),
    );
    eprintln!("  throughput: hardened {rate_hard:.2} jobs/s, baseline {rate_base:.2} jobs/s");

    // The prelude both variants run: a bare cycle of `true` with and without it.
    let (with, without) = prelude_cycles(docker, tag, seq).await?;
    let (p_with, p_without) = (pct(&with, 0.5), pct(&without, 0.5));

    let mean_load = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let (lat, thr) = (lat_hard / lat_base, rate_hard / rate_base);
    println!();
    println!(
        "{:<52} {:>10} {:>10} {:>7}",
        "measure", "hardened", "baseline", "ratio"
    );
    println!(
        "{:<52} {:>10.1} {:>10.1} {:>7.3}",
        "latency p50, ms, 1 slot (lower is better)", lat_hard, lat_base, lat
    );
    println!(
        "{:<52} {:>10.2} {:>10.2} {:>7.3}",
        format!("throughput, jobs/s, {SLOTS} slots (higher is better)"),
        rate_hard,
        rate_base,
        thr
    );
    println!(
        "{:<52} {:>10.1} {:>10.1} {:>7.3}",
        "wrapper prelude: bare `true` cycle p50, ms (in both)",
        p_with,
        p_without,
        p_with / p_without
    );
    println!("mean 1-minute load while measuring: {mean_load:.1}");
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "target, within 5%: latency {lat:.3} <= 1.05 ({}), throughput {thr:.3} >= 0.95 ({})",
        verdict(lat <= 1.05),
        verdict(thr >= 0.95)
    );
    Ok(())
}

/// `seq` bare create+start+wait+remove cycles each of `true` run through the wrapper's
/// prelude and of plain `sh -c true`, in the hardened sandbox's host config, alternating.
async fn prelude_cycles(
    docker: &Docker,
    tag: &str,
    seq: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let cfg = RunnerConfig::default();
    let body = |entrypoint: Vec<String>| {
        let user = attempt_user(&cfg.sandbox);
        ContainerCreateBody {
            image: Some(image()),
            entrypoint: Some(entrypoint),
            user: Some(format!("{}:{}", user.0, user.1)),
            working_dir: Some(WORK_DIR.into()),
            network_disabled: Some(true),
            labels: Some([(BENCH_LABEL.to_owned(), tag.to_owned())].into()),
            host_config: Some(host_config(&cfg, &Limits::DEFAULT, user)),
            ..Default::default()
        }
    };
    let plain = || vec!["sh".into(), "-c".into(), "true".into()];
    let (mut with, mut without) = (Vec::new(), Vec::new());
    // One of each first, uncounted: image and engine caches.
    api_cycle(
        docker,
        body(sandbox_command("true".into(), WrapperShell::Undumpable)),
    )
    .await?;
    api_cycle(docker, body(plain())).await?;
    for round in 0..seq {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for prelude in order {
            let took = if prelude {
                bounded(
                    "prelude cycle",
                    api_cycle(
                        docker,
                        body(sandbox_command("true".into(), WrapperShell::Undumpable)),
                    ),
                )
                .await?
            } else {
                bounded("plain cycle", api_cycle(docker, body(plain()))).await?
            };
            if prelude { &mut with } else { &mut without }.push(took);
        }
    }
    Ok((with, without))
}
