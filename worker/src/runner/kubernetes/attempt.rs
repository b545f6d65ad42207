//! One attempt, once its ConfigMap and Job exist: follow the pod through a watch (no polling),
//! read its log through the shared [`PhasedOutput`], stop it at a wall-time limit, an output
//! cap or a cancel, and tell how it ended. A pod deleted or evicted before its container ended was stopped from outside: an
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::api_error;
use super::pod::{observe, PodState};
use super::spec::{Objects, CONTAINER, LABEL_SANDBOX};
use crate::runner::sandbox::phases::until;
use crate::runner::sandbox::{Ending, PhasedOutput, Progress};
use crate::runner::{Output, RunRequest, RunnerError};

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
                    let lost = RunnerError::OutputLost {
                        detail: "job pod log broke off".into(),
                        source: Some(Box::new(e)),
                    };
                    let _ = tx.send(Err(lost)).await;
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

/// Follows the attempt's pod until it ended and its log is read, or a limit stopped it.
///
/// # Errors
/// The API failed, the pod never started within `pending_timeout`, or it went away.
pub async fn follow(
    pods: Api<Pod>,
    objects: &Objects,
    req: &RunRequest,
    pending_timeout: Duration,
    output: &Output,
    cancel: &CancellationToken,
) -> Result<(PhasedOutput, Ending), RunnerError> {
    let limits = &req.limits;
    let mut phases = PhasedOutput::new(&objects.nonce, Some(&objects.end_nonce), limits)
        .with_tests(req.tests.clone());
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
    let mut log: Option<(mpsc::Receiver<LogChunk>, AbortOnDropHandle<()>)> = None;
    let mut log_done = false;
    let mut ended: Option<(i64, bool)> = None;
    // Room for all three capped streams, both markers (the end one with its run report), and
    // one byte over a cap.
    // A job with tests: each test's two streams (up to its cap and a byte) and its frames.
    let tests: u64 = req
        .tests
        .iter()
        .flat_map(|plan| &plan.tests)
        .map(|t| t.limits.output_bytes.saturating_add(1).saturating_mul(2) + 1024)
        .fold(0, u64::saturating_add);
    let log_limit = i64::try_from(
        limits
            .output_bytes
            .saturating_mul(3)
            .saturating_add(1024)
            .saturating_add(tests),
    )
    .unwrap_or(i64::MAX);
    let stopped = loop {
        if let (Some((code, oom_killed)), true) = (ended, log_done) {
            break Ending::Exited { code, oom_killed };
        }
        tokio::select! {
            event = watch.next() => {
                let pod = match event {
                    None => return Err(pod_failed("job pod watch ended", None)),
                    Some(Err(e)) => {
                        watch_errors += 1;
                        if watch_errors >= WATCH_ERRORS_IN_A_ROW {
                            return Err(pod_failed("cannot watch the job pod", Some(Box::new(e))));
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
                    phases.start();
                }
                match state {
                    PodState::Terminated { code, oom_killed } => ended = Some((code, oom_killed)),
                    PodState::DeadlineExceeded => break Ending::TimedOut,
                    PodState::Failed { reason } => {
                        return Err(interrupted(&format!("the job pod failed: {reason}")));
                    }
                    PodState::SeccompMissing { message } => {
                        return Err(pod_failed(format!(
                            "job pod cannot start, its seccomp profile is not on the node ({message}): \
                             install deploy/seccomp/quayside.json as deploy/k8s/README.md says, or set \
                             runner.sandbox.seccomp = \"runtime_default\""
                        ), None));
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
                Some(Ok(bytes)) => match phases.feed(&bytes, output) {
                    Progress::OutputExceeded => break Ending::OutputExceeded,
                    // The Job is deleted on the way out, as after any limit.
                    Progress::StopTests => break Ending::Stopped,
                    Progress::Nothing | Progress::BuildEnded => {}
                },
            },
            () = until(phases.deadline()), if ended.is_none() => break Ending::TimedOut,
            () = cancel.cancelled() => break Ending::Cancelled,
            () = until(pending_deadline) => {
                return Err(match last_pending {
                    PodState::ImageError { reason, .. } => RunnerError::ImageMissing { image: format!("{} ({reason})", objects_image(objects)) },
                    PodState::Pending { unschedulable: true } => pod_failed("job pod is unschedulable", None),
                    _ => pod_failed("job pod did not start in time", None),
                });
            }
        }
    };
    phases.flush(output);
    Ok((phases, stopped))
}

fn pod_failed(detail: impl Into<String>, source: Option<crate::runner::BoxError>) -> RunnerError {
    RunnerError::Pod {
        detail: detail.into(),
        source,
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
