//! What every sandbox backend shares: one in-sandbox protocol, one reading of its output, one
//! set of labels and names, one sweep rule.
//!
//! - [`protocol`]: the wrapper script a sandbox runs as its main process, its stdin header and
//!   its phase markers.
//! - [`phases`]: the phased-output parser (marker scan, per-stream caps, build and run
//!   clocks), and how an attempt is classified from the way its sandbox ended.
//! - [`run_report`]: what the in-sandbox helper `quayside-run` reports about one run (cpu time,
//!   peak memory, how it ended), and a test's verdict from it.
//! - [`fleet`]: the labels that tie a sandbox to its fleet, the orphan rule, and each runner's
//!   list of sandboxes in use or left to remove.
//! - [`seccomp`]: Quayside's seccomp profile, shared by both backends.
//! - [`tests_mode`]: a job with tests: the resolved plan, the wrapper's tests mode, its frames.

pub mod fleet;
pub mod phases;
pub mod protocol;
pub mod run_report;
pub mod seccomp;
pub mod tests_mode;

use quayside_common::job::SpecError;
use quayside_common::JobId;

pub use self::fleet::{
    labels, pool_labels, unix_now_s, Fleet, Sandboxes, Sweep, LABEL_ATTEMPT, LABEL_DEADLINE,
    LABEL_FLEET, LABEL_JOB, LABEL_POOL, LABEL_QUEUE, LABEL_WORKER,
};
pub use self::phases::{
    classify, signal_of, CappedOutput, Ending, PhasedOutput, Progress, Verdict,
};

/// Where job files live inside every sandbox.
pub const WORK_DIR: &str = "/work";

/// Longest single argument the kernel passes to a program (`MAX_ARG_STRLEN`, its NUL included).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Refuses a program argument the kernel would refuse to pass (`E2BIG`): the sandbox could not
/// start the program, on any runner.
///
/// # Errors
/// `args[i]`, the first argument too long.
pub fn check_args(args: &[String]) -> Result<(), SpecError> {
    let longest = MAX_ARG_STRLEN - 1;
    match args.iter().position(|a| a.len() > longest) {
        Some(i) => Err(SpecError::field(
            format!("args[{i}]"),
            format!("longer than the {longest} bytes the kernel passes in one argument"),
        )),
        None => Ok(()),
    }
}

/// `raw` with every character outside `[A-Za-z0-9_.-]` (which names, labels and ids all
/// accept) replaced by `_`.
pub fn name_safe(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A sandbox name unique per attempt, readable in `docker ps`: `quayside-<job>-a<attempt>-<rand>`.
/// Job-id characters outside `[A-Za-z0-9_.-]` (only `:`) become `_`.
pub fn sandbox_name(job_id: &JobId, attempt: u32) -> String {
    let job = name_safe(job_id.as_str());
    format!("quayside-{job}-a{attempt}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_names_and_signals() {
        let id = JobId::parse("batch:7").expect("id");
        let l = labels(&Fleet::default(), &id, 2, "w1", 0);
        assert_eq!(l[LABEL_JOB], "batch:7");
        assert!(sandbox_name(&id, 2).starts_with("quayside-batch_7-a2-"));
        assert_eq!(name_safe("a:b/c d_e.f-g"), "a_b_c_d_e.f-g");
        assert_eq!(
            (signal_of(137), signal_of(1), signal_of(128)),
            (Some(9), None, None)
        );
    }
}
