//! The fleet-level fault run: one batch of real Docker jobs (most succeed, some exit non-zero,
//! some fail to compile, some time out) through three real workers, while a worker is SIGKILLed
//! (and restarted) every few seconds (two of them take turns; the third lives through the whole
//! run, so its memory can be watched), Redis is SIGKILLed and restarted on its AOF once, and the
//! Docker engine is stopped for at least 5 s and started again once. Then the ledger: exactly
//! one terminal result per job, each the status its program deserves (none `dead` because of
//! the engine), nothing pending, no container left, workers' memory flat.
//!
//! CI runs 150 jobs; `scripts/soak.sh fleet` runs 1,000 (`FLEET_JOBS`). The engine is a private
//! `dockerd` and Redis a private `redis-server` (AOF `always`): nothing shared is disturbed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quayside_common::config::{default_image, Config};
use quayside_common::{JobId, JobKind, JobSpec, Status};
use quayside_e2e::private_dockerd::PrivateDockerd;
use quayside_e2e::{within, PrivateRedis, TestQueue, WorkerHandle};

/// The python runner image, tagged as `deploy/images/VERSION` says.
fn python_image() -> String {
    default_image("python")
}

/// RSS samples (seconds into the run, KiB) by worker pid.
type Samples = BTreeMap<u32, Vec<(f64, u64)>>;
const WORKERS: usize = 3;

/// Job `i` of the mix and the status its program deserves.
fn job(i: usize, batch: &str) -> (JobSpec, Status) {
    let py = |kind, source: String| {
        let mut s = JobSpec::new(kind, "python", [("main.py".to_owned(), source)].into());
        s.batch = Some(batch.to_owned());
        // Workers are SIGKILLed on purpose: a job may lose a few of them in a row.
        s.max_attempts = Some(10);
        s.limits.run_wall_time_ms = Some(20_000);
        s
    };
    let nap = (i % 5) as f64 * 0.3;
    match i % 20 {
        14 | 15 => (
            py(
                JobKind::Run,
                format!(
                    "import sys, time\ntime.sleep({nap})\nprint('failing')\nsys.exit({})\n",
                    i % 7 + 1
                ),
            ),
            Status::Failed,
        ),
        16 | 17 => (
            py(JobKind::Compile, format!("def broken(:\n    return {i}\n")),
            Status::CompileError,
        ),
        18 => {
            let mut s = py(
                JobKind::Run,
                "import time\nprint('waiting', flush=True)\ntime.sleep(60)\n".into(),
            );
            s.limits.run_wall_time_ms = Some(1_500);
            (s, Status::TimedOut)
        }
        _ => (
            py(
                JobKind::Run,
                format!("import time\ntime.sleep({nap})\nprint(sum(range({i})))\n"),
            ),
            Status::Succeeded,
        ),
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_fault_run() {
    let n: usize = std::env::var("FLEET_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let root = std::env::temp_dir().join(format!("qs-fleet-fault-{}", std::process::id()));
    let mut redis = PrivateRedis::start(&{
        let d = root.join("redis");
        std::fs::create_dir_all(&d).expect("dir");
        d
    })
    .expect("redis");
    let mut engine = PrivateDockerd::start(&root.join("engine")).expect("dockerd");
    engine.load_image(&python_image()).expect("image");
    let q = TestQueue::on("fleet-fault", &redis.url());
    let socket = engine.url();
    let tweak = move |c: &mut Config| {
        c.languages.retain(|l, _| l == "python");
        c.runner.docker.socket = socket.clone();
        c.runner.sandbox.api_timeout_ms = 5_000;
        c.worker.slots = 4;
        c.worker.lease_ms = 5_000;
        // A job's own infrastructure failures (killed by the engine's restart) retry for this
        // long: well past the engine's outage.
        c.retry.give_up_after_ms = 120_000;
    };
    let workers: Arc<Mutex<Vec<WorkerHandle>>> = Arc::new(Mutex::new(
        (0..WORKERS)
            .map(|_| q.spawn_real_worker(tweak.clone()))
            .collect(),
    ));

    let batch = format!("fault-{}", std::process::id());
    let (specs, expected): (Vec<JobSpec>, Vec<Status>) = (0..n).map(|i| job(i, &batch)).unzip();
    let ids: Vec<JobId> = specs.iter().map(|s| s.id.clone()).collect();
    let started = Instant::now();
    for chunk in specs.chunks(200) {
        q.producer.enqueue_many(chunk).await.expect("enqueue");
    }

    // Faults, paced by the batch's progress.
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rss: Arc<Mutex<Samples>> = Arc::default();
    let sampler = {
        let (workers, rss, stop) = (Arc::clone(&workers), Arc::clone(&rss), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let pids: Vec<u32> = workers
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|w| w.pid)
                    .collect();
                for pid in pids {
                    if let Some(kib) = rss_kib(pid) {
                        let t = started.elapsed().as_secs_f64();
                        rss.lock()
                            .expect("lock")
                            .entry(pid)
                            .or_default()
                            .push((t, kib));
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut kills = 0;
    let mut redis_restarted = None;
    let mut engine_down = None;
    let mut next_kill = Instant::now() + Duration::from_secs(3);
    let settled = within(1_800, "every job ended", async {
        loop {
            let status = q.producer.batch_status(&batch).await.ok().flatten();
            if let Some(s) = &status {
                done.store((s.total - s.remaining) as usize, Ordering::Release);
                if s.done && s.total == n as u64 {
                    return status;
                }
            }
            let progress = done.load(Ordering::Acquire) as f64 / n as f64;
            if progress < 0.85 && Instant::now() >= next_kill {
                let victim = kills % (WORKERS - 1);
                let old = workers.lock().expect("lock")[victim].clone();
                old.signal(9);
                let _ = old.wait_exit(10).await;
                kills += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                // The same id again: its startup sweep removes what the dead one left.
                let tweak = tweak.clone();
                let again = q.spawn_real_worker(move |c| {
                    tweak(c);
                    c.worker.id = Some(old.id.clone());
                });
                workers.lock().expect("lock")[victim] = again;
                next_kill = Instant::now() + Duration::from_secs(3);
            }
            if redis_restarted.is_none() && progress >= 0.25 {
                redis.kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis.restart().expect("redis back");
                redis_restarted = Some(progress);
            }
            if engine_down.is_none() && progress >= 0.5 {
                let t = Instant::now();
                engine.stop();
                tokio::time::sleep(Duration::from_secs(5)).await;
                engine.restart().expect("engine back");
                engine_down = Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("batch counters");
    let wall = started.elapsed();
    stop.store(true, Ordering::Release);
    let _ = sampler.await;

    // The ledger.
    let results = q.wait_all(&ids, 60).await;
    let mut wrong = Vec::new();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut reattempted = 0;
    for ((r, want), id) in results.iter().zip(&expected).zip(&ids) {
        *by_status.entry(r.status.to_string()).or_default() += 1;
        if r.status != *want {
            wrong.push(format!(
                "{id}: {} ({:?}), expected {want}",
                r.status, r.error
            ));
        }
        if r.attempts > 1 {
            reattempted += 1;
        }
    }
    let total: u64 = settled.by_status.values().sum();
    eprintln!(
        "fleet fault run: {n} jobs in {:.1} s; {kills} worker SIGKILLs; redis SIGKILLed and \
         restarted at {:.0}% done; engine down {:.1} s at 50% done; results {by_status:?}; \
         batch counters {:?} (sum {total}); {reattempted} jobs ran again after a worker died",
        wall.as_secs_f64(),
        redis_restarted.unwrap_or(0.0) * 100.0,
        engine_down.map_or(0.0, |d| d.as_secs_f64()),
        settled.by_status,
    );
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(total, n as u64, "exactly one terminal result per job");
    assert!(
        engine_down.is_some() && redis_restarted.is_some(),
        "both faults happened"
    );
    assert!(
        q.producer.dlq_list(10).await.expect("dlq").is_empty(),
        "no dead letter"
    );
    q.assert_settled(&ids).await;
    within(60, "no container left", async {
        while !engine.containers("quayside.job").is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;

    // Memory: what each worker process held over its life.
    for (pid, samples) in rss.lock().expect("lock").iter() {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            continue;
        };
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        eprintln!(
            "worker pid {pid}: {} samples over {:.0} s, RSS first {} KiB, last {} KiB, peak {} KiB",
            samples.len(),
            last.0 - first.0,
            first.1,
            last.1,
            peak
        );
        assert!(peak < 256 * 1024, "worker {pid} grew to {peak} KiB");
        // The worker that lived through the run must not keep growing.
        if last.0 - first.0 >= 30.0 {
            let third = samples.len() / 3;
            let early = samples[third..2 * third]
                .iter()
                .map(|s| s.1)
                .max()
                .unwrap_or(0);
            let late = samples[2 * third..].iter().map(|s| s.1).max().unwrap_or(0);
            assert!(
                late <= early + early / 2 + 16 * 1024,
                "worker {pid}: RSS {early} KiB mid-run, {late} KiB at the end"
            );
        }
    }
    drop(engine);
    drop(redis);
    let _ = std::fs::remove_dir_all(&root);
}
