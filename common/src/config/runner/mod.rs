//! Where and how jobs run (`runner.*`): which backend, what every sandbox gets, and each
//! backend's own settings.
//!
//! - `sandbox`: `runner.sandbox.*`, shared by both backends: user, file limits, seccomp, the
//!   writable places' size, the API timeout.
//! - `docker`: `runner.docker.*`, the engine, its OCI runtime, how files reach `/work`.
//! - `kubernetes`: `runner.kubernetes.*`, where job pods go and how images reach the nodes.
//! - `former_keys`: the sandbox keys each backend once had, still read as `runner.sandbox`'s.

use serde::{Deserialize, Serialize};

use super::ConfigError;

mod docker;
mod former_keys;
mod kubernetes;
mod sandbox;

pub use docker::{DockerConfig, FileTransfer, WarmConfig};
pub(super) use former_keys::FormerKeys;
pub use kubernetes::KubernetesConfig;
pub use sandbox::{JobUser, SandboxConfig};

/// Which sandbox backend runs jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerBackend {
    Docker,
    Kubernetes,
    /// Kubernetes inside a cluster (`KUBERNETES_SERVICE_HOST` set), Docker otherwise.
    #[default]
    Auto,
}

impl RunnerBackend {
    /// The backend to build: `Auto` becomes Kubernetes when `in_cluster` (the worker runs in
    /// a pod: `KUBERNETES_SERVICE_HOST` is set), Docker otherwise.
    pub fn resolve(self, in_cluster: bool) -> RunnerBackend {
        match self {
            RunnerBackend::Auto if in_cluster => RunnerBackend::Kubernetes,
            RunnerBackend::Auto => RunnerBackend::Docker,
            other => other,
        }
    }
}

/// The seccomp profile job sandboxes run under. gVisor (`runsc`) ignores both: its own kernel
/// is the filter there (see `docs/security.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompProfile {
    /// Quayside's own profile, `deploy/seccomp/quayside.json`: the engine's default without
    /// what a compile or run job never needs (ptrace, io_uring, vsock and other non-inet
    /// socket families, ...). Docker gets it through the Engine API; Kubernetes nodes must
    /// have it installed as a `Localhost` profile (`deploy/k8s/README.md`).
    #[default]
    Quayside,
    /// The container runtime's default profile (Docker's, or the kubelet's `RuntimeDefault`):
    /// the fallback where Quayside's profile cannot be installed.
    RuntimeDefault,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// Which sandbox backend runs jobs.
    pub backend: RunnerBackend,
    /// What every sandbox gets, whichever backend runs it.
    pub sandbox: SandboxConfig,
    /// Settings of the Docker backend.
    pub docker: DockerConfig,
    /// Settings of the Kubernetes backend.
    pub kubernetes: KubernetesConfig,
}

impl RunnerConfig {
    /// Checks the shared settings and both backends', whichever runs: a worker moved to the
    /// other backend must not find its config refused only then.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.sandbox.validate()?;
        self.kubernetes.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_kubernetes_only_in_a_cluster() {
        use RunnerBackend::*;
        assert_eq!(Auto.resolve(true), Kubernetes);
        assert_eq!(Auto.resolve(false), Docker);
        assert_eq!(
            Kubernetes.resolve(false),
            Kubernetes,
            "kubeconfig from outside"
        );
        assert_eq!(Docker.resolve(true), Docker);
    }
}
