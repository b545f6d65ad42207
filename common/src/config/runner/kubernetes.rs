//! Settings of the Kubernetes backend (`runner.kubernetes.*`): where job pods go and how they
//! are hardened. Limits come from the job, as for Docker; this is only the cluster side.

use serde::{Deserialize, Serialize};

use super::SeccompProfile;
use crate::config::check::invalid;
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
    /// `uid:gid` (numeric) that job processes run as; never root.
    pub user: String,
    /// Job processes run as `user`'s uid plus a random offset below this (1 = exactly `user`).
    /// `RLIMIT_NPROC`, the pids bound the wrapper sets, counts every process of a uid on the
    /// node, so distinct uids keep one pod's bound from counting another pod's processes.
    pub uid_range: u32,
    /// The seccomp profile of job pods: `quayside` (a `Localhost` profile the nodes must have,
    /// see `deploy/k8s/README.md`) or `runtime_default` (`RuntimeDefault`, the fallback where it
    /// cannot be installed).
    pub seccomp: SeccompProfile,
    /// Where the `quayside` profile sits on each node, relative to the kubelet's seccomp folder
    /// (`/var/lib/kubelet/seccomp`).
    pub seccomp_localhost_profile: String,
    /// Size limit of each memory-backed `emptyDir`, `/work` and `/tmp`; counts toward the job's
    /// memory limit.
    pub work_dir_bytes: u64,
    /// Largest file a job process may write (`ulimit -f`, set by the wrapper).
    pub max_file_bytes: u64,
    /// Files a job process may hold open at once (`ulimit -n`, set by the wrapper).
    pub max_open_files: u64,
    /// How long a job pod may stay unschedulable, or wait for its image, before the attempt
    /// is given back to the queue as an infrastructure error.
    pub pending_timeout_ms: u64,
    /// Longest one API request may take (the job's own time is bounded by its limits).
    pub api_timeout_ms: u64,
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
            user: "10001:10001".into(),
            uid_range: 1 << 20,
            seccomp: SeccompProfile::Quayside,
            seccomp_localhost_profile: "quayside.json".into(),
            work_dir_bytes: 64 << 20,
            max_file_bytes: 64 << 20,
            max_open_files: 1024,
            pending_timeout_ms: 60_000,
            api_timeout_ms: 30_000,
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
    /// The numeric uid and gid of [`KubernetesConfig::user`], if it has that form.
    pub fn uid_gid(&self) -> Option<(i64, i64)> {
        let (uid, gid) = self.user.split_once(':')?;
        Some((uid.parse().ok()?, gid.parse().ok()?))
    }

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
        match self.uid_gid() {
            None => {
                return Err(invalid(
                    "runner.kubernetes.user",
                    "must be numeric uid:gid, e.g. 10001:10001",
                ))
            }
            Some((uid, gid)) if uid <= 0 || gid <= 0 => {
                return Err(invalid(
                    "runner.kubernetes.user",
                    "job processes must not run as root",
                ))
            }
            Some(_) => {}
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
        if self.work_dir_bytes < 1 << 20 {
            return Err(invalid(
                "runner.kubernetes.work_dir_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.max_file_bytes == 0 {
            return Err(invalid(
                "runner.kubernetes.max_file_bytes",
                "must be greater than 0",
            ));
        }
        if self.max_open_files < 16 {
            return Err(invalid(
                "runner.kubernetes.max_open_files",
                "must be at least 16",
            ));
        }
        for (key, v) in [
            (
                "runner.kubernetes.pending_timeout_ms",
                self.pending_timeout_ms,
            ),
            ("runner.kubernetes.api_timeout_ms", self.api_timeout_ms),
        ] {
            if v < 1_000 {
                return Err(invalid(key, "must be at least 1000"));
            }
        }
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

    fn key_of(cfg: KubernetesConfig) -> &'static str {
        match cfg.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        KubernetesConfig::default()
            .validate()
            .expect("defaults valid");
        let with = |f: fn(&mut KubernetesConfig)| {
            let mut c = KubernetesConfig::default();
            f(&mut c);
            key_of(c)
        };
        assert_eq!(
            with(|c| c.namespace = "Jobs".into()),
            "runner.kubernetes.namespace"
        );
        assert_eq!(with(|c| c.user = "0:0".into()), "runner.kubernetes.user");
        assert_eq!(with(|c| c.user = "me".into()), "runner.kubernetes.user");
        assert_eq!(
            with(|c| c.image_pull_policy = "Sometimes".into()),
            "runner.kubernetes.image_pull_policy"
        );
        assert_eq!(
            with(|c| c.image_pull_secrets = vec!["Bad_Name".into()]),
            "runner.kubernetes.image_pull_secrets"
        );
        assert_eq!(
            with(|c| c.seccomp_localhost_profile = "../etc/x.json".into()),
            "runner.kubernetes.seccomp_localhost_profile"
        );
        assert_eq!(
            with(|c| c.work_dir_bytes = 1),
            "runner.kubernetes.work_dir_bytes"
        );
        assert_eq!(
            with(|c| c.pending_timeout_ms = 10),
            "runner.kubernetes.pending_timeout_ms"
        );
        let mut ok = KubernetesConfig {
            namespace: "quayside-jobs".into(),
            image_pull_secrets: vec!["regcred.example".into()],
            ..Default::default()
        };
        ok.runtime_class = "gvisor".into();
        ok.validate().expect("valid");
    }
}
