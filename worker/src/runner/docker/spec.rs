//! The create body of a job container: every limit and hardening option in one place.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountTypeEnum, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, ResourcesUlimits,
};
use quayside_common::config::{DockerConfig, FileTransfer};
use quayside_common::{JobKind, Limits};

use crate::runner::sandbox::WORK_DIR;
use crate::runner::RunRequest;

/// Fallback when `runner.docker.user` is not numeric (config validation refuses that).
pub(super) const DEFAULT_UID_GID: (u32, u32) = (10001, 10001);

/// The container for one attempt: `sh -c <script>` as its main process with the job's args as
/// positional parameters, stdin attached, and nothing writable but two bounded tmpfs.
pub fn create_body(
    cfg: &DockerConfig,
    req: &RunRequest,
    script: String,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    // The entrypoint replaces the image's, and with an entrypoint set the image's CMD is
    // ignored, so an empty args list stays empty.
    let entrypoint = vec!["sh".into(), "-c".into(), script, "quayside".into()];
    let args = match req.kind {
        JobKind::Run => req.args.clone(),
        JobKind::Compile => Vec::new(),
    };
    ContainerCreateBody {
        image: Some(req.language_config.image.clone()),
        entrypoint: Some(entrypoint),
        cmd: Some(args),
        user: Some(cfg.user.clone()),
        working_dir: Some(WORK_DIR.into()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // Closing our end of the attach closes the program's stdin (EOF).
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        // The wrapper (PID 1) ignores SIGTERM, so a `docker stop` or an engine shutdown would
        // wait the default 10 s for nothing before its SIGKILL.
        stop_timeout: Some(1),
        labels: Some(labels),
        host_config: Some(host_config(cfg, &req.limits)),
        ..Default::default()
    }
}

/// Every limit and hardening option of a job container (the benchmark's like-for-like bare
/// API baseline uses it too, so the two cannot drift apart).
pub fn host_config(cfg: &DockerConfig, limits: &Limits) -> HostConfig {
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    let (uid, gid) = cfg.uid_gid().unwrap_or(DEFAULT_UID_GID);
    let size = cfg.tmpfs_bytes;
    let mut tmpfs = HashMap::from([(
        "/tmp".to_owned(),
        format!("rw,noexec,nosuid,nodev,size={size},mode=1777"),
    )]);
    let work_options = format!("size={size},uid={uid},gid={gid},mode=0700");
    let mut mounts = Vec::new();
    match cfg.file_transfer {
        FileTransfer::Stdin => {
            tmpfs.insert(
                WORK_DIR.to_owned(),
                format!("rw,exec,nosuid,nodev,{work_options}"),
            );
        }
        FileTransfer::Archive => mounts.push(archive_volume(work_options)),
    }
    let ulimit = |name: &str, value: u64| ResourcesUlimits {
        name: Some(name.to_owned()),
        soft: Some(i64::try_from(value).unwrap_or(i64::MAX)),
        hard: Some(i64::try_from(value).unwrap_or(i64::MAX)),
    };
    let mut ulimits = vec![
        ulimit("nofile", cfg.max_open_files),
        ulimit("fsize", cfg.max_file_bytes),
        // /dev/mqueue stays mounted even without IPC: no bytes for message queues.
        ulimit("msgqueue", 0),
    ];
    // gVisor (runsc, Debian's 2022 build) fails to start a container with a pids cgroup
    // limit, but every sandbox has a kernel of its own there, so RLIMIT_NPROC bounds the
    // sandbox's processes instead. Under runc it would be shared by every job's uid on the host.
    let gvisor = cfg.runtime.contains("runsc");
    if gvisor {
        ulimits.push(ulimit("nproc", limits.pids));
    }
    HostConfig {
        memory: Some(memory),
        // Equal to memory: no swap at all.
        memory_swap: Some(memory),
        nano_cpus: Some(
            i64::try_from(limits.cpu_millicores.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        ),
        pids_limit: (!gvisor).then(|| i64::try_from(limits.pids).unwrap_or(i64::MAX)),
        ulimits: Some(ulimits),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs),
        mounts: Some(mounts),
        network_mode: Some("none".into()),
        // No /dev/shm or message queues: /work and /tmp stay the only writable places.
        ipc_mode: Some("none".into()),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        privileged: Some(false),
        // Output goes to the worker through the attach, not into a log file on the host.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        runtime: (!cfg.runtime.is_empty()).then(|| cfg.runtime.clone()),
        ..Default::default()
    }
}

/// `/work` as an anonymous tmpfs-backed volume: the one kind of mount the Engine API archive
/// upload writes through to. Removed with the container (`v=true`).
fn archive_volume(work_options: String) -> Mount {
    let options = HashMap::from([
        ("type".to_owned(), "tmpfs".to_owned()),
        ("device".to_owned(), "tmpfs".to_owned()),
        ("o".to_owned(), format!("nosuid,nodev,{work_options}")),
    ]);
    Mount {
        target: Some(WORK_DIR.into()),
        typ: Some(MountTypeEnum::VOLUME),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".into()),
                options: Some(options),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quayside_common::config::LanguageConfig;
    use quayside_common::{JobId, Limits};

    use super::*;

    fn request(kind: JobKind) -> RunRequest {
        RunRequest {
            job_id: JobId::parse("j1").expect("id"),
            attempt: 1,
            kind,
            language: "c".into(),
            language_config: LanguageConfig {
                image: "quayside/runner-c:1".into(),
                ..Default::default()
            },
            files: BTreeMap::new(),
            compiler_options: Vec::new(),
            args: vec!["a b".into()],
            stdin: String::new(),
            limits: Limits::DEFAULT,
            fleet: Default::default(),
        }
    }

    #[test]
    fn every_container_is_hardened_and_limited() {
        let cfg = DockerConfig::default();
        let body = create_body(&cfg, &request(JobKind::Run), "true".into(), HashMap::new());
        let hc = body.host_config.expect("host config");
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_swap, hc.memory, "no swap");
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.pids_limit, Some(64));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.runtime, None, "the engine's default runtime");
        assert_eq!(hc.binds, None, "never a host path");
        assert_eq!(hc.mounts, Some(vec![]));
        let tmpfs = hc.tmpfs.expect("tmpfs");
        assert!(tmpfs["/work"].contains("size=67108864") && tmpfs["/work"].contains("uid=10001"));
        assert!(tmpfs["/tmp"].contains("noexec"));
        let ulimits: Vec<_> = hc
            .ulimits
            .expect("ulimits")
            .into_iter()
            .filter_map(|u| u.name)
            .collect();
        assert_eq!(ulimits, ["nofile", "fsize", "msgqueue"]);
        assert_eq!(body.user.as_deref(), Some("10001:10001"));
        assert_eq!(
            body.cmd,
            Some(vec!["a b".to_owned()]),
            "args are parameters, not text"
        );
    }

    #[test]
    fn under_gvisor_the_pids_bound_is_rlimit_nproc() {
        let cfg = DockerConfig {
            runtime: "runsc".into(),
            ..Default::default()
        };
        let hc = create_body(&cfg, &request(JobKind::Run), "true".into(), HashMap::new())
            .host_config
            .expect("host config");
        assert_eq!(hc.runtime.as_deref(), Some("runsc"));
        assert_eq!(
            hc.pids_limit, None,
            "Debian's runsc refuses a pids cgroup limit"
        );
        let nproc = hc
            .ulimits
            .expect("ulimits")
            .into_iter()
            .find(|u| u.name.as_deref() == Some("nproc"))
            .expect("nproc ulimit");
        assert_eq!((nproc.soft, nproc.hard), (Some(64), Some(64)));
    }

    #[test]
    fn archive_transfer_mounts_a_tmpfs_volume_and_compile_jobs_get_no_args() {
        let cfg = DockerConfig {
            file_transfer: FileTransfer::Archive,
            ..Default::default()
        };
        let body = create_body(
            &cfg,
            &request(JobKind::Compile),
            "true".into(),
            HashMap::new(),
        );
        let hc = body.host_config.expect("host config");
        assert!(!hc.tmpfs.expect("tmpfs").contains_key("/work"));
        let mount = &hc.mounts.expect("mounts")[0];
        assert_eq!(mount.typ, Some(MountTypeEnum::VOLUME));
        assert_eq!(mount.source, None, "anonymous, removed with the container");
        assert_eq!(body.cmd, Some(vec![]));
    }
}
