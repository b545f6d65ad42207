//! The baselines: the benchmark's C program in `quayside/runner-c` run directly, through bare
//! Engine API cycles (with the engine's defaults, without network, or with the worker's own
//! sandbox options) and `docker run --rm`; and the sweep of what the benchmark started.

use quayside_worker::runner::docker::labelled;

use super::*;

/// The local engine (`DOCKER_HOST` or the default socket), version negotiated.
pub(crate) async fn connect() -> anyhow::Result<Docker> {
    Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await
        .context("docker engine")
}

/// The shell script the baselines run: write `main.c` into `/work`, then the C entry of
/// the default language table's build and run commands, expanded as the worker does.
pub(crate) fn compile_run_script() -> anyhow::Result<String> {
    let langs = default_languages();
    let c = langs
        .get(LANGUAGE)
        .context("no c in the default language table")?;
    let vars = [
        ("options", String::new()),
        ("sources", shell_quote("main.c")),
        ("entry", shell_quote("main.c")),
    ];
    let lines: Vec<String> = SOURCE.lines().map(shell_quote).collect();
    Ok(format!(
        "cd {WORK_DIR} && printf '%s\\n' {} > main.c && {} && {}",
        lines.join(" "),
        expand(&c.build_command, &vars),
        expand(&c.run_command, &vars)
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Options {
    /// What `docker create IMAGE CMD` gives: the engine's defaults (bridge network,
    /// json-file logs, writable root).
    Plain,
    /// The engine's defaults but no network (`--network none`), the one default that
    /// costs most (a bridge endpoint per container).
    NoNetwork,
    /// The sandbox options the worker's Docker runner sets (copied from its create body:
    /// keep in step with `worker/src/runner/docker/spec.rs`).
    Sandbox,
}

pub(crate) fn create_body(cmd: Vec<String>, options: Options, tag: &str) -> ContainerCreateBody {
    let labels = HashMap::from([(BENCH_LABEL.to_owned(), tag.to_owned())]);
    let mut body = ContainerCreateBody {
        image: Some(image()),
        cmd: Some(cmd),
        labels: Some(labels),
        ..Default::default()
    };
    match options {
        Options::Plain => return body,
        Options::NoNetwork => {
            body.network_disabled = Some(true);
            body.host_config = Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            });
            return body;
        }
        Options::Sandbox => {}
    }
    let cfg = RunnerConfig::default();
    // A job that sets no limits gets the language's defaults, as the worker resolves them.
    let limits = default_languages()
        .get(LANGUAGE)
        .and_then(|l| l.default_limits(&Config::default().limits).ok())
        .unwrap_or(Limits::DEFAULT);
    // The worker's own container settings, so the baseline is like for like.
    let user = quayside_worker::runner::docker::attempt_user(&cfg.sandbox);
    body.user = Some(format!("{}:{}", user.0, user.1));
    body.working_dir = Some(WORK_DIR.into());
    body.network_disabled = Some(true);
    body.host_config = Some(quayside_worker::runner::docker::host_config(
        &cfg, &limits, user,
    ));
    body
}

/// One bare Engine API cycle: create, start, wait, remove. Fails unless the program exits 0.
pub(crate) async fn api_cycle(
    docker: &Docker,
    body: ContainerCreateBody,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .context("create")?
        .id;
    let ran = async {
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .context("start")?;
        match docker
            .wait_container(&id, None::<WaitContainerOptions>)
            .next()
            .await
        {
            Some(Ok(r)) if r.status_code == 0 => Ok(()),
            Some(Ok(r)) => bail!("container exited {}", r.status_code),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("wait")),
            None => bail!("wait ended without a status"),
        }
    }
    .await;
    let removed = remove(docker, &id).await.context("remove");
    ran?;
    removed?;
    Ok(t.elapsed())
}

pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        })
        | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One `docker run --rm` through the CLI; fails unless it printed exactly `hi`.
pub(crate) async fn cli_run(args: &[String]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("spawn docker")?;
    ensure!(
        out.status.success() && out.stdout == EXPECTED.as_bytes(),
        "docker run: {} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(t.elapsed())
}

/// Removes what this benchmark started, from this run or an interrupted earlier one:
/// baseline containers (`quayside.bench`) and job containers of bench workers.
pub(crate) async fn sweep(docker: &Docker) -> anyhow::Result<usize> {
    let mut removed = 0;
    for label in [BENCH_LABEL, LABEL_WORKER] {
        for c in labelled(docker, label).await.context("list containers")? {
            let labels = c.labels.unwrap_or_default();
            let ours = labels.contains_key(BENCH_LABEL)
                || labels
                    .get(LABEL_WORKER)
                    .is_some_and(|w| w.starts_with(WORKER_PREFIX));
            if let (true, Some(id)) = (ours, c.id) {
                remove(docker, &id).await.context("remove leftover")?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Job containers (`quayside.job`) still there: `(of this benchmark, all)`.
pub(crate) async fn job_containers(docker: &Docker) -> anyhow::Result<(usize, usize)> {
    let list = labelled(docker, LABEL_JOB).await?;
    let ours = list
        .iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_WORKER))
                .is_some_and(|w| w.starts_with(WORKER_PREFIX))
        })
        .count();
    Ok((ours, list.len()))
}
