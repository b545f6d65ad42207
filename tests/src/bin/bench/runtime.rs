//! `BENCH_COMPARE=runtime scripts/bench.sh docker`: the OCI runtime under job containers,
//! `runc` (the engine's default) against `crun` (issue 14), side by side in one run.
//!
//! Both runtimes must be registered with the engine (`scripts/setup-crun.sh` registers crun).
//! Every measurement alternates the two runtimes (ABBA), so load that drifts falls on both:
//!
//! - cold cycle: bare Engine API create + start + wait + remove in the worker's own sandbox
//!   host config (hardening, limits), `BENCH_SEQ` rounds each, of `true` (what the runtime
//!   itself costs) and of the C job's compile + run (what a job sees);
//! - containers/s: `BENCH_BATCH` cycles of `true`, 4 in parallel, in four chunks per runtime;
//! - the real worker (1 slot, `runner.docker.runtime` set): submit to result of the C job.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bollard::Docker;
use futures_util::{stream, StreamExt as _};
use quayside_common::config::Config;

use super::docker::engine::{api_cycle, compile_run_script, connect, create_body, sweep, Options};
use super::docker::report::{load, pct};
use super::docker::{bounded, image, Params, Worker};

const RUNTIMES: [&str; 2] = ["runc", "crun"];
const PARALLEL: usize = 4;
const CHUNKS: usize = 4;

pub async fn main() -> anyhow::Result<()> {
    let Params {
        url,
        seq,
        batch,
        tag,
    } = Params::from_env();
    let docker = connect().await?;
    let info = docker.info().await.context("docker info")?;
    let registered: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    for rt in RUNTIMES {
        anyhow::ensure!(
            registered.iter().any(|r| r == rt),
            "runtime {rt} is not registered with the engine (have {registered:?}); run scripts/setup-crun.sh"
        );
    }
    println!(
        "quayside OCI runtime comparison: engine {}, image {}, {seq} rounds, {batch} containers per runtime at {PARALLEL} in parallel",
        info.server_version.unwrap_or_default(),
        image()
    );
    sweep(&docker).await?;
    let outcome = measure(&docker, &url, &tag, seq, batch).await;
    sweep(&docker).await?;
    outcome
}

/// The sandbox create body with `runtime` set, running `script` under `sh -c`.
fn body(script: &str, runtime: &str, tag: &str) -> bollard::models::ContainerCreateBody {
    let mut body = create_body(
        vec!["sh".into(), "-c".into(), script.into()],
        Options::Sandbox,
        tag,
    );
    if let Some(hc) = body.host_config.as_mut() {
        hc.runtime = Some(runtime.into());
    }
    body
}

/// `seq` rounds of one cycle per runtime, the order alternating; samples per runtime.
async fn cycles(
    docker: &Docker,
    script: &str,
    tag: &str,
    seq: usize,
) -> anyhow::Result<[Vec<Duration>; 2]> {
    let mut samples = [Vec::new(), Vec::new()];
    for rt in RUNTIMES {
        // One uncounted cycle each: image and engine caches.
        bounded("warm-up cycle", api_cycle(docker, body(script, rt, tag))).await?;
    }
    for round in 0..seq {
        for i in order(round) {
            let took = bounded("cycle", api_cycle(docker, body(script, RUNTIMES[i], tag))).await?;
            samples[i].push(took);
        }
    }
    Ok(samples)
}

/// Index order of the two runtimes in round `n`: ABBA.
fn order(n: usize) -> [usize; 2] {
    if n % 2 == 0 {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// `n` cycles of `true` with `runtime`, `PARALLEL` at once; the wall time.
async fn parallel(docker: &Docker, runtime: &str, tag: &str, n: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = stream::iter(0..n)
        .map(|_| bounded("cycle", api_cycle(docker, body("true", runtime, tag))))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

async fn measure(
    docker: &Docker,
    url: &str,
    tag: &str,
    seq: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let mut loads = vec![load()];
    let bare = cycles(docker, "true", tag, seq).await?;
    loads.push(load());
    let script = compile_run_script()?;
    let job = cycles(docker, &script, tag, seq).await?;
    loads.push(load());

    let chunk = batch.div_ceil(CHUNKS);
    let mut walls = [Duration::ZERO; 2];
    for c in 0..CHUNKS {
        for i in order(c) {
            walls[i] += parallel(docker, RUNTIMES[i], tag, chunk).await?;
            loads.push(load());
        }
    }
    let rates = walls.map(|w| (chunk * CHUNKS) as f64 / w.as_secs_f64());

    let mut workers = Vec::new();
    for rt in RUNTIMES {
        // Cold containers: a warm pool would take the runtime's create and start off the path.
        let tweak = move |cfg: &mut Config| {
            cfg.runner.docker.runtime = rt.into();
            cfg.runner.docker.warm.enabled = false;
        };
        workers.push(Worker::start_with(url, &format!("{tag}-{rt}"), 1, tweak).await?);
    }
    let mut e2e = [Vec::new(), Vec::new()];
    for round in 0..seq {
        for i in order(round) {
            e2e[i].push(bounded("job", workers[i].submit_and_wait()).await?.0);
        }
        loads.push(load());
    }
    for w in workers {
        w.stop().await?;
    }

    let mean_load = loads.iter().sum::<f64>() / loads.len() as f64;
    println!();
    println!(
        "{:<58} {:>9} {:>9} {:>11}",
        "measure", "runc", "crun", "crun/runc"
    );
    let row = |what: &str, a: f64, b: f64| {
        println!("{what:<58} {a:>9.1} {b:>9.1} {:>11.3}", b / a);
    };
    row(
        "cold cycle of `true`, p50 ms",
        pct(&bare[0], 0.5),
        pct(&bare[1], 0.5),
    );
    row(
        "cold cycle of `true`, p99 ms",
        pct(&bare[0], 0.99),
        pct(&bare[1], 0.99),
    );
    row(
        "cold cycle of the C compile+run, p50 ms",
        pct(&job[0], 0.5),
        pct(&job[1], 0.5),
    );
    row(
        &format!("containers/s, `true`, {PARALLEL} in parallel (higher is better)"),
        rates[0],
        rates[1],
    );
    row(
        "worker: C run job submit to result, p50 ms",
        pct(&e2e[0], 0.5),
        pct(&e2e[1], 0.5),
    );
    row(
        "worker: C run job submit to result, p99 ms",
        pct(&e2e[0], 0.99),
        pct(&e2e[1], 0.99),
    );
    println!("mean 1-minute load while measuring: {mean_load:.1}");
    println!(
        "crun/runc cold cycle p50 ratio: {:.2}",
        pct(&bare[1], 0.5) / pct(&bare[0], 0.5)
    );
    Ok(())
}
