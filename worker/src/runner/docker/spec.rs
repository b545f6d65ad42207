//! The create body of a job container: every limit and hardening option in one place.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountTypeEnum, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, ResourcesUlimits,
};
use quayside_common::config::{
    DockerConfig, FileTransfer, RunnerConfig, SandboxConfig, SeccompProfile,
};
use quayside_common::job::SpecError;
use quayside_common::Limits;

use crate::runner::sandbox::{self, protocol, seccomp, MAX_ARG_STRLEN, WORK_DIR};
use crate::runner::RunRequest;

/// The uid and gid of one attempt: `runner.sandbox.user`'s uid plus a random offset below
/// `uid_range`, so per-user kernel limits (inotify instances, pipe buffers, queued signals,
/// `RLIMIT_NPROC`) are never shared with a job running beside it.
pub fn attempt_user(cfg: &SandboxConfig) -> (u32, u32) {
    let user = cfg.attempt_user(rand::random());
    (user.uid, user.gid)
}

/// The container for one attempt, run as `user`: the wrapper `script` as its main process
/// (through [`protocol::sandbox_command`]) with the job's args as positional parameters,
/// stdin attached, and nothing writable but two bounded tmpfs.
pub fn create_body(
    cfg: &RunnerConfig,
    req: &RunRequest,
    script: String,
    labels: HashMap<String, String>,
    user: (u32, u32),
) -> ContainerCreateBody {
    let args = req.args_of_kind();
    let command = protocol::sandbox_command(script, wrapper_shell(&cfg.docker));
    let image = &req.language_config.image;
    container_body(cfg, image, &req.limits, (command, args), labels, user)
}

/// A warm container for `image`'s jobs with `limits`, run as `user`: the same container as
/// [`create_body`]'s, its command the job-independent stub ([`protocol::stub_command`]),
/// which reads the job's script from stdin.
pub fn warm_body(
    cfg: &RunnerConfig,
    image: &str,
    limits: &Limits,
    labels: HashMap<String, String>,
    user: (u32, u32),
) -> ContainerCreateBody {
    let command = protocol::stub_command(wrapper_shell(&cfg.docker));
    container_body(cfg, image, limits, (command, Vec::new()), labels, user)
}

/// Every job container, cold or warm: `command` (its entrypoint) with `args`.
fn container_body(
    cfg: &RunnerConfig,
    image: &str,
    limits: &Limits,
    (command, args): (Vec<String>, Vec<String>),
    labels: HashMap<String, String>,
    user: (u32, u32),
) -> ContainerCreateBody {
    // The entrypoint replaces the image's, and with an entrypoint set the image's CMD is
    // ignored, so an empty args list stays empty.
    ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(command),
        cmd: Some(args),
        user: Some(format!("{}:{}", user.0, user.1)),
        working_dir: Some(WORK_DIR.into()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // Closing our end of the attach closes the program's stdin (EOF); so does a worker
        // that dies: a warm container's stub then exits.
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        // The wrapper (PID 1) ignores SIGTERM, so a `docker stop` or an engine shutdown would
        // wait the default 10 s for nothing before its SIGKILL.
        stop_timeout: Some(1),
        labels: Some(labels),
        host_config: Some(host_config(cfg, limits, user)),
        ..Default::default()
    }
}

/// Every limit and hardening option of a job container run as `(uid, gid)` (the benchmark's
/// like-for-like bare API baseline uses it too, so the two cannot drift apart).
pub fn host_config(cfg: &RunnerConfig, limits: &Limits, (uid, gid): (u32, u32)) -> HostConfig {
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    let size = cfg.sandbox.work_dir_bytes;
    let mut tmpfs = HashMap::from([(
        "/tmp".to_owned(),
        format!("rw,noexec,nosuid,nodev,size={size},mode=1777"),
    )]);
    let work_options = format!("size={size},uid={uid},gid={gid},mode=0700");
    let mut mounts = Vec::new();
    match cfg.docker.file_transfer {
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
        ulimit("nofile", cfg.sandbox.max_open_files),
        ulimit("fsize", cfg.sandbox.max_file_bytes),
        // /dev/mqueue stays mounted even without IPC: no bytes for message queues.
        ulimit("msgqueue", 0),
    ];
    // gVisor (runsc, Debian's 2022 build) fails to start a container with a pids cgroup
    // limit, but every sandbox has a kernel of its own there, so RLIMIT_NPROC bounds the
    // sandbox's processes instead. Under runc it would be shared by every job's uid on the host.
    let gvisor = gvisor(&cfg.docker);
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
        security_opt: Some(security_options(&cfg.sandbox)),
        privileged: Some(false),
        // Output goes to the worker through the attach, not into a log file on the host.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        runtime: (!cfg.docker.runtime.is_empty()).then(|| cfg.docker.runtime.clone()),
        ..Default::default()
    }
}

/// How the wrapper keeps the job out of its memory: gVisor does that itself (and refuses the
/// execute-only shell the prelude uses), a Linux kernel needs the prelude.
pub fn wrapper_shell(cfg: &DockerConfig) -> protocol::WrapperShell {
    if gvisor(cfg) {
        protocol::WrapperShell::Plain
    } else {
        protocol::WrapperShell::Undumpable
    }
}

/// Whether job containers run under gVisor (`runsc`).
fn gvisor(cfg: &DockerConfig) -> bool {
    cfg.runtime.contains("runsc")
}

/// Refuses a job whose container command the kernel would refuse (`E2BIG`): the wrapper
/// script, which quotes every source file name and compiler option into one argument, or one
/// of the program's args, longer than [`MAX_ARG_STRLEN`].
///
/// # Errors
/// The field whose text made the argument too long.
pub fn check_command(cfg: &DockerConfig, req: &RunRequest, script: &str) -> Result<(), SpecError> {
    let longest = MAX_ARG_STRLEN - 1;
    let too_long = protocol::longest_argument(script, wrapper_shell(cfg));
    if too_long > longest {
        let options: usize = req.compiler_options.iter().map(|o| 4 * o.len()).sum();
        let names: usize = req.files.keys().map(String::len).sum();
        // Each test is one line of the script: its limits and its args, quoted.
        let tests: usize = req
            .tests
            .iter()
            .flat_map(|p| &p.tests)
            .map(|t| 32 + t.args.iter().map(|a| 4 * a.len() + 3).sum::<usize>())
            .sum();
        let field = if tests > options.max(names) {
            "tests"
        } else if options > names {
            "compiler_options"
        } else {
            "files"
        };
        return Err(SpecError::field(
            field,
            format!(
                "the file names and compiler options make a wrapper script of {too_long} bytes; \
                 the kernel passes at most {longest} bytes in one argument"
            ),
        ));
    }
    sandbox::check_args(&req.args)
}

/// `no-new-privileges`, and the seccomp profile unless the engine's default was chosen. The
/// Engine API takes the profile itself (the CLI's `seccomp=<file>` reads the file first).
fn security_options(cfg: &SandboxConfig) -> Vec<String> {
    let mut options = vec!["no-new-privileges".to_owned()];
    if cfg.seccomp == SeccompProfile::Quayside {
        options.push(format!("seccomp={}", seccomp::compact()));
    }
    options
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
    use quayside_common::{JobId, JobKind, Limits};

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
            tests: None,
        }
    }

    #[test]
    fn every_container_is_hardened_and_limited() {
        let cfg = RunnerConfig::default();
        let user = attempt_user(&cfg.sandbox);
        assert!(
            (10001..10001 + (1 << 20)).contains(&user.0) && user.1 == 10001,
            "{user:?}"
        );
        let body = create_body(
            &cfg,
            &request(JobKind::Run),
            "true".into(),
            HashMap::new(),
            user,
        );
        let hc = body.host_config.clone().expect("host config");
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_swap, hc.memory, "no swap");
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.pids_limit, Some(64));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        let security = hc.security_opt.clone().expect("security options");
        assert_eq!(security[0], "no-new-privileges");
        assert_eq!(security[1], format!("seccomp={}", seccomp::compact()));
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.runtime, None, "the engine's default runtime");
        assert_eq!(hc.binds, None, "never a host path");
        assert_eq!(hc.mounts, Some(vec![]));
        let tmpfs = hc.tmpfs.expect("tmpfs");
        let owner = format!("uid={},gid={},mode=0700", user.0, user.1);
        assert!(tmpfs["/work"].contains("size=67108864") && tmpfs["/work"].contains(&owner));
        assert!(tmpfs["/tmp"].contains("noexec"));
        let ulimits: Vec<_> = hc
            .ulimits
            .expect("ulimits")
            .into_iter()
            .filter_map(|u| u.name)
            .collect();
        assert_eq!(ulimits, ["nofile", "fsize", "msgqueue"]);
        assert_eq!(body.user, Some(format!("{}:{}", user.0, user.1)));
        let entrypoint = body.entrypoint.expect("entrypoint");
        assert_eq!(
            entrypoint.last().map(String::as_str),
            Some("true"),
            "the prelude runs it"
        );
        assert_eq!(
            body.cmd,
            Some(vec!["a b".to_owned()]),
            "args are parameters, not text"
        );
    }

    /// A warm container differs from a cold one of the same limits in its command alone.
    #[test]
    fn a_warm_container_has_the_cold_ones_hardening_and_the_stub_as_its_command() {
        let cfg = RunnerConfig::default();
        let mut req = request(JobKind::Compile);
        req.args.clear();
        let labels = HashMap::from([("k".to_owned(), "v".to_owned())]);
        let cold = create_body(&cfg, &req, "true".into(), labels.clone(), (10001, 10001));
        let warm = warm_body(
            &cfg,
            &req.language_config.image,
            &req.limits,
            labels,
            (10001, 10001),
        );
        let command = protocol::stub_command(protocol::WrapperShell::Undumpable);
        assert_eq!(warm.entrypoint.as_ref(), Some(&command));
        assert_eq!(
            ContainerCreateBody {
                entrypoint: None,
                ..warm
            },
            ContainerCreateBody {
                entrypoint: None,
                ..cold
            }
        );
    }

    #[test]
    fn a_fixed_uid_and_the_engines_seccomp_profile_are_switches() {
        let mut cfg = RunnerConfig::default();
        cfg.sandbox.uid_range = 1;
        cfg.sandbox.seccomp = SeccompProfile::RuntimeDefault;
        assert_eq!(attempt_user(&cfg.sandbox), (10001, 10001));
        let hc = host_config(&cfg, &Limits::DEFAULT, attempt_user(&cfg.sandbox));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_owned()]));
    }

    #[test]
    fn a_command_the_kernel_would_refuse_is_a_refused_job() {
        let mut req = request(JobKind::Run);
        check_command(&DockerConfig::default(), &req, "true").expect("small");
        req.compiler_options = vec!["'".repeat(40 << 10)];
        let lang = quayside_common::config::default_languages()["c"].clone();
        let script =
            protocol::wrapper_body(&lang, JobKind::Run, &req.compiler_options, &req.files, None)
                .map(|b| protocol::stdin_wrapper(&b))
                .expect("script");
        let err = check_command(&DockerConfig::default(), &req, &script)
            .expect_err("quoted options over 128 KiB");
        assert!(err.to_string().starts_with("compiler_options: "), "{err}");
        req.compiler_options.clear();
        req.args = vec!["x".repeat(MAX_ARG_STRLEN)];
        assert!(check_command(&DockerConfig::default(), &req, "true")
            .expect_err("arg")
            .to_string()
            .starts_with("args[0]: "));
    }

    /// Names full of `'` quote to four times their length and can still overflow it: such a
    /// job is refused by [`check_command`] (tested above), never failed as infrastructure.
    #[test]
    fn the_largest_job_the_default_caps_allow_fits_in_one_argument() {
        let caps = quayside_common::config::LimitsConfig::default();
        let mut req = request(JobKind::Run);
        let n = |v: u64| usize::try_from(v).expect("small");
        req.files = (0..n(caps.max_files))
            .map(|i| {
                let name = format!("{i:03}{}.c", "x".repeat(n(caps.max_path_bytes) - 5));
                (name, String::new())
            })
            .collect();
        req.compiler_options = vec!["'".repeat(n(caps.max_compiler_options_bytes))];
        for lang in quayside_common::config::default_languages().values() {
            for kind in [JobKind::Run, JobKind::Compile] {
                let script =
                    protocol::wrapper_body(lang, kind, &req.compiler_options, &req.files, None)
                        .map(|b| protocol::stdin_wrapper(&b))
                        .expect("script");
                check_command(&DockerConfig::default(), &req, &script)
                    .expect("the default caps fit");
            }
        }
    }

    #[test]
    fn under_gvisor_the_pids_bound_is_rlimit_nproc() {
        let mut cfg = RunnerConfig::default();
        cfg.docker.runtime = "runsc".into();
        let hc = create_body(
            &cfg,
            &request(JobKind::Run),
            "true".into(),
            HashMap::new(),
            (10001, 10001),
        )
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
        let mut cfg = RunnerConfig::default();
        cfg.docker.file_transfer = FileTransfer::Archive;
        let body = create_body(
            &cfg,
            &request(JobKind::Compile),
            "true".into(),
            HashMap::new(),
            (10001, 10001),
        );
        let hc = body.host_config.expect("host config");
        assert!(!hc.tmpfs.expect("tmpfs").contains_key("/work"));
        let mount = &hc.mounts.expect("mounts")[0];
        assert_eq!(mount.typ, Some(MountTypeEnum::VOLUME));
        assert_eq!(mount.source, None, "anonymous, removed with the container");
        assert_eq!(body.cmd, Some(vec![]));
    }
}
