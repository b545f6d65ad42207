//! One attempt: create the ConfigMap and the Job, follow the pod through a watch (no polling),
//! stream and cap its log, stop it at a wall-time limit, an output cap or a cancel, and tell how
//! it ended. A pod deleted or evicted before its container ended was stopped from outside: an
//! infrastructure failure, whatever exit status the kill left. Removal is the caller's, on
//! every path.

use std::pin::pin;
use std::time::Duration;

use futures_util::{AsyncBufRead, AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::output::{Parsed, Progress};
use super::spec::{Objects, CONTAINER, LABEL_SANDBOX};
use super::{api_error, failed, infra};
use crate::runner::sandbox::{Ending, LiveLog};
use crate::runner::{RunRequest, RunnerError};

/// What the pod's status says, for the container that runs the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not running yet; `unschedulable` when the scheduler found no node for it.
    Pending {
        unschedulable: bool,
    },
    /// The kubelet cannot get the image; `fatal` when waiting cannot help.
    ImageError {
        reason: String,
        fatal: bool,
    },
    Running,
    Terminated {
        code: i64,
        oom_killed: bool,
    },
    /// The pod's `activeDeadlineSeconds` passed.
    DeadlineExceeded,
    /// The pod failed for a reason of the node's (eviction, node shutdown).
    Failed {
        reason: String,
    },
    /// The runtime cannot create the container because the node lacks its seccomp profile.
    SeccompMissing {
        message: String,
    },
    /// Someone deleted the pod (or its Job) while its container had not ended.
    Deleting,
}

/// Reads the state that matters from a pod.
pub fn observe(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else {
        return PodState::Pending {
            unschedulable: false,
        };
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let reason = status.reason.clone().unwrap_or_default();
    if phase == "Failed" && reason == "DeadlineExceeded" {
        return PodState::DeadlineExceeded;
    }
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if let Some(state) = container.and_then(|c| c.state.as_ref()) {
        if state.terminated.is_some() && deleting {
            // The kill that deletion sends is no exit of the program's.
            return PodState::Deleting;
        }
        if let Some(t) = &state.terminated {
            return PodState::Terminated {
                code: i64::from(t.exit_code),
                oom_killed: t.reason.as_deref() == Some("OOMKilled"),
            };
        }
        if state.running.is_some() {
            return PodState::Running;
        }
        let waiting = state.waiting.as_ref();
        let message = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
        if let Some(reason) = waiting.and_then(|w| w.reason.clone()) {
            let cannot_create = matches!(
                reason.as_str(),
                "CreateContainerError" | "CreateContainerConfigError"
            );
            if cannot_create && message.contains("seccomp") {
                return PodState::SeccompMissing { message };
            }
            let fatal = matches!(reason.as_str(), "InvalidImageName" | "ErrImageNeverPull");
            if fatal || matches!(reason.as_str(), "ErrImagePull" | "ImagePullBackOff") {
                return PodState::ImageError { reason, fatal };
            }
        }
    }
    if deleting {
        return PodState::Deleting;
    }
    if phase == "Failed" {
        return PodState::Failed {
            reason: if reason.is_empty() {
                "Failed".into()
            } else {
                reason
            },
        };
    }
    let unschedulable = status.conditions.iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    PodState::Pending { unschedulable }
}

/// Watch errors in a row after which the attempt is given back as an infrastructure error.
const WATCH_ERRORS_IN_A_ROW: u32 = 3;

type LogChunk = Result<Vec<u8>, RunnerError>;

/// Follows the container's log from a task of its own; `None` from the channel = log ended.
fn spawn_log(
    api: Api<Pod>,
    pod: String,
    limit_bytes: i64,
) -> (mpsc::Receiver<LogChunk>, AbortOnDropHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        let params = LogParams {
            container: Some(CONTAINER.into()),
            follow: true,
            limit_bytes: Some(limit_bytes),
            ..Default::default()
        };
        let reader = match api.log_stream(&pod, &params).await {
            Ok(reader) => reader,
            Err(e) => {
                let _ = tx
                    .send(Err(api_error("cannot read the job pod's log", e)))
                    .await;
                return;
            }
        };
        let mut reader = pin!(reader);
        loop {
            let chunk = match reader.as_mut().fill_buf().await {
                Ok([]) => return,
                Ok(buf) => buf.to_vec(),
                Err(e) => {
                    let _ = tx.send(Err(failed("job pod log broke off", true, e))).await;
                    return;
                }
            };
            reader.as_mut().consume(chunk.len());
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    (rx, AbortOnDropHandle::new(task))
}

/// Waits for a deadline that may not be set yet.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Follows the attempt's pod until it ended and its log is read, or a limit stopped it.
///
/// # Errors
/// The API failed, the pod never started within `pending_timeout`, or it went away.
pub async fn follow(
    pods: Api<Pod>,
    objects: &Objects,
    req: &RunRequest,
    pending_timeout: Duration,
    live: &mut LiveLog,
    cancel: &CancellationToken,
) -> Result<(Parsed, Ending), RunnerError> {
    let limits = &req.limits;
    let mut parsed = Parsed::new(&objects.nonce, &objects.end_nonce, limits.output_bytes);
    let selector = format!("{LABEL_SANDBOX}={}", objects.name);
    // Backoff between re-lists: a watch that breaks (API server restart, 410 Gone) resumes
    // instead of failing the attempt; only errors in a row give up.
    let mut watch_errors = 0;
    let mut watch = pin!(watcher::watcher(
        pods.clone(),
        watcher::Config::default().labels(&selector)
    )
    .default_backoff());
    let mut pending_deadline = Some(Instant::now() + pending_timeout);
    let mut last_pending = PodState::Pending {
        unschedulable: false,
    };
    let mut run_deadline: Option<Instant> = None;
    let mut log: Option<(mpsc::Receiver<LogChunk>, AbortOnDropHandle<()>)> = None;
    let mut log_done = false;
    let mut ended: Option<(i64, bool)> = None;
    // The build's and the run's wall time, measured like the Docker runner's: from the log.
    let mut started_at: Option<Instant> = None;
    let mut build_ended_at: Option<Instant> = None;
    // Room for all three capped streams, both markers, and one byte over a cap.
    let log_limit = i64::try_from(limits.output_bytes.saturating_mul(3).saturating_add(256))
        .unwrap_or(i64::MAX);
    loop {
        let ms = |from: Option<Instant>, to: Option<Instant>| {
            from.map_or(0, |f| {
                u64::try_from(
                    to.unwrap_or_else(Instant::now)
                        .saturating_duration_since(f)
                        .as_millis(),
                )
                .unwrap_or(u64::MAX)
            })
        };
        parsed.compile_ms = ms(started_at, build_ended_at);
        parsed.run_ms = ms(build_ended_at, None);
        if let (Some((code, oom_killed)), true) = (ended, log_done) {
            parsed.flush(live);
            return Ok((parsed, Ending::Exited { code, oom_killed }));
        }
        tokio::select! {
            event = watch.next() => {
                let pod = match event {
                    None => return Err(infra("job pod watch ended")),
                    Some(Err(e)) => {
                        watch_errors += 1;
                        if watch_errors >= WATCH_ERRORS_IN_A_ROW {
                            return Err(failed("cannot watch the job pod", true, e));
                        }
                        tracing::warn!(error = %e, "job pod watch failed; resuming");
                        continue;
                    }
                    Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                        watch_errors = 0;
                        pod
                    }
                    Some(Ok(Event::Delete(_))) if ended.is_none() => {
                        return Err(interrupted("the job pod was deleted before it ended"));
                    }
                    Some(Ok(_)) => continue,
                };
                let state = observe(&pod);
                let started = matches!(state, PodState::Running | PodState::Terminated { .. });
                if started && log.is_none() && !log_done {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    log = Some(spawn_log(pods.clone(), name, log_limit));
                    pending_deadline = None;
                    started_at = Some(Instant::now());
                    run_deadline = Some(Instant::now() + Duration::from_millis(limits.compile_wall_time_ms));
                }
                match state {
                    PodState::Terminated { code, oom_killed } => ended = Some((code, oom_killed)),
                    PodState::DeadlineExceeded => return Ok((parsed, Ending::TimedOut)),
                    PodState::Failed { reason } => {
                        return Err(interrupted(&format!("the job pod failed: {reason}")));
                    }
                    PodState::SeccompMissing { message } => {
                        return Err(infra(format!(
                            "job pod cannot start, its seccomp profile is not on the node ({message}): \
                             install deploy/seccomp/quayside.json as deploy/k8s/README.md says, or set \
                             runner.sandbox.seccomp = \"runtime_default\""
                        )));
                    }
                    PodState::Deleting if ended.is_none() => {
                        return Err(interrupted("the job pod was deleted while it ran"));
                    }
                    PodState::Deleting => {}
                    PodState::ImageError { reason, fatal: true } => {
                        return Err(RunnerError::ImageMissing { image: format!("{} ({reason})", image(&pod)) });
                    }
                    other @ (PodState::ImageError { .. } | PodState::Pending { .. }) => last_pending = other,
                    PodState::Running => {}
                }
            }
            chunk = recv(&mut log), if log.is_some() => match chunk {
                None => {
                    log = None;
                    log_done = true;
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(bytes)) => match parsed.feed(&bytes, live) {
                    Progress::OutputExceeded => return Ok((parsed, Ending::OutputExceeded)),
                    Progress::BuildEnded => {
                        build_ended_at = Some(Instant::now());
                        run_deadline = Some(Instant::now() + Duration::from_millis(limits.run_wall_time_ms));
                    }
                    Progress::Nothing => {}
                },
            },
            () = until(run_deadline), if ended.is_none() => {
                parsed.flush(live);
                return Ok((parsed, Ending::TimedOut));
            }
            () = cancel.cancelled() => {
                parsed.flush(live);
                return Ok((parsed, Ending::Cancelled));
            }
            () = until(pending_deadline) => {
                return Err(match last_pending {
                    PodState::ImageError { reason, .. } => RunnerError::ImageMissing { image: format!("{} ({reason})", objects_image(objects)) },
                    PodState::Pending { unschedulable: true } => infra("job pod is unschedulable"),
                    _ => infra("job pod did not start in time"),
                });
            }
        }
    }
}

fn interrupted(detail: &str) -> RunnerError {
    RunnerError::Interrupted {
        detail: detail.to_owned(),
    }
}

fn image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn objects_image(objects: &Objects) -> String {
    objects
        .job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The next log chunk, once a log is being followed.
async fn recv(
    log: &mut Option<(mpsc::Receiver<LogChunk>, AbortOnDropHandle<()>)>,
) -> Option<LogChunk> {
    match log {
        Some((rx, _)) => rx.recv().await,
        None => std::future::pending().await,
    }
}
