//! `log.lua`: append one chunk to a running job's live log, fenced by its lease.

use super::{Args, Call, Lease, Write};
use crate::job::JobId;
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// Which output a log entry came from (the `s` field of the log stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    Stdout,
    Stderr,
    Compile,
    /// Lines from Quayside itself, e.g. "retrying after ...".
    System,
    /// A test of the job starts: the entry's data is its name.
    Test,
    /// A test of the job was judged: `<name> <status> <wall_ms>ms`.
    Verdict,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Compile => "compile",
            Self::System => "system",
            Self::Test => "test",
            Self::Verdict => "verdict",
        }
    }
}

/// The log script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Log<'a> {
    pub worker: &'a str,
    /// The job's id (valid: the lease's job id, checked).
    pub id: &'a JobId,
    pub lease: &'a Lease,
    /// `queue.log_max_entries`.
    pub log_cap: u64,
    /// The log's TTL when the job carries no result TTL.
    pub default_ttl_s: u64,
    pub source: LogSource,
    pub data: &'a [u8],
}

impl Log<'_> {
    pub fn call(&self, keys: &Keys) -> Call<Write> {
        let args = Args::new(keys)
            .arg(self.worker)
            .lease(self.lease)
            .arg(self.log_cap)
            .arg(self.default_ttl_s)
            .arg(self.source.as_str())
            .arg(self.data);
        Call::fenced(ScriptName::Log, vec![keys.logs(self.id)], args)
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::job::Priority;
    use crate::protocol::testing::{keys, lease, text};

    #[test]
    fn a_chunk_travels_with_its_lease_and_source() {
        let id = JobId::parse("a").expect("id");
        let lease = lease("a", Priority::Normal, 3);
        let call = Log {
            worker: "w",
            id: &id,
            lease: &lease,
            log_cap: 1000,
            default_ttl_s: 3600,
            source: LogSource::Stderr,
            data: b"boom\n",
        }
        .call(&keys());
        assert_eq!(call.keys(), [keys().logs(&id)]);
        assert_eq!(
            text(&call),
            ["qs:{q}:", "w", "a", "2", "1-0", "3", "1000", "3600", "stderr", "boom\n"]
        );
        assert_eq!(call.parse(Value::Int(1)), Ok(Write::Taken));
        assert!(call.parse(Value::Okay).is_err());
    }
}
