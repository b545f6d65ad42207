//! The Quayside job model on one page.
//!
//! - [`job`]: what a producer submits ([`JobSpec`]): kind, language, files, stdin, limits, priority.
//! - [`cases`]: a job's test cases, compare modes and checker (compile once, run many).
//! - [`compare`]: whether a test's output matches its expected output, and where it differs.
//! - [`limits`]: resource limits and their validation against worker maxima.
//! - [`outcome`]: what a job ended as ([`JobResult`], [`Status`]).
//! - [`verdicts`]: what each test of a job ended as, and the job status they add up to.
//! - [`wire`]: the versioned JSON encoding of specs and results, and decode errors.
//! - [`keys`]: the Redis key schema; every key of a queue carries the `{queue}` hash tag.
//! - [`scripts`]: the Lua scripts that make each state transition one atomic step.
//! - [`protocol`]: each script's typed call (arguments and reply), dead-letter reasons, and
//!   the queue's size as every reader sees it.
//! - [`admission`]: whether a spec fits a configuration (language, sizes, limits).
//! - [`config`]: configuration types, loaded defaults < file < `QUAYSIDE_*` environment.
//!
//! The protocol these types implement is specified in `docs/protocol.md`.

pub mod admission;
pub mod callback;
pub mod cases;
pub mod compare;
pub mod config;
pub mod connection;
pub mod job;
pub mod keys;
pub mod limits;
pub mod outcome;
pub mod protocol;
pub mod scripts;
pub mod verdicts;
pub mod wire;

pub use job::{JobId, JobKind, JobSpec, Priority};
pub use keys::Keys;
pub use limits::Limits;
pub use outcome::{Captured, JobResult, Status};
pub use wire::WireError;

/// Milliseconds since the Unix epoch, the unit of every timestamp in the protocol.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The error and its sources, joined by `: ` (what anyhow's `{:#}` prints), for logs and
/// stored error messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
