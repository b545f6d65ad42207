//! The worker's Docker sandbox as a `docker run` command line, for benchmark baselines that
//! do a job's work without Quayside. Built from the runner's own `host_config`, so the two
//! cannot drift apart: a hardening option this does not translate is an error, not a gap.

use anyhow::{bail, ensure, Context as _};
use bollard::models::HostConfig;
use quayside_common::config::{default_languages, Config, FileTransfer, RunnerConfig};
use quayside_common::Limits;
use quayside_worker::runner::docker::host_config;
use quayside_worker::runner::sandbox::protocol::{expand, shell_quote};
use quayside_worker::runner::sandbox::WORK_DIR;

/// `docker run -i --rm <sandbox flags> <image> sh -c '...'`: a `run` job of `language` with
/// its default limits, reading its one source file (the entry file) from stdin, built and run
/// with the language table's own commands.
///
/// # Errors
/// An unknown language, or a sandbox option with no `docker run` flag here.
pub fn docker_run_argv(language: &str, labels: &[String]) -> anyhow::Result<Vec<String>> {
    let langs = default_languages();
    let lang = langs
        .get(language)
        .with_context(|| format!("no {language} in the default language table"))?;
    let limits = lang
        .default_limits(&Config::default().limits)
        .unwrap_or(Limits::DEFAULT);
    // Files arrive on stdin and land in a tmpfs /work, as with the worker's default transfer.
    let mut cfg = RunnerConfig::default();
    cfg.docker.file_transfer = FileTransfer::Stdin;
    let mut argv: Vec<String> = ["run", "-i", "--rm"].map(String::from).to_vec();
    for label in labels {
        argv.extend(["--label".into(), label.clone()]);
    }
    // One uid for every run: the baseline is a plain `docker run`, not per-job identities.
    let user = cfg.sandbox.user;
    argv.extend(["--user".into(), user.to_string()]);
    argv.extend(["--workdir".into(), WORK_DIR.into()]);
    argv.extend(flags(host_config(&cfg, &limits, (user.uid, user.gid)))?);
    let entry = shell_quote(&lang.entry_file);
    let vars = [
        ("options", String::new()),
        ("sources", entry.clone()),
        ("entry", entry.clone()),
    ];
    let mut script = format!("cat > {entry}");
    for step in [&lang.build_command, &lang.run_command] {
        if !step.is_empty() {
            script = format!("{script} && {}", expand(step, &vars));
        }
    }
    argv.extend([lang.image.clone(), "sh".into(), "-c".into(), script]);
    Ok(argv)
}

/// `docker run` flags for every option of `hc`; fails if any option is left untranslated.
fn flags(mut hc: HostConfig) -> anyhow::Result<Vec<String>> {
    let mut f: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: String| f.extend([name.to_owned(), value]);
    if let Some(m) = hc.memory.take() {
        flag("--memory", m.to_string());
    }
    if let Some(m) = hc.memory_swap.take() {
        flag("--memory-swap", m.to_string());
    }
    if let Some(n) = hc.nano_cpus.take() {
        flag("--cpus", format!("{}", n as f64 / 1e9));
    }
    if let Some(p) = hc.pids_limit.take() {
        flag("--pids-limit", p.to_string());
    }
    for u in hc.ulimits.take().unwrap_or_default() {
        let (Some(name), Some(soft), Some(hard)) = (u.name, u.soft, u.hard) else {
            bail!("incomplete ulimit in the sandbox's host config");
        };
        flag("--ulimit", format!("{name}={soft}:{hard}"));
    }
    if hc.readonly_rootfs.take() == Some(true) {
        f.push("--read-only".into());
    }
    let mut tmpfs: Vec<_> = hc.tmpfs.take().unwrap_or_default().into_iter().collect();
    tmpfs.sort();
    for (path, options) in tmpfs {
        f.extend(["--tmpfs".into(), format!("{path}:{options}")]);
    }
    ensure!(
        hc.mounts.take().unwrap_or_default().is_empty(),
        "volume mounts have no flag here (use the stdin file transfer)"
    );
    for (name, value) in [
        ("--network", hc.network_mode.take()),
        ("--ipc", hc.ipc_mode.take()),
        ("--runtime", hc.runtime.take()),
        ("--log-driver", hc.log_config.take().and_then(|l| l.typ)),
    ] {
        if let Some(v) = value {
            f.extend([name.into(), v]);
        }
    }
    for cap in hc.cap_drop.take().unwrap_or_default() {
        f.extend(["--cap-drop".into(), cap]);
    }
    for opt in hc.security_opt.take().unwrap_or_default() {
        f.extend(["--security-opt".into(), cli_security_opt(opt)?]);
    }
    ensure!(
        hc.privileged.take() != Some(true),
        "privileged sandboxes are not a baseline"
    );
    ensure!(
        hc == HostConfig::default(),
        "sandbox options without a docker run flag here: {hc:?}"
    );
    Ok(f)
}

/// The Engine API takes a seccomp profile's JSON; the CLI reads it from a file. Written once
/// per content to the temporary folder.
fn cli_security_opt(opt: String) -> anyhow::Result<String> {
    let Some(profile) = opt.strip_prefix("seccomp=").filter(|p| p.starts_with('{')) else {
        return Ok(opt);
    };
    let digest = profile.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = std::env::temp_dir().join(format!("quayside-seccomp-{digest:016x}.json"));
    if !path.exists() {
        std::fs::write(&path, profile).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(format!("seccomp={}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_baseline_carries_every_hardening_option_and_the_language_commands() {
        let argv = docker_run_argv("c", &["quayside.bench=1".into()]).expect("argv");
        let line = argv.join(" ");
        for part in [
            "run -i --rm --label quayside.bench=1 --user 10001:10001 --workdir /work",
            "--network none",
            "--read-only",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--security-opt seccomp=/",
            "--ipc none",
            "--log-driver none",
            "--pids-limit 64",
            "--memory 268435456 --memory-swap 268435456",
            "--ulimit nofile=1024:1024",
            "--tmpfs /tmp:rw,noexec",
            "--tmpfs /work:rw,exec",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
        let image = format!("{} sh -c", quayside_common::config::default_image("c"));
        assert!(line.contains(&image), "{image:?} missing from {line}");
        let script = argv.last().expect("script");
        assert!(
            script.starts_with("cat > 'main.c' && gcc -O2") && script.ends_with("./main \"$@\""),
            "{script}"
        );
    }
}
