//! What every job sandbox gets, whichever backend runs it (`runner.sandbox.*`): the user its
//! processes run as, its seccomp profile, the size of its writable places, its file limits,
//! and how long one call to the backend's API may take. Set once, checked once, read by both
//! runners.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SeccompProfile;
use crate::config::check::{at_least, invalid, positive};
use crate::config::ConfigError;

/// Highest uid an attempt may get: clear of `(uid_t)-1`, which system calls read as "no
/// change", and of the overflow uid some interfaces report for unmapped ids.
const MAX_UID: u32 = u32::MAX - 2;

/// The numeric user and group job processes run as, written `uid:gid` (`10001:10001`). Names
/// are not taken: the runner images need not know the user, and `0` must be seen to be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
}

impl fmt::Display for JobUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl FromStr for JobUser {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "must be numeric uid:gid, e.g. 10001:10001";
        let (uid, gid) = s.split_once(':').ok_or(FORM)?;
        Ok(Self {
            uid: uid.parse().map_err(|_| FORM)?,
            gid: gid.parse().map_err(|_| FORM)?,
        })
    }
}

impl Serialize for JobUser {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The sandbox settings both backends share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Base `uid:gid` (numeric) of job processes; never root.
    pub user: JobUser,
    /// Each attempt runs as `user`'s uid plus a random offset below this (1 = exactly `user`),
    /// so per-user kernel limits (inotify instances, pipe buffers, queued signals,
    /// `RLIMIT_NPROC`, which bounds a job's processes where no pids cgroup does) are not shared
    /// with the jobs running beside it.
    pub uid_range: u32,
    /// The seccomp profile of job sandboxes: `quayside` (ours, `deploy/seccomp/quayside.json`;
    /// on Kubernetes a `Localhost` profile the nodes must have, see `deploy/k8s/README.md`) or
    /// `runtime_default` (the container runtime's default profile).
    pub seccomp: SeccompProfile,
    /// Size of each of the two writable places, `/work` and `/tmp` (Docker: tmpfs mounts;
    /// Kubernetes: memory-backed `emptyDir`s, counted in the job's memory); nothing else is
    /// writable.
    pub work_dir_bytes: u64,
    /// Largest file a job process may write (`RLIMIT_FSIZE`).
    pub max_file_bytes: u64,
    /// Files a job process may hold open at once (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
    /// Longest one call to the Docker Engine API may take, or one Kubernetes API request may
    /// take to connect and send (watches and log streams stay open: the job's own time is
    /// bounded by its limits).
    pub api_timeout_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            user: JobUser {
                uid: 10001,
                gid: 10001,
            },
            uid_range: 1 << 20,
            seccomp: SeccompProfile::Quayside,
            work_dir_bytes: 64 << 20,
            max_file_bytes: 64 << 20,
            max_open_files: 1024,
            api_timeout_ms: 30_000,
        }
    }
}

impl SandboxConfig {
    /// The user of one attempt: `user` with its uid moved up by `offset` (a random number)
    /// modulo `uid_range`; validation keeps the sum a valid uid.
    pub fn attempt_user(&self, offset: u32) -> JobUser {
        JobUser {
            uid: self.user.uid.saturating_add(offset % self.uid_range.max(1)),
            gid: self.user.gid,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let JobUser { uid, gid } = self.user;
        if uid == 0 || gid == 0 {
            return Err(invalid(
                "runner.sandbox.user",
                "job processes must not run as root",
            ));
        }
        if self.uid_range == 0
            || uid
                .checked_add(self.uid_range)
                .is_none_or(|top| top > MAX_UID)
        {
            return Err(invalid(
                "runner.sandbox.uid_range",
                format!("must be at least 1, and user's uid plus it at most {MAX_UID}"),
            ));
        }
        if self.work_dir_bytes < 1 << 20 {
            return Err(invalid(
                "runner.sandbox.work_dir_bytes",
                "must be at least 1 MiB",
            ));
        }
        positive("runner.sandbox.max_file_bytes", self.max_file_bytes)?;
        at_least("runner.sandbox.max_open_files", self.max_open_files, 16)?;
        at_least("runner.sandbox.api_timeout_ms", self.api_timeout_ms, 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::assert_refusals;

    #[test]
    fn users_are_numeric_pairs_written_as_they_are_read() {
        let u: JobUser = "20000:30000".parse().expect("numeric");
        assert_eq!((u.uid, u.gid), (20000, 30000));
        assert_eq!(u.to_string(), "20000:30000");
        for bad in ["runner", "1000", "-1:5", "a:b", "1:2:3", ""] {
            assert!(bad.parse::<JobUser>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_attempt_gets_a_uid_within_the_range_and_the_same_group() {
        let cfg = SandboxConfig::default();
        assert_eq!(cfg.attempt_user(0), cfg.user);
        let top = cfg.attempt_user(u32::MAX);
        assert_eq!(top.gid, 10001);
        assert!(top.uid > 10001 && top.uid < 10001 + (1 << 20), "{top}");
        let fixed = SandboxConfig {
            uid_range: 1,
            ..SandboxConfig::default()
        };
        assert_eq!(fixed.attempt_user(12345), fixed.user, "1 = exactly user");
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        SandboxConfig::default().validate().expect("defaults");
        assert_refusals(
            SandboxConfig::validate,
            &[
                (|s| s.user.uid = 0, "runner.sandbox.user"),
                (|s| s.user.gid = 0, "runner.sandbox.user"),
                (|s| s.uid_range = 0, "runner.sandbox.uid_range"),
                (
                    |s| s.uid_range = u32::MAX - 10001,
                    "runner.sandbox.uid_range",
                ),
                (|s| s.work_dir_bytes = 1, "runner.sandbox.work_dir_bytes"),
                (|s| s.max_file_bytes = 0, "runner.sandbox.max_file_bytes"),
                (|s| s.max_open_files = 3, "runner.sandbox.max_open_files"),
                (|s| s.api_timeout_ms = 10, "runner.sandbox.api_timeout_ms"),
            ],
        );
        let top = SandboxConfig {
            uid_range: MAX_UID - 10001,
            ..SandboxConfig::default()
        };
        top.validate()
            .expect("the highest uid an attempt can get is still valid");
    }
}
