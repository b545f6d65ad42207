//! A Redis Cluster of a test's own: three primaries (`redis-server --cluster-enabled yes`, no
//! replicas) on free loopback ports, each with a private folder, joined by
//! `redis-cli --cluster create` and ready (`cluster_state:ok`) before [`RedisCluster::start`]
//! returns; every node is killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::free_port;

/// Three cluster primaries on 127.0.0.1.
pub struct RedisCluster {
    /// Client ports, in the order the cluster was created.
    pub ports: Vec<u16>,
    /// What `redis-cli` needs besides the port (password, TLS).
    cli_args: Vec<String>,
    children: Vec<Child>,
}

impl RedisCluster {
    /// Starts three nodes under `dir` and creates the cluster (slots split three ways).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &[], &[])
    }

    /// [`Self::start`] with more server arguments (`{port}` in them is replaced by the node's
    /// port), e.g. `--requirepass` or `--port 0 --tls-port {port} --tls-cluster yes`, and what
    /// `redis-cli` then needs to reach the nodes (`-a`, `--tls --cacert`).
    pub fn start_with(dir: &Path, server: &[&str], cli: &[&str]) -> anyhow::Result<Self> {
        let mut c = Self {
            ports: Vec::new(),
            cli_args: cli.iter().map(|a| (*a).to_owned()).collect(),
            children: Vec::new(),
        };
        for _ in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).context("node folder")?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--maxmemory-policy", "noeviction"])
                .arg("--dir")
                .arg(&node_dir)
                .args(
                    server
                        .iter()
                        .map(|a| a.replace("{port}", &port.to_string())),
                )
                .stdout(Stdio::null())
                .spawn()
                .context("start redis-server --cluster-enabled yes")?;
            c.children.push(child);
            c.ports.push(port);
        }
        for &port in &c.ports {
            wait("a cluster node to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })?;
        }
        let nodes: Vec<String> = c.nodes();
        // Bounded: redis-cli waits forever for nodes that cannot meet on the bus.
        let out = Command::new("timeout")
            .args(["30", "redis-cli"])
            .args(&c.cli_args)
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for &port in &c.ports {
            wait("cluster_state:ok on every node", || {
                let info = c.cli(port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            })?;
        }
        Ok(c)
    }

    /// Every node as `host:port` (what `redis.cluster.nodes` takes).
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// `redis-cli -p PORT ARGS…` on a node, its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.cli_args.iter().map(String::as_str).collect();
        all.extend(args);
        crate::redis_cli(port, &all)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        self.cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The port of the primary serving `slot`.
    pub fn primary_of(&self, slot: u16) -> u16 {
        self.primary_seen_by(self.ports[0], slot)
    }

    /// [`Self::primary_of`] as the node on `port` sees it, from `CLUSTER NODES`: one line per
    /// node, `id ip:port@bus flags master ping pong epoch link slot-range...`.
    pub fn primary_seen_by(&self, port: u16, slot: u16) -> u16 {
        let out = self.cli(port, &["CLUSTER", "NODES"]);
        for line in out.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.split(',').any(|f| f == "master") {
                continue;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            });
            if serves {
                let port = addr
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok());
                return port.unwrap_or_else(|| panic!("no port in {addr}"));
            }
        }
        panic!("no primary of slot {slot} in CLUSTER NODES: {out}")
    }

    /// Moves `slot` with its keys to the primary on `to`, as `redis-cli --cluster reshard` does
    /// for each slot: mark it importing and migrating, `MIGRATE` its keys, assign it to `to` on
    /// every node; returns once every node names `to` as its owner.
    pub fn move_slot(&self, slot: u16, to: u16) -> anyhow::Result<()> {
        let from = self.primary_of(slot);
        let id = |port| self.cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id, s) = (id(from), id(to), slot.to_string());
        let ok = |port, args: &[&str]| -> anyhow::Result<()> {
            let out = self.cli(port, args);
            if out.trim() != "OK" {
                bail!("{args:?} on {port}: {out}");
            }
            Ok(())
        };
        ok(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])?;
        ok(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])?;
        loop {
            let listed = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            let keys: Vec<&str> = listed.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            ok(from, &args)?;
        }
        for &port in &self.ports {
            ok(port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id])?;
        }
        wait("every node to see the slot's new owner", || {
            self.ports
                .iter()
                .all(|&p| self.primary_seen_by(p, slot) == to)
        })
    }
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        if Instant::now() > deadline {
            bail!("timed out after 30s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
