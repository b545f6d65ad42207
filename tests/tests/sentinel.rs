//! Redis Sentinel: a real primary, a replica and three sentinels on 127.0.0.1; workers, the
//! producer and the CLI find the primary through the sentinels. The primary is SIGKILLed while
//! a batch runs: the batch completes on the promoted replica, every job has exactly one
//! terminal result and nothing is left in flight, and the test prints how long claims stopped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quayside_common::config::SentinelConfig;
use quayside_common::now_ms;
use quayside_e2e::{free_port, private_dir, recorded, redis_cli, within, PrivateRedis, TestQueue};

const MASTER: &str = "quayside";

/// A sentinel process on a free port, watching `MASTER` at `primary_port`.
struct Sentinel {
    port: u16,
    child: Child,
}

impl Sentinel {
    fn start(dir: &Path, primary_port: u16) -> Self {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        // Quick to judge the primary down and to fail over: a test, not a WAN.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir = dir.display()
            ),
        )
        .expect("write sentinel.conf");
        // Debian's redis-sentinel package; the server binary runs a sentinel too.
        let bin = if quayside_e2e::ops::which("redis-sentinel").is_some() {
            "redis-sentinel"
        } else {
            "redis-server"
        };
        let mut cmd = Command::new(bin);
        cmd.arg(&conf);
        if bin == "redis-server" {
            cmd.arg("--sentinel");
        }
        let child = cmd.stdout(Stdio::null()).spawn().expect("start a sentinel");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sentinel did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the primary this sentinel names now.
    fn primary_port(&self) -> Option<u16> {
        self.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }

    /// A field of `SENTINEL MASTER` (e.g. `num-slaves`).
    fn master_field(&self, field: &str) -> Option<String> {
        let out = self.cli(&["SENTINEL", "MASTER", MASTER]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .iter()
            .position(|l| l.trim() == field)
            .and_then(|i| lines.get(i + 1))
            .map(|v| v.trim().to_owned())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_completes_across_a_failover_with_one_result_per_job() {
    let dir = private_dir("sentinel");
    let (pdir, rdir) = (dir.join("primary"), dir.join("replica"));
    std::fs::create_dir_all(&pdir).expect("mkdir");
    std::fs::create_dir_all(&rdir).expect("mkdir");
    let mut primary = PrivateRedis::start(&pdir).expect("primary");
    let pport = primary.port.to_string();
    let replica =
        PrivateRedis::start_with(&rdir, &["--replicaof", "127.0.0.1", &pport]).expect("replica");
    wait_for("the replica in sync", 30, || {
        redis_cli(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
    });
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(&dir, primary.port))
        .collect();
    wait_for(
        "every sentinel knows the replica and the others",
        60,
        || {
            sentinels.iter().all(|s| {
                s.master_field("num-slaves").as_deref() == Some("1")
                    && s.master_field("num-other-sentinels").as_deref() == Some("2")
            })
        },
    );

    // Every component gets only the sentinels; the URL's host is a port nothing listens on.
    let sentinel = SentinelConfig {
        master: MASTER.into(),
        addresses: sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect(),
        ..SentinelConfig::default()
    };
    let q = TestQueue::with_redis("sentinel", |r| {
        r.url = format!("redis://127.0.0.1:{}", free_port());
        r.sentinel = Some(sentinel.clone());
    });
    let log = q.path("runs.log");
    let ids = q
        .enqueue_all(&q.jobs(80, &format!("record {log}\nsleep 250")))
        .await;
    // An acknowledged enqueue is on the primary only until it replicates (asynchronous, as
    // docs/protocol.md says): wait for the replica so the failover loses none of them.
    redis_cli(primary.port, &["WAIT", "1", "5000"]);
    q.spawn_workers(2, |c| c.worker.slots = 2);
    wait_for("ten jobs started", 60, || {
        recorded(&log).iter().filter(|r| r.2 == "start").count() >= 10
    });

    let killed_at = now_ms();
    primary.kill();
    let t = Instant::now();
    wait_for("a sentinel promotes the replica", 60, || {
        sentinels
            .iter()
            .any(|s| s.primary_port() == Some(replica.port))
    });
    let failover = t.elapsed();

    let results = q.wait_all(&ids, 180).await;
    assert_eq!(results.len(), ids.len());
    within(30, "settled", q.assert_settled(&ids)).await;
    for r in &results {
        assert!(r.status.is_terminal(), "{r:?}");
    }

    // The CLI finds the new primary the same way (config from the environment).
    let out = q
        .cli()
        .env("QUAYSIDE_REDIS__SENTINEL__MASTER", MASTER)
        .env(
            "QUAYSIDE_REDIS__SENTINEL__ADDRESSES",
            sentinel.addresses.join(","),
        )
        .args(["status", ids[0].as_str()])
        .output()
        .expect("quayside status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // How long no job started: the longest gap between starts that spans the kill.
    let mut starts: Vec<u64> = recorded(&log)
        .into_iter()
        .filter(|r| r.2 == "start")
        .map(|r| r.3)
        .collect();
    starts.sort_unstable();
    let stopped = starts
        .windows(2)
        .filter(|w| w[1] >= killed_at)
        .map(|w| w[1] - w[0].max(killed_at))
        .max()
        .unwrap_or(0);
    println!(
        "sentinel failover: promoted after {} ms; claims stopped for {stopped} ms; {} executions for {} jobs",
        failover.as_millis(),
        starts.len(),
        ids.len()
    );
}
