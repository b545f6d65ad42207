//! What a job pod's status says, for the container that runs the job: the one reading of pod
//! status the attempt acts on.

use k8s_openapi::api::core::v1::Pod;

use super::spec::CONTAINER;

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
