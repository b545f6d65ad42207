//! One attempt of a job in a fresh container.
//!
//! Round trips: create, attach, start (plus the archive upload with `file_transfer = archive`),
//! then everything else goes over the attach: the header, the files and the job's stdin in,
//! stdout and stderr out. Once the wrapper has said all there is (both end markers, a clean
//! run report: `phases::settled`), the verdict is known and the container's exit is not
//! waited for. Otherwise, when the output ends the container has exited, and one inspect
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
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, StartContainerOptions,
    UploadToContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt as _;
use quayside_common::config::{FileTransfer, RunnerConfig};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::cleanup::Sandbox;
use super::events::{KillWatch, Witness};
use super::{api_error, spec};
use crate::runner::sandbox::phases::until;
use crate::runner::sandbox::{self, protocol, Ending, PhasedOutput, Progress, WORK_DIR};
use crate::runner::{Output, RunOutput, RunRequest, RunnerError};

/// How long an exited container may take to show as stopped after its output ended.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long the state of a container whose output ended is asked for again while the engine
/// does not answer (a restart): its verdict is known to the engine, so it is worth waiting for.
const INSPECT_PATIENCE: Duration = Duration::from_secs(60);
/// Seconds past both wall times after which the worker has given up on a sandbox for sure
/// (its outer backstop is 60 s); written on the sandbox for other fleets' sweeps.
pub(super) const DEADLINE_SLACK_S: u64 = 120;

pub(super) type Stream =
    Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>>;
pub(super) type Input = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// A container that is already created, attached and started, running the stub
/// ([`protocol::stub_command`]): a warm pool's, registered under its own name in the attempt's
/// [`Sandbox`] (its removal guard and the kill watch) by whoever handed it.
pub(super) struct Started {
    pub(super) stream: Stream,
    pub(super) input: Input,
    /// The uid and gid it runs as: the archive's owner.
    pub(super) user: (u32, u32),
    /// The event stream's generation when it was registered under the sandbox's name.
    pub(super) generation: u64,
    /// When taking it began: its hand-over is the attempt's sandbox start.
    pub(super) since: Instant,
}

/// Runs one attempt in `warm` or else in a container it creates in `sandbox`. Removes it when
/// it stops it at a limit or on cancel; otherwise (exit, error) the caller does. From the
/// header on, a warm container runs the job exactly like a cold one.
#[allow(
    clippy::too_many_arguments,
    reason = "the attempt's parts; a struct for one call would only rename them"
)]
pub(super) async fn run(
    sandbox: &mut Sandbox,
    cfg: &RunnerConfig,
    req: &RunRequest,
    output: &Output,
    script: String,
    worker_id: &str,
    warm: Option<Started>,
    cancel: &CancellationToken,
) -> Result<RunOutput, RunnerError> {
    let docker = sandbox.docker.clone();
    let nonces = (protocol::new_nonce(), protocol::new_nonce());
    let creating = warm.as_ref().map_or_else(Instant::now, |w| w.since);
    let (stream, stdin, generation) =
        start(sandbox, cfg, req, script, worker_id, warm, &nonces).await?;
    output.sandbox_started();
    let id = sandbox.id.clone().unwrap_or_default();
    let sandbox_start_ms = u64::try_from(creating.elapsed().as_millis()).unwrap_or(u64::MAX);

    let mut phases =
        PhasedOutput::new(&nonces.0, Some(&nonces.1), &req.limits).with_tests(req.tests.clone());
    let ending = match read(stream, &mut phases, &stdin, output, cancel).await {
        Read::Stopped(ending) => {
            sandbox.remove().await;
            ending
        }
        // The caller removes it, as after an exit: its last steps are no one's business.
        Read::Settled(ending) => ending,
        Read::Ended => exited(&docker, &id, &sandbox.kills, generation).await?,
    };
    phases.conclude(&req.job_id, req.kind, ending, Some(sandbox_start_ms))
}

/// The wrapper's stdin once the header, files and the job's stdin are written: open for a
/// checker's answers ([`PhasedOutput::take_answers`]) while the task runs, closed otherwise.
struct Stdin {
    answers: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    _task: AbortOnDropHandle<()>,
}

/// Creates, attaches and starts the container (unless `warm` is one) and starts feeding its
/// stdin. Returns its output, its stdin and the event stream's generation when it was
/// registered.
async fn start(
    sandbox: &mut Sandbox,
    cfg: &RunnerConfig,
    req: &RunRequest,
    script: String,
    worker_id: &str,
    warm: Option<Started>,
    (nonce, end_nonce): &(String, String),
) -> Result<(Stream, Stdin, u64), RunnerError> {
    let job = &req.job_id;
    let docker = sandbox.docker.clone();
    // A uid of its own: per-user kernel limits are not shared with the jobs beside it.
    let user = warm
        .as_ref()
        .map_or_else(|| spec::attempt_user(&cfg.sandbox), |w| w.user);
    let archive = protocol::archive(&req.sandbox_files(), user.0, user.1).map_err(|e| {
        RunnerError::Files {
            detail: format!("cannot archive the files of job {job}"),
            source: Some(Box::new(e)),
        }
    })?;
    let (output, input, generation, header) = match warm {
        Some(w) => {
            let header = protocol::stub_header(&req.args_of_kind(), &script);
            (w.stream, w.input, w.generation, header)
        }
        None => {
            let (output, input, generation) =
                create(sandbox, cfg, req, script, worker_id, user).await?;
            (output, input, generation, Vec::new())
        }
    };
    let id = sandbox.id.clone().unwrap_or_default();
    let mut payload = header;
    payload.extend(match cfg.docker.file_transfer {
        FileTransfer::Stdin => protocol::stdin_payload(nonce, &archive, end_nonce, &req.stdin),
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
            protocol::stdin_payload(nonce, &[], end_nonce, &req.stdin)
        }
    });
    Ok((output, feed(req, input, payload), generation))
}

/// Creates, attaches and starts a container for the attempt, run as `user`, registered in
/// `sandbox` before it exists.
async fn create(
    sandbox: &mut Sandbox,
    cfg: &RunnerConfig,
    req: &RunRequest,
    script: String,
    worker_id: &str,
    user: (u32, u32),
) -> Result<(Stream, Input, u64), RunnerError> {
    let job = &req.job_id;
    let docker = sandbox.docker.clone();
    let l = &req.limits;
    let wall_s = (l.compile_wall_time_ms + l.run_wall_time_ms) / 1000 + DEADLINE_SLACK_S;
    let deadline = sandbox::unix_now_s().saturating_add(i64::try_from(wall_s).unwrap_or(i64::MAX));
    let labels = sandbox::labels(&req.fleet, job, req.attempt, worker_id, deadline);
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
    let AttachContainerResults { output, input } = docker
        .attach_container(&id, Some(attach_all()))
        .await
        .map_err(|e| api_error(format!("cannot attach to the sandbox of job {job}"), e))?;
    docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
        .map_err(|e| api_error(format!("cannot start the sandbox of job {job}"), e))?;
    Ok((output, input, generation))
}

/// An attach to a sandbox's stdin, stdout and stderr, streaming.
pub(super) fn attach_all() -> AttachContainerOptions {
    AttachContainerOptions {
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

/// Writes `payload` to the sandbox's stdin, then a checker's answers while there are any, then
/// closes it. A task of its own: a program that never reads its stdin must not block its
/// output.
fn feed(req: &RunRequest, mut input: Input, payload: Vec<u8>) -> Stdin {
    let checker = req
        .tests
        .as_ref()
        .is_some_and(|plan| plan.checker.is_some());
    let (answers, mut owed) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        // A failed write means the program exited or closed its stdin: nothing to do.
        if input.write_all(&payload).await.is_err() {
            return;
        }
        if checker {
            while let Some(answer) = owed.recv().await {
                if input.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
        let _ = input.shutdown().await;
    }));
    Stdin {
        answers: checker.then_some(answers),
        _task: task,
    }
}

/// How reading a container's output ended.
enum Read {
    /// The output ended: the container exited (or is about to), its state says how.
    Ended,
    /// The wrapper said everything ([`PhasedOutput::settled`]): the verdict is known.
    Settled(Ending),
    /// The worker stops the container: a limit, a cancel, a failed test.
    Stopped(Ending),
}

/// Reads the container's output into `phases` until it ends, the wrapper has settled the
/// verdict, a wall-time limit passes, a stream passes its cap or `cancel` fires.
async fn read(
    mut stream: Stream,
    phases: &mut PhasedOutput,
    stdin: &Stdin,
    output: &Output,
    cancel: &CancellationToken,
) -> Read {
    phases.start();
    let ending = loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = until(phases.deadline()) => break Read::Stopped(Ending::TimedOut),
            () = cancel.cancelled() => break Read::Stopped(Ending::Cancelled),
        };
        let progress = match frame {
            None => break Read::Ended,
            Some(Err(error)) => {
                tracing::warn!(%error, "sandbox output stream broke");
                break Read::Ended;
            }
            Some(Ok(LogOutput::StdOut { message })) => phases.feed(&message, output),
            Some(Ok(LogOutput::StdErr { message })) => phases.feed_stderr(&message, output),
            Some(Ok(_)) => Progress::Nothing,
        };
        if let Some(answers) = &stdin.answers {
            for answer in phases.take_answers() {
                // The task is gone only when the sandbox's stdin is: its output ends too.
                let _ = answers.send(answer);
            }
        }
        match progress {
            Progress::OutputExceeded => break Read::Stopped(Ending::OutputExceeded),
            Progress::StopTests => break Read::Stopped(Ending::Stopped),
            Progress::Nothing | Progress::BuildEnded => {}
        }
        if let Some(ending) = phases.settled() {
            break Read::Settled(ending);
        }
    };
    phases.flush(output);
    ending
}

/// How the container ended, from its state once it has stopped: exit code and OOM kill. The
/// state is asked for again while the engine does not answer (the program's verdict is in it);
/// a container that is gone, or that died of a signal the engine was asked to send (or while
/// its events were not followed), was stopped from outside.
async fn exited(
    docker: &Docker,
    id: &str,
    kills: &KillWatch,
    generation: u64,
) -> Result<Ending, RunnerError> {
    let mut state = inspect(docker, id).await?.state.unwrap_or_default();
    if state.running == Some(true) {
        // The output can end a moment before the engine records the exit.
        let until = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut wait = docker.wait_container(id, Some(until));
        // A non-zero exit arrives as an error here; the inspect below reads it either way.
        if tokio::time::timeout(EXIT_GRACE, wait.next()).await.is_err() {
            return Err(RunnerError::OutputLost {
                detail: "lost the output of a sandbox that is still running".into(),
                source: None,
            });
        }
        state = inspect(docker, id).await?.state.unwrap_or_default();
    }
    let code = state.exit_code.unwrap_or(-1);
    let oom_killed = state.oom_killed.unwrap_or(false);
    if !oom_killed && sandbox::signal_of(code).is_some() {
        match kills.witness(id, generation, EXIT_GRACE).await {
            Witness::Clean => {}
            Witness::Killed { signal } => {
                return Err(RunnerError::Interrupted {
                    detail: format!("the engine killed container {id} (signal {signal})"),
                })
            }
            Witness::Unknown => {
                return Err(RunnerError::Interrupted {
                    detail: format!(
                    "container {id} died of a signal while the engine's events were not followed"
                ),
                })
            }
        }
    }
    Ok(Ending::Exited { code, oom_killed })
}

/// Inspects a container, asking again while the engine does not answer, for up to
/// [`INSPECT_PATIENCE`]. A container that is gone was removed from outside.
async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<bollard::models::ContainerInspectResponse, RunnerError> {
    let give_up = Instant::now() + INSPECT_PATIENCE;
    let mut delay = Duration::from_millis(100);
    loop {
        match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => return Ok(inspected),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(RunnerError::Interrupted {
                    detail: format!("container {id} was removed while it ran"),
                })
            }
            Err(e) => {
                let error = api_error("cannot inspect the sandbox", e);
                if !matches!(error, RunnerError::Unavailable { .. }) || Instant::now() >= give_up {
                    return Err(error);
                }
                tracing::debug!(container = %id, %error, "engine not answering; asking again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
