//! One attempt of a job in a fresh container.
//!
//! Round trips: create, attach, start (plus the archive upload with `file_transfer = archive`),
//! then everything else goes over the attach: the header, the files and the job's stdin in,
//! stdout and stderr out. When the output ends the container has exited, and one inspect
//! gives its exit code and whether the kernel OOM-killed any process in it. The worker times
//! the build and the run apart from the wrapper's end-of-build marker, and stops the container
//! at a wall-time limit, when an output stream passes its cap, or when the job is cancelled
//! (keeping the output so far). A container that died of a signal is checked against the
//! engine's events ([`KillWatch`]): killed from outside is an infrastructure failure, never the
//! program's verdict.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, StartContainerOptions, UploadToContainerOptions,
};
use futures_util::{Stream, StreamExt as _};
use quayside_common::config::{FileTransfer, RunnerConfig};
use quayside_common::{JobKind, Limits};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::container::{exited, Sandbox};
use super::{api_error, spec};
use crate::logs::{LogSink, LogSource};
use crate::runner::sandbox::protocol::{self, PhaseMarker, Scan};
use crate::runner::sandbox::{self, CappedOutput, Ending, LiveLog, WORK_DIR};
use crate::runner::{RunOutput, RunRequest, RunnerError};

/// How long the live log may take to catch up once the program has ended.
const LOG_FLUSH_GRACE: Duration = Duration::from_secs(2);
/// Seconds past both wall times after which the worker has given up on a sandbox for sure
/// (its outer backstop is 60 s); written on the sandbox for other fleets' sweeps.
const DEADLINE_SLACK_S: u64 = 120;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>;

/// Runs one attempt in a container it creates in `sandbox`. Removes it when it stops it at a
/// limit or on cancel; otherwise (exit, error) the caller does.
pub(super) async fn run(
    sandbox: &mut Sandbox,
    cfg: &RunnerConfig,
    req: &RunRequest,
    logs: &LogSink,
    script: String,
    worker_id: &str,
    cancel: &CancellationToken,
) -> Result<RunOutput, RunnerError> {
    let job = &req.job_id;
    let docker = sandbox.docker.clone();
    let nonce = protocol::new_nonce();
    let creating = Instant::now();
    let started = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(RunnerError::Cancelled),
        started = start(sandbox, cfg, req, script, worker_id, &nonce) => started,
    };
    let (output, _stdin, generation) = started?;
    let id = sandbox.id.clone().unwrap_or_default();
    let sandbox_start_ms = creating.elapsed().as_millis() as u64;

    let mut live = LiveLog::start(logs);
    let streamed = stream(output, &nonce, &req.limits, &mut live, cancel).await;
    let (ending, ()) = tokio::join!(
        async {
            match streamed.ending {
                // Stopped at a limit or cancelled: kill it now, not after the live log.
                Some(ending) => {
                    sandbox.remove().await;
                    Ok(ending)
                }
                None => exited(&docker, &id, &sandbox.kills, generation).await,
            }
        },
        live.finish(LOG_FLUSH_GRACE),
    );
    let ending = ending?;
    let verdict = match sandbox::classify(req.kind, streamed.build_status, ending) {
        Ok(verdict) => verdict,
        Err((what, transient)) => {
            let output = streamed.build.into_captured().lossy();
            return Err(RunnerError::Failed {
                context: format!("{what} (job {job}, {ending:?}): {}", output.trim()),
                transient,
                source: None,
            });
        }
    };
    Ok(RunOutput {
        status: verdict.status,
        exit_code: verdict.exit_code,
        signal: verdict.signal,
        stdout: streamed.stdout.into_captured(),
        stderr: streamed.stderr.into_captured(),
        compile_output: streamed.build.into_captured(),
        compile_ms: streamed.compile_ms,
        // Only a program that ran has a run time.
        run_ms: if req.kind == JobKind::Run && streamed.build_status == Some(0) {
            streamed.run_ms
        } else {
            0
        },
        sandbox_start_ms: Some(sandbox_start_ms),
    })
}

/// Creates, attaches and starts the container and starts feeding its stdin. Returns its
/// output, the stdin task and the event stream's generation when it was created.
async fn start(
    sandbox: &mut Sandbox,
    cfg: &RunnerConfig,
    req: &RunRequest,
    script: String,
    worker_id: &str,
    nonce: &str,
) -> Result<(Output, AbortOnDropHandle<()>, u64), RunnerError> {
    let job = &req.job_id;
    let docker = sandbox.docker.clone();
    // A uid of its own: per-user kernel limits are not shared with the jobs beside it.
    let user = spec::attempt_user(&cfg.sandbox);
    let archive =
        protocol::archive(&req.files, user.0, user.1).map_err(|e| RunnerError::Failed {
            context: format!("cannot archive the files of job {job}"),
            transient: false,
            source: Some(Box::new(e)),
        })?;
    let l = &req.limits;
    let deadline = quayside_common::now_ms() / 1000
        + (l.compile_wall_time_ms + l.run_wall_time_ms) / 1000
        + DEADLINE_SLACK_S;
    let labels = sandbox::labels(
        &req.fleet,
        job,
        req.attempt,
        worker_id,
        i64::try_from(deadline).unwrap_or(i64::MAX),
    );
    let body = spec::create_body(cfg, req, script, labels, user);
    // Known before the create returns, so even a create cut short by a cancel is removed, and
    // the sweep spares it from now on.
    let id = sandbox::sandbox_name(job, req.attempt);
    sandbox.sandboxes.started(&id);
    let generation = sandbox.kills.watch(&id);
    sandbox.id = Some(id.clone());
    let options = CreateContainerOptions {
        name: Some(id.clone()),
        ..Default::default()
    };
    match docker.create_container(Some(options), body).await {
        Ok(_) => {}
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(RunnerError::ImageMissing {
                image: req.language_config.image.clone(),
            })
        }
        Err(e) => {
            return Err(api_error(
                format!("cannot create the sandbox of job {job}"),
                e,
            ))
        }
    }
    // Attached before the start, so no output is missed.
    let attach = AttachContainerOptions {
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let AttachContainerResults { output, mut input } = docker
        .attach_container(&id, Some(attach))
        .await
        .map_err(|e| api_error(format!("cannot attach to the sandbox of job {job}"), e))?;
    docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
        .map_err(|e| api_error(format!("cannot start the sandbox of job {job}"), e))?;
    let payload = match cfg.docker.file_transfer {
        FileTransfer::Stdin => protocol::stdin_payload(nonce, &archive, &req.stdin),
        FileTransfer::Archive => {
            // Only now that the container runs is its /work volume mounted to write through.
            let to = UploadToContainerOptions {
                path: WORK_DIR.into(),
                ..Default::default()
            };
            docker
                .upload_to_container(&id, Some(to), bollard::body_full(archive.into()))
                .await
                .map_err(|e| api_error(format!("cannot upload the files of job {job}"), e))?;
            protocol::stdin_payload(nonce, &[], &req.stdin)
        }
    };
    // A task of its own: a program that never reads its stdin must not block its output.
    let stdin = AbortOnDropHandle::new(tokio::spawn(async move {
        // A failed write means the program exited or closed its stdin: nothing to do.
        if input.write_all(&payload).await.is_ok() {
            let _ = input.shutdown().await;
        }
    }));
    Ok((output, stdin, generation))
}

/// What the attach delivered, split by phase and capped.
struct Streamed {
    build: CappedOutput,
    stdout: CappedOutput,
    stderr: CappedOutput,
    /// The build step's exit status, once its marker arrived.
    build_status: Option<i64>,
    /// Why the worker stopped reading; `None` when the output ended (the container exited).
    ending: Option<Ending>,
    compile_ms: u64,
    run_ms: u64,
}

/// Reads the container's output until it ends, a wall-time limit passes, a stream passes its
/// cap or `cancel` fires, feeding the live log as it goes.
async fn stream(
    mut output: Output,
    nonce: &str,
    limits: &Limits,
    live: &mut LiveLog,
    cancel: &CancellationToken,
) -> Streamed {
    let cap = limits.output_bytes;
    let (mut build, mut stdout, mut stderr) = (
        CappedOutput::new(cap),
        CappedOutput::new(cap),
        CappedOutput::new(cap),
    );
    let mut marker = PhaseMarker::new(nonce);
    let mut build_status = None;
    let started = Instant::now();
    let mut run_started = None;
    let mut deadline = started + Duration::from_millis(limits.compile_wall_time_ms);
    let ending = loop {
        let frame = tokio::select! {
            frame = output.next() => frame,
            () = tokio::time::sleep_until(deadline.into()) => break Some(Ending::TimedOut),
            () = cancel.cancelled() => break Some(Ending::Cancelled),
        };
        match frame {
            None => break None,
            Some(Err(error)) => {
                tracing::warn!(%error, "sandbox output stream broke");
                break None;
            }
            Some(Ok(LogOutput::StdOut { message })) if run_started.is_some() => {
                live.send(LogSource::Stdout, stdout.push(&message));
            }
            Some(Ok(LogOutput::StdOut { message })) => match marker.feed(&message) {
                Scan::Build(bytes) => live.send(LogSource::Compile, build.push(&bytes)),
                Scan::Ended {
                    build: last,
                    status,
                    program,
                } => {
                    live.send(LogSource::Compile, build.push(&last));
                    build_status = Some(status);
                    let now = Instant::now();
                    run_started = Some(now);
                    deadline = now + Duration::from_millis(limits.run_wall_time_ms);
                    live.send(LogSource::Stdout, stdout.push(&program));
                }
            },
            // The wrapper writes nothing to stderr before the program starts, so all of it
            // is the program's, even if it overtakes the marker on the way.
            Some(Ok(LogOutput::StdErr { message })) => {
                live.send(LogSource::Stderr, stderr.push(&message))
            }
            Some(Ok(_)) => {}
        }
        if build.exceeded() || stdout.exceeded() || stderr.exceeded() {
            break Some(Ending::OutputExceeded);
        }
    };
    if run_started.is_none() {
        // No marker came (the unpack failed, the wrapper died, a limit stopped the build):
        // what the marker scan held back in case it started one is build output after all.
        live.send(LogSource::Compile, build.push(&marker.take_held()));
    }
    let ended = Instant::now();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Streamed {
        build,
        stdout,
        stderr,
        build_status,
        ending,
        compile_ms: ms(run_started.unwrap_or(ended) - started),
        run_ms: run_started.map_or(0, |r| ms(ended - r)),
    }
}
