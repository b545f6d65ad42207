//! A Docker engine of a test's own, for tests that stop, restart or freeze an engine: the
//! shared `dockerd` other tests (and other people) use must never be restarted.
//!
//! Its own socket, data root, exec root and pid file; no bridge, no iptables, and its own network
//! namespace: an engine started with `--bridge none` deletes the host's `docker0` (libnetwork's
//! `removeDefaultBridgeInterface`), which would cut the shared engine's default network. Runner
//! images are copied in from the shared engine (`docker save` once per image into a cache folder,
//! then `docker load`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A private `dockerd`, stopped (and its folder removed) on drop.
pub struct PrivateDockerd {
    dir: PathBuf,
    child: Option<Child>,
}

/// The shared engine's default bridge, which a private engine must leave alone.
fn host_bridge_exists() -> bool {
    Path::new("/sys/class/net/docker0").exists()
}

impl PrivateDockerd {
    /// Starts an engine in `dir` (created) and waits until it answers.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("daemon.json"), "{}")?;
        let mut d = Self {
            dir: dir.to_owned(),
            child: None,
        };
        d.restart()?;
        Ok(d)
    }

    /// The folder it lives in; it is not started yet (a worker may wait for it).
    pub fn not_started(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("daemon.json"), "{}")?;
        Ok(Self {
            dir: dir.to_owned(),
            child: None,
        })
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix://…`, for `runner.docker.socket` and `docker -H`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The docker CLI pointed at this engine.
    pub fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(self.url());
        c
    }

    /// Starts the engine (again, on the same folder) and waits until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))?;
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "quayside-e2e".into());
        let had_bridge = host_bridge_exists();
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("-H")
            .arg(self.url())
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .arg("--config-file")
            .arg(self.dir.join("daemon.json"))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip6tables=false",
                "--shutdown-timeout",
                "5",
            ])
            .arg("--cgroup-parent")
            .arg(format!("e2e-{name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start dockerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self
                .cli()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                if had_bridge && !host_bridge_exists() {
                    bail!("the private dockerd removed the host's docker0 bridge");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "private dockerd did not answer; see {}/dockerd.log",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the engine the way `systemctl stop docker` does (SIGTERM; its containers die) and
    /// waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the engine: it keeps its socket but answers
    /// nothing, like an engine stuck under load.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let sig = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .arg(sig)
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Copies `image` from the shared engine into this one.
    pub fn load_image(&self, image: &str) -> anyhow::Result<()> {
        let tar = cached_image(image)?;
        let out = self.cli().arg("load").arg("-i").arg(&tar).output()?;
        if !out.status.success() {
            bail!(
                "docker load {image}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Names of the containers on this engine with `label` (all states).
    pub fn containers(&self, label: &str) -> Vec<String> {
        let out = self
            .cli()
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label={label}"))
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        self.freeze(false);
        if self.child.is_some() {
            // Containers first: the engine unmounts their layers as it removes them.
            let _ = self.cli().args(["ps", "-aq"]).output().map(|o| {
                for id in String::from_utf8_lossy(&o.stdout).lines() {
                    let _ = self.cli().args(["rm", "-f", id]).output();
                }
            });
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `docker save` of `image` from the shared engine, once per image (by its id, so a rebuilt
/// image is saved again) for every test process.
fn cached_image(image: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("quayside-e2e-images");
    std::fs::create_dir_all(&dir)?;
    let id = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()?;
    if !id.status.success() {
        bail!("image {image} is not on the shared engine (scripts/build-images.sh)");
    }
    let id = String::from_utf8_lossy(&id.stdout);
    let id = id.trim().trim_start_matches("sha256:");
    let name = format!(
        "{}-{}",
        image.replace(['/', ':'], "_"),
        &id[..id.len().min(12)]
    );
    let file = dir.join(format!("{name}.tar"));
    if file.exists() {
        return Ok(file);
    }
    // Written under a name of its own and renamed: a parallel test never loads half a file.
    let part = dir.join(format!("{name}.{}.part", std::process::id()));
    let out = Command::new("docker")
        .args(["save", image, "-o"])
        .arg(&part)
        .output()?;
    if !out.status.success() {
        bail!(
            "docker save {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&part, &file)?;
    Ok(file)
}
