//! Settings of the Kubernetes backend (`runner.kubernetes.*`): where job pods go, how runner
//! images reach the nodes, and how long a pod may wait. Limits come from the job, and what
//! every sandbox gets (user, file limits, seccomp) from `runner.sandbox`; this is only the
//! cluster side.

use serde::{Deserialize, Serialize};

use crate::config::check::{at_least, invalid};
use crate::config::ConfigError;

/// The Kubernetes sandbox: one `batch/v1` Job and one ConfigMap per job attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Namespace job pods run in; empty = the worker's own (in a cluster) or the kubeconfig's.
    pub namespace: String,
    /// Service account of job pods. Its token is never mounted; it exists so job pods get no
    /// permissions another account was given by mistake.
    pub service_account: String,
    /// Prefix put before every language image, e.g. `registry.example.com/`; empty = as is.
    pub image_registry: String,
    /// Names of `kubernetes.io/dockerconfigjson` Secrets the kubelet uses to pull runner images.
    pub image_pull_secrets: Vec<String>,
    /// `imagePullPolicy` of job containers: `IfNotPresent` (default), `Always` or `Never`.
    pub image_pull_policy: String,
    /// `RuntimeClass` of job pods, e.g. `gvisor`; empty = the cluster default.
    pub runtime_class: String,
    /// Where the `quayside` profile (`runner.sandbox.seccomp`) sits on each node, relative to
    /// the kubelet's seccomp folder (`/var/lib/kubelet/seccomp`).
    pub seccomp_localhost_profile: String,
    /// How long a job pod may stay unschedulable, or wait for its image, before the attempt
    /// is given back to the queue as an infrastructure error.
    pub pending_timeout_ms: u64,
    /// `ttlSecondsAfterFinished` of each Job: the cluster's own cleanup if the worker could not
    /// delete it.
    pub ttl_seconds_after_finished: i32,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            service_account: "default".into(),
            image_registry: String::new(),
            image_pull_secrets: Vec::new(),
            image_pull_policy: "IfNotPresent".into(),
            runtime_class: String::new(),
            seccomp_localhost_profile: "quayside.json".into(),
            pending_timeout_ms: 60_000,
            ttl_seconds_after_finished: 300,
        }
    }
}

/// An RFC 1123 label: what namespaces, service accounts and Secret names must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain (Secret names may contain dots).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

impl KubernetesConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.namespace.is_empty() && !is_dns_label(&self.namespace) {
            return Err(invalid(
                "runner.kubernetes.namespace",
                "must be empty or a DNS label (lowercase letters, digits, '-')",
            ));
        }
        if !is_dns_subdomain(&self.service_account) {
            return Err(invalid(
                "runner.kubernetes.service_account",
                "must be a DNS subdomain name",
            ));
        }
        if self.image_pull_secrets.iter().any(|s| !is_dns_subdomain(s)) {
            return Err(invalid(
                "runner.kubernetes.image_pull_secrets",
                "each must be a DNS subdomain name",
            ));
        }
        if !matches!(
            self.image_pull_policy.as_str(),
            "IfNotPresent" | "Always" | "Never"
        ) {
            return Err(invalid(
                "runner.kubernetes.image_pull_policy",
                "must be IfNotPresent, Always or Never",
            ));
        }
        if !self.runtime_class.is_empty() && !is_dns_subdomain(&self.runtime_class) {
            return Err(invalid(
                "runner.kubernetes.runtime_class",
                "must be empty or a DNS subdomain name",
            ));
        }
        let profile = &self.seccomp_localhost_profile;
        if profile.is_empty()
            || profile.starts_with('/')
            || profile
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(invalid(
                "runner.kubernetes.seccomp_localhost_profile",
                "must be a relative path below the kubelet's seccomp folder, e.g. quayside.json",
            ));
        }
        at_least(
            "runner.kubernetes.pending_timeout_ms",
            self.pending_timeout_ms,
            1_000,
        )?;
        if self.ttl_seconds_after_finished < 0 {
            return Err(invalid(
                "runner.kubernetes.ttl_seconds_after_finished",
                "must not be negative",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::assert_refusals;

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        KubernetesConfig::default()
            .validate()
            .expect("defaults valid");
        assert_refusals(
            KubernetesConfig::validate,
            &[
                (
                    |c| c.namespace = "Jobs".into(),
                    "runner.kubernetes.namespace",
                ),
                (
                    |c| c.service_account = String::new(),
                    "runner.kubernetes.service_account",
                ),
                (
                    |c| c.image_pull_policy = "Sometimes".into(),
                    "runner.kubernetes.image_pull_policy",
                ),
                (
                    |c| c.image_pull_secrets = vec!["Bad_Name".into()],
                    "runner.kubernetes.image_pull_secrets",
                ),
                (
                    |c| c.runtime_class = "g visor".into(),
                    "runner.kubernetes.runtime_class",
                ),
                (
                    |c| c.seccomp_localhost_profile = "../etc/x.json".into(),
                    "runner.kubernetes.seccomp_localhost_profile",
                ),
                (
                    |c| c.pending_timeout_ms = 10,
                    "runner.kubernetes.pending_timeout_ms",
                ),
                (
                    |c| c.ttl_seconds_after_finished = -1,
                    "runner.kubernetes.ttl_seconds_after_finished",
                ),
            ],
        );
        let ok = KubernetesConfig {
            namespace: "quayside-jobs".into(),
            image_pull_secrets: vec!["regcred.example".into()],
            runtime_class: "gvisor".into(),
            ..Default::default()
        };
        ok.validate().expect("valid");
    }
}
