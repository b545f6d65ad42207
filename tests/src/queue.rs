//! [`TestQueue`]: a uniquely named queue per test on the suite's Redis, with fast timings, its
//! own folder (worker configs and logs), the CLI pointed at it, and what a finished test must
//! find in Redis ([`TestQueue::assert_settled`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quayside_common::config::{Config, LanguageConfig, RedisConfig};
use quayside_common::connection::Redis;
use quayside_common::keys::GROUP;
use quayside_common::{JobId, JobKind, JobResult, JobSpec, Keys, Priority, Status};
use quayside_producer::{JobStatus, Producer};

use crate::workers::WorkerProcess;
use crate::{bin_path, redis_url, within};

/// A queue of its own for one test, with the config its workers get.
pub struct TestQueue {
    pub cfg: Config,
    pub producer: Producer,
    pub keys: Keys,
    pub dir: PathBuf,
    pub(crate) workers: Mutex<Vec<WorkerProcess>>,
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

    /// `n` jobs that run the same script, each under an id of its own.
    pub fn jobs(&self, n: usize, script: &str) -> Vec<JobSpec> {
        (0..n).map(|_| self.job(script)).collect()
    }

    pub fn job_at(&self, script: &str, priority: Priority) -> JobSpec {
        let mut j = self.job(script);
        j.priority = priority;
        j
    }

    /// The built `quayside` CLI, pointed at this queue (`bin_path`: build the binaries first).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin_path("quayside"));
        c.args(["--redis-url", &self.cfg.redis.url])
            .args(["--queue", &self.cfg.queue.name]);
        c
    }

    /// Enqueues `specs` in one batch; their ids, in order.
    pub async fn enqueue_all(&self, specs: &[JobSpec]) -> Vec<JobId> {
        self.producer.enqueue_many(specs).await.expect("enqueue");
        specs.iter().map(|s| s.id.clone()).collect()
    }

    /// The CLI pointed at this queue with `args` (shell words), run by `script(1)` on a 160×40
    /// pseudo-terminal of type `term` as its stdin, stdout and stderr, as a person would run it.
    pub fn cli_on_terminal(&self, term: &str, args: &str) -> Command {
        let cmd = format!(
            "stty cols 160 rows 40; {} --redis-url {} --queue {} {args}",
            bin_path("quayside").display(),
            self.cfg.redis.url,
            self.cfg.queue.name
        );
        let mut script = Command::new("script");
        script.args(["-qfec", &cmd, "/dev/null"]).env("TERM", term);
        script
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

    /// Waits for one job's terminal result.
    pub async fn wait_one(&self, id: &JobId, secs: u64) -> JobResult {
        self.wait_all(std::slice::from_ref(id), secs)
            .await
            .remove(0)
    }

    /// The job's record as it stands now; the job must be known.
    pub async fn status(&self, id: &JobId) -> JobStatus {
        self.producer
            .status(id)
            .await
            .expect("status")
            .unwrap_or_else(|| panic!("{id} unknown"))
    }

    /// Everything a finished test must leave: each job terminal with its result, nothing pending,
    /// nothing left in any lane (every tenant's), the running index and the delayed set.
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
        let tenants: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.tenants())
            .query_async(&mut conn)
            .await
            .expect("SMEMBERS tenants");
        let lanes = Priority::ALL.into_iter().flat_map(|p| {
            std::iter::once(self.keys.stream(p))
                .chain(tenants.iter().map(move |t| self.keys.lane(p, Some(t))))
        });
        for key in lanes {
            assert_eq!(
                size(&mut conn, "XLEN", &key).await,
                0,
                "{key} still holds entries"
            );
            let pending: Result<redis::Value, _> = redis::cmd("XPENDING")
                .arg(&key)
                .arg(GROUP)
                .query_async(&mut conn)
                .await;
            // A tenant's lane of a priority it never used does not exist.
            let pending = match pending {
                Err(e) if e.code() == Some("NOGROUP") => continue,
                p => p.expect("XPENDING"),
            };
            if let redis::Value::Array(a) = pending {
                assert_eq!(
                    a.first(),
                    Some(&redis::Value::Int(0)),
                    "{key} has pending entries"
                );
            }
        }
        let running = size(&mut conn, "HLEN", &self.keys.running()).await;
        assert_eq!(running, 0, "running index not empty");
        let delayed = size(&mut conn, "ZCARD", &self.keys.delayed()).await;
        assert_eq!(delayed, 0, "delayed set not empty");
    }

    /// Enqueues `spec` as the simplest client would, with a raw `XADD` of its id and JSON to
    /// the normal stream: nothing checks it before a worker does.
    pub async fn raw_enqueue(&self, spec: &JobSpec) {
        let job = serde_json::to_string(spec).expect("spec to json");
        self.raw_xadd(spec.id.as_str(), &job).await;
    }

    /// A raw producer's `XADD` of `id` and `job` (any text, valid or not) to the normal stream.
    pub async fn raw_xadd(&self, id: &str, job: &str) {
        let mut conn = self.conn().await;
        let _: String = redis::cmd("XADD")
            .arg(self.keys.stream(Priority::Normal))
            .arg("*")
            .arg("id")
            .arg(id)
            .arg("job")
            .arg(job)
            .query_async(&mut conn)
            .await
            .expect("raw XADD");
    }

    /// Entries in the normal stream (queued or running).
    pub async fn queued(&self) -> u64 {
        let mut conn = self.conn().await;
        size(&mut conn, "XLEN", &self.keys.stream(Priority::Normal)).await
    }

    /// Raw connection for tests that speak plain Redis (with the queue's auth and TLS).
    pub async fn conn(&self) -> quayside_common::connection::Connection {
        Redis::new(&self.cfg.redis)
            .expect("redis config")
            .dedicated()
            .await
            .expect("connect")
    }

    /// The `d` fields of a job's live log entries from `source` (`stdout`, `stderr`,
    /// `compile`), so far.
    pub async fn logged(&self, id: &JobId, source: &str) -> Vec<String> {
        let mut conn = self.conn().await;
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            redis::cmd("XRANGE")
                .arg(self.keys.logs(id))
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await
                .expect("XRANGE");
        entries
            .into_iter()
            .filter(|(_, f)| f.get("s").map(String::as_str) == Some(source))
            .filter_map(|(_, mut f)| f.remove("d"))
            .collect()
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
}

/// The size of `key` as a counting command (`XLEN`, `HLEN`, `ZCARD`) reads it.
async fn size(conn: &mut quayside_common::connection::Connection, command: &str, key: &str) -> u64 {
    redis::cmd(command)
        .arg(key)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{command} {key}: {e}"))
}
