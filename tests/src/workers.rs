//! Worker processes on a [`TestQueue`]: the test worker (the real worker with the script
//! runner) or the real `quayside-worker`, each with its config and log in the queue's folder,
//! signalled and reaped by the test; and the lines an execution recorded.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quayside_common::config::Config;

use crate::{bin_path, within, TestQueue};

impl TestQueue {
    /// Starts a test worker (the real worker with the script runner) with this queue's config
    /// changed by `tweak`.
    pub fn spawn_worker(&self, tweak: impl FnOnce(&mut Config)) -> WorkerHandle {
        self.spawn(&bin_path("quayside-test-worker"), &[], tweak)
    }

    /// Starts `n` test workers, each with this queue's config changed by `tweak`.
    pub fn spawn_workers(&self, n: usize, tweak: impl Fn(&mut Config)) -> Vec<WorkerHandle> {
        (0..n).map(|_| self.spawn_worker(&tweak)).collect()
    }

    /// Starts the real `quayside-worker` binary (Docker runner, default language table).
    ///
    /// Its id defaults to `<queue>-w<n>`: a Docker worker removes the containers labelled with
    /// its own id at start, so a plain `w0` would kill those of a parallel test's `w0`.
    pub fn spawn_real_worker(&self, tweak: impl FnOnce(&mut Config)) -> WorkerHandle {
        let n = self.workers.lock().expect("lock").len();
        self.spawn(&bin_path("quayside-worker"), &["--config"], |cfg| {
            cfg.languages = quayside_common::config::default_languages();
            cfg.worker.id = Some(format!("{}-w{n}", cfg.queue.name));
            tweak(cfg);
        })
    }

    fn spawn(&self, bin: &Path, flags: &[&str], tweak: impl FnOnce(&mut Config)) -> WorkerHandle {
        let mut cfg = self.cfg.clone();
        tweak(&mut cfg);
        let n = self.workers.lock().expect("lock").len();
        let id = cfg.worker.id.clone().unwrap_or_else(|| format!("w{n}"));
        cfg.worker.id = Some(id.clone());
        let path = self.dir.join(format!("{id}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).expect("config to toml"))
            .expect("write worker config");
        let log = std::fs::File::create(self.dir.join(format!("{id}.log"))).expect("worker log");
        let child = Command::new(bin)
            .args(flags)
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn test worker");
        let pid = child.id();
        self.workers
            .lock()
            .expect("lock")
            .push(WorkerProcess { child });
        WorkerHandle { pid, id }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        for mut w in self.workers.lock().expect("lock").drain(..) {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

pub(crate) struct WorkerProcess {
    child: Child,
}

/// A running worker process.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    pub pid: u32,
    pub id: String,
}

impl WorkerHandle {
    pub fn signal(&self, sig: i32) {
        let rc = send_signal(self.pid, sig);
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid);
    }

    /// Waits for the process to exit. Returns its exit code, or `None` when a signal killed it.
    pub async fn wait_exit(&self, secs: u64) -> Option<i32> {
        let path = format!("/proc/{}/stat", self.pid);
        within(secs, &format!("worker {} to exit", self.id), async {
            loop {
                // A zombie (state Z) has exited but is not reaped yet (our Drop reaps it), so
                // its wait status is still in field 52 of its stat line.
                let stat = std::fs::read_to_string(&path).expect("our child is not reaped yet");
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
                if fields.first() == Some(&"Z") {
                    let status: i32 = fields
                        .get(49)
                        .and_then(|f| f.parse().ok())
                        .expect("exit_code field");
                    return (status & 0x7f == 0).then_some(status >> 8);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// `kill -SIG PID` (the crate forbids unsafe code, so no libc call).
fn send_signal(pid: u32, sig: i32) -> i32 {
    match Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
    {
        Ok(s) if s.success() => 0,
        _ => -1,
    }
}

/// Waits (up to `secs`) until `path` records at least `n` execution starts. A job's state is
/// `running` from its claim, before its program has begun: a test that kills a worker
/// "mid-job" waits for this, not for the state.
pub async fn wait_started(path: &str, n: usize, secs: u64) {
    within(secs, "the execution to start", async {
        while recorded(path).iter().filter(|e| e.2 == "start").count() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Lines `<job id> <attempt> <what> <ms>` an execution recorded.
pub fn recorded(path: &str) -> Vec<(String, u32, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some((
                p.next()?.to_owned(),
                p.next()?.parse().ok()?,
                p.next()?.to_owned(),
                p.next()?.parse().ok()?,
            ))
        })
        .collect()
}
