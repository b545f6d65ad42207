//! Quayside's seccomp profile, `deploy/seccomp/quayside.json`: Docker's default allow list
//! without what a compile or run job never needs. The Docker runner passes it to the engine
//! with every container (`seccomp=<json>`); Kubernetes nodes load the same file as a
//! `Localhost` profile. `docs/security.md` lists what it takes away and why.
//!
//! The file uses only what the OCI runtime spec, Docker and CRI-O all read (no `includes`,
//! `excludes` or `archMap`, which containerd would ignore), so every runtime applies the same
//! rules.

use std::sync::OnceLock;

/// The profile as shipped.
pub const PROFILE: &str = include_str!("../../../../deploy/seccomp/quayside.json");

/// The profile on one line, as the Engine API's `seccomp=` security option takes it.
///
/// # Panics
/// Never at run time: the embedded file is checked to be JSON by this module's tests.
pub fn compact() -> &'static str {
    static COMPACT: OnceLock<String> = OnceLock::new();
    COMPACT.get_or_init(|| {
        serde_json::from_str::<serde_json::Value>(PROFILE)
            .expect("deploy/seccomp/quayside.json is JSON (tested)")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn rules() -> Vec<Value> {
        let profile: Value = serde_json::from_str(PROFILE).expect("profile is JSON");
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            profile["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]),
            "no 32-bit sub-architectures: their socketcall(2) cannot be filtered by family"
        );
        for key in profile.as_object().expect("object").keys() {
            assert!(
                [
                    "defaultAction",
                    "defaultErrnoRet",
                    "architectures",
                    "syscalls"
                ]
                .contains(&key.as_str()),
                "{key}: a field some runtime would ignore"
            );
        }
        profile["syscalls"].as_array().expect("syscalls").clone()
    }

    fn allowed(rules: &[Value], unconditionally: bool) -> BTreeSet<String> {
        rules
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .filter(|r| !unconditionally || r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn what_no_job_needs_is_never_allowed() {
        let rules = rules();
        let any = allowed(&rules, false);
        for name in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "process_madvise",
            "pidfd_getfd",
            "kcmp",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "perf_event_open",
            "bpf",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "socketcall",
            "unshare",
            "setns",
            "mount",
            "open_by_handle_at",
            "name_to_handle_at",
            "fanotify_init",
            "fanotify_mark",
            "modify_ldt",
            "mq_open",
            "memfd_secret",
        ] {
            assert!(!any.contains(name), "{name} is allowed");
        }
        for needed in [
            "execve",
            "clone",
            "futex",
            "mmap",
            "socket",
            "inotify_init1",
            "rseq",
        ] {
            assert!(any.contains(needed), "{needed} is needed by the toolchains");
        }
    }

    #[test]
    fn sockets_only_for_unix_and_inet_families_and_clone_without_namespaces() {
        let rules = rules();
        assert!(
            !allowed(&rules, true).contains("socket"),
            "socket only with a family"
        );
        let families: BTreeSet<u64> = rules
            .iter()
            .filter(|r| r["names"] == serde_json::json!(["socket"]))
            .map(|r| {
                let args = r["args"].as_array().expect("args");
                assert_eq!(args.len(), 1);
                assert_eq!(
                    (args[0]["index"].as_u64(), args[0]["op"].as_str()),
                    (Some(0), Some("SCMP_CMP_EQ"))
                );
                args[0]["value"].as_u64().expect("family")
            })
            .collect();
        assert_eq!(
            families,
            BTreeSet::from([1, 2, 10]),
            "AF_UNIX, AF_INET, AF_INET6"
        );
        let clone = rules
            .iter()
            .find(|r| r["names"] == serde_json::json!(["clone"]))
            .expect("clone rule");
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(
            clone["args"][0]["value"], 0x7E02_0000u64,
            "every CLONE_NEW* flag"
        );
        let clone3 = rules
            .iter()
            .find(|r| r["names"] == serde_json::json!(["clone3"]))
            .expect("clone3 rule");
        assert_eq!(
            (clone3["action"].as_str(), clone3["errnoRet"].as_u64()),
            (Some("SCMP_ACT_ERRNO"), Some(38)),
            "ENOSYS, so libc falls back to clone, whose flags can be checked"
        );
    }

    #[test]
    fn the_compact_form_is_the_same_profile() {
        let a: Value = serde_json::from_str(PROFILE).expect("json");
        let b: Value = serde_json::from_str(compact()).expect("json");
        assert_eq!(a, b);
        assert!(!compact().contains('\n'));
    }
}
