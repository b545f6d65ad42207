//! End-to-end harness: a real redis-server (from `E2E_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), real worker processes, one fresh queue per test.

pub mod gateway;
pub mod log_bench;
pub mod model;
pub mod ops;
pub mod private_dockerd;
pub mod sandbox_cli;
pub mod sandboxes;
pub mod script_runner;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use quayside_common::config::{Config, LanguageConfig, RedisConfig};
use quayside_common::connection::Redis;
use quayside_common::keys::GROUP;
use quayside_common::{JobId, JobKind, JobResult, JobSpec, Keys, Priority, Status};
use quayside_producer::Producer;

/// The Redis the suite runs against.
pub fn redis_url() -> String {
    std::env::var("E2E_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Bounds every await of a test: a hang fails the test with `what` instead of stalling CI.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// A queue of its own for one test, with the config its workers get.
pub struct TestQueue {
    pub cfg: Config,
    pub producer: Producer,
    pub keys: Keys,
    pub dir: PathBuf,
    workers: Mutex<Vec<WorkerProcess>>,
}

impl TestQueue {
    /// A uniquely named queue on [`redis_url`], with fast timings for tests.
    pub fn new(test: &str) -> Self {
        Self::on(test, &redis_url())
    }

    pub fn on(test: &str, url: &str) -> Self {
        Self::with_redis(test, |r| r.url = url.to_owned())
    }

    /// A queue on the Redis that `redis` describes (auth, TLS), starting from [`redis_url`].
    pub fn with_redis(test: &str, redis: impl FnOnce(&mut RedisConfig)) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("t-{test}-{}-{nanos}", std::process::id());
        let mut cfg = Config::default();
        cfg.redis.url = redis_url();
        redis(&mut cfg.redis);
        cfg.queue.name = name.clone();
        // Through serde, so fields the table gains later keep their defaults.
        let script: LanguageConfig = serde_json::from_value(serde_json::json!({ "image": "none" }))
            .expect("language config");
        cfg.languages = BTreeMap::from([("script".to_owned(), script)]);
        cfg.worker.lease_ms = 3_000;
        cfg.worker.claim_block_ms = 500;
        cfg.worker.reclaim_interval_ms = 500;
        cfg.worker.promote_interval_ms = 50;
        cfg.worker.heartbeat_interval_ms = 500;
        cfg.worker.drain_timeout_ms = 5_000;
        cfg.retry.base_ms = 100;
        cfg.retry.max_ms = 1_000;
        // A job's own infrastructure failures are retried for this long, then dead-lettered.
        cfg.retry.give_up_after_ms = 1_000;
        // Parallel tests must not fight over one port; tests that scrape pick a free one.
        cfg.metrics.listen_addr = "127.0.0.1:0".into();
        cfg.metrics.sample_interval_ms = 200;
        cfg.validate().expect("test config is valid");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self {
            producer: Producer::new(&cfg).expect("producer"),
            keys: Keys::new(&name).expect("queue name"),
            cfg,
            dir,
            workers: Mutex::new(Vec::new()),
        }
    }

    /// A queue with this one's name and config on another Redis (`url`): another fleet that
    /// looks the same from the engine's side. Its workers log into a folder of their own.
    pub fn twin_on(&self, url: &str) -> Self {
        let mut cfg = self.cfg.clone();
        cfg.redis.url = url.to_owned();
        let dir = self.dir.with_file_name(format!(
            "{}-twin",
            self.dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self {
            producer: Producer::new(&cfg).expect("producer"),
            keys: self.keys.clone(),
            cfg,
            dir,
            workers: Mutex::new(Vec::new()),
        }
    }

    /// What worker `id` logged so far.
    pub fn worker_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{id}.log"))).unwrap_or_default()
    }

    /// A path in the test's own folder.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A `run` job for the script runner.
    pub fn job(&self, script: &str) -> JobSpec {
        JobSpec::new(
            JobKind::Run,
            "script",
            [("job.txt".to_owned(), script.to_owned())].into(),
        )
    }

    pub fn job_at(&self, script: &str, priority: Priority) -> JobSpec {
        let mut j = self.job(script);
        j.priority = priority;
        j
    }

    /// Starts a test worker (the real worker with the script runner) with this queue's config
    /// changed by `tweak`.
    pub fn spawn_worker(&self, tweak: impl FnOnce(&mut Config)) -> WorkerHandle {
        self.spawn(&bin_path("quayside-test-worker"), &[], tweak)
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
        assert!(
            bin.exists(),
            "{} not built: run cargo build --workspace --bins first",
            bin.display()
        );
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

    /// The built `quayside` CLI, pointed at this queue (`bin_path`: build the binaries first).
    pub fn cli(&self) -> Command {
        let bin = bin_path("quayside");
        assert!(
            bin.exists(),
            "{} not built: run cargo build --workspace --bins first",
            bin.display()
        );
        let mut c = Command::new(bin);
        c.args(["--redis-url", &self.cfg.redis.url])
            .args(["--queue", &self.cfg.queue.name]);
        c
    }

    /// Waits for every job's terminal result.
    pub async fn wait_all(&self, ids: &[JobId], secs: u64) -> Vec<JobResult> {
        let mut out = Vec::new();
        for id in ids {
            let r = within(
                secs,
                &format!("result of {id}"),
                self.producer.wait(id, None),
            )
            .await;
            out.push(r.unwrap_or_else(|e| panic!("waiting for {id}: {e:#}")));
        }
        out
    }

    /// Everything a finished test must leave: each job terminal with its result, nothing pending,
    /// nothing left in the streams, the running index and the delayed set.
    pub async fn assert_settled(&self, ids: &[JobId]) {
        for id in ids {
            let st = self
                .producer
                .status(id)
                .await
                .expect("status")
                .unwrap_or_else(|| panic!("{id} unknown"));
            assert!(st.state.is_terminal(), "{id} is {}", st.state);
            let r = st.result.unwrap_or_else(|| panic!("{id} has no result"));
            assert_eq!(r.status, st.state, "{id}: result and record disagree");
        }
        let mut conn = self.conn().await;
        for p in Priority::ALL {
            let key = self.keys.stream(p);
            let len: u64 = redis::cmd("XLEN")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("XLEN");
            assert_eq!(len, 0, "{key} still holds entries");
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(&key)
                .arg(GROUP)
                .query_async(&mut conn)
                .await
                .expect("XPENDING");
            if let redis::Value::Array(a) = pending {
                assert_eq!(
                    a.first(),
                    Some(&redis::Value::Int(0)),
                    "{key} has pending entries"
                );
            }
        }
        let running: u64 = redis::cmd("HLEN")
            .arg(self.keys.running())
            .query_async(&mut conn)
            .await
            .expect("HLEN");
        assert_eq!(running, 0, "running index not empty");
        let delayed: u64 = redis::cmd("ZCARD")
            .arg(self.keys.delayed())
            .query_async(&mut conn)
            .await
            .expect("ZCARD");
        assert_eq!(delayed, 0, "delayed set not empty");
    }

    /// Enqueues `spec` as the simplest client would, with a raw `XADD` of its id and JSON to
    /// the normal stream: nothing checks it before a worker does.
    pub async fn raw_enqueue(&self, spec: &JobSpec) {
        let mut conn = self.conn().await;
        let _: String = redis::cmd("XADD")
            .arg(self.keys.stream(Priority::Normal))
            .arg("*")
            .arg("id")
            .arg(spec.id.as_str())
            .arg("job")
            .arg(serde_json::to_string(spec).expect("spec to json"))
            .query_async(&mut conn)
            .await
            .expect("raw XADD");
    }

    /// Entries in the normal stream (queued or running).
    pub async fn queued(&self) -> u64 {
        let mut conn = self.conn().await;
        redis::cmd("XLEN")
            .arg(self.keys.stream(Priority::Normal))
            .query_async(&mut conn)
            .await
            .expect("XLEN")
    }

    /// Raw connection for tests that speak plain Redis (with the queue's auth and TLS).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        Redis::new(&self.cfg.redis)
            .expect("redis config")
            .dedicated()
            .await
            .expect("connect")
    }

    /// Waits until the job's record says `state`.
    pub async fn wait_state(&self, id: &JobId, state: Status, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = self.producer.status(id).await {
                if st.state == state {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{id} never reached {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts counting terminal notifications per job (every publish on a `done` channel).
    pub async fn count_completions(&self) -> Completions {
        let mut pubsub = Redis::new(&self.cfg.redis)
            .expect("redis config")
            .pubsub()
            .await
            .expect("pubsub");
        let prefix = format!("{}done:", self.keys.prefix());
        pubsub
            .psubscribe(format!("{prefix}*"))
            .await
            .expect("psubscribe");
        let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let sink = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut msgs = pubsub.into_on_message();
            while let Some(m) = msgs.next().await {
                let id = m.get_channel_name().trim_start_matches(&prefix).to_owned();
                let status: String = m.get_payload().unwrap_or_default();
                sink.lock().expect("lock").push((id, status));
            }
        });
        Completions { seen }
    }
}

/// A binary of the workspace, built by cargo next to the test executables (`target/<profile>/`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    profile_dir.join(name)
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        for mut w in self.workers.lock().expect("lock").drain(..) {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

/// Terminal notifications seen so far, in arrival order.
pub struct Completions {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Completions {
    pub fn order(&self) -> Vec<(String, String)> {
        self.seen.lock().expect("lock").clone()
    }

    /// Asserts each id was announced exactly once (no double result) and nothing else was.
    pub fn assert_exactly_once(&self, ids: &[JobId]) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (id, _) in self.order() {
            *counts.entry(id).or_default() += 1;
        }
        for id in ids {
            assert_eq!(
                counts.remove(id.as_str()),
                Some(1),
                "job {id} must end exactly once"
            );
        }
        assert!(counts.is_empty(), "unexpected completions: {counts:?}");
    }

    /// Waits until `n` completions were seen.
    pub async fn wait_for(&self, n: usize, secs: u64) {
        within(secs, &format!("{n} completions"), async {
            while self.seen.lock().expect("lock").len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

struct WorkerProcess {
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

/// A private redis-server on a free port with AOF `always`, for tests that restart Redis.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    /// More server arguments (auth, TLS); `{port}` in them is replaced by the port.
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &[])
    }

    /// Starts with more server arguments, e.g. `--requirepass`, or `--port 0 --tls-port {port}`.
    pub fn start_with(dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut r = Self {
            port,
            dir: dir.to_owned(),
            extra: extra
                .iter()
                .map(|a| a.replace("{port}", &port.to_string()))
                .collect(),
            child: None,
        };
        r.restart()?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data folder.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--maxmemory-policy",
                "noeviction",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .context("start redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL: no chance to save anything beyond what AOF already has.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
