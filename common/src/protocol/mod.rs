//! Typed calls of the Lua scripts: one module per script of `common/lua/`, each holding the
//! script's arguments (a struct that encodes them in the order its `ARGV` comment gives) and its
//! reply (a parser that turns the answer into a type and refuses anything else). Nothing else
//! builds a script's argument list or reads its reply, so a script and its Rust side change
//! together, here.
//!
//! A call is built without I/O ([`Call`]: its keys, its arguments, its parser) and sent with
//! [`Call::run`]; the tests of each module check the encoding and the parsing without Redis.
//!
//! - fenced writes answer [`Write`]: `Taken`, or `Fenced` when the caller no longer holds the
//!   job's [`Lease`];
//! - [`dead_letter::DeadLetterReason`] is every `reason` a dead letter can carry;
//! - [`stats`] reads the queue's size (the worker's gauges and `quayside stats`);
//! - [`pause`] pauses and resumes claiming (plain commands; claim.lua honours it).

pub mod adopt;
pub mod cancel;
pub mod claim;
pub mod dead_letter;
pub mod enqueue;
pub mod finish;
pub mod heartbeat;
pub mod log;
pub mod pause;
pub mod promote;
pub mod renew;
pub mod repair;
pub mod replay;
mod reply;
pub mod retry;
pub mod stats;
pub mod webhook;

use redis::{ToRedisArgs, Value};

use crate::job::Priority;
use crate::keys::Keys;
use crate::scripts::{self, ScriptName};
use reply::Reader;

pub use dead_letter::DeadLetterReason;

/// The answer of a fenced write: only the holder of a job's current lease may write.
#[must_use = "a fenced write may have been refused"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Redis took the write.
    Taken,
    /// The caller no longer holds the job (taken over, re-queued, ended): nothing was written.
    Fenced,
}

impl Write {
    pub fn is_taken(self) -> bool {
        self == Self::Taken
    }
}

/// The fencing handle of one claimed attempt. Only the holder of the job's current token (on
/// that entry, as that worker) may finish, retry, renew or log it; a takeover moves it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// As found in the entry; may be invalid, which the executor then rejects.
    pub job_id: String,
    pub priority: Priority,
    pub entry: String,
    pub token: u64,
}

/// The stream index the scripts use for `priority` (`K.streams[i]`, 1-based).
pub fn stream_index(priority: Priority) -> usize {
    priority.index() + 1
}

/// A script's reply that is not what the script is documented to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply to {script}: {detail}")]
pub struct ReplyError {
    pub script: &'static str,
    pub detail: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Redis refused or could not be reached.
    #[error("redis {op} failed")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

type Parser<R> = Box<dyn Fn(Value) -> Result<R, ReplyError> + Send + Sync>;

/// One encoded script call: what to send, and how to read the answer.
pub struct Call<R> {
    script: ScriptName,
    /// Names the call in errors (`claim`, `reclaim`, ...).
    op: &'static str,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
    parse: Parser<R>,
}

impl<R> std::fmt::Debug for Call<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Arguments may carry specs and output: their count only.
        f.debug_struct("Call")
            .field("op", &self.op)
            .field("keys", &self.keys)
            .field("args", &self.args.len())
            .finish()
    }
}

impl Call<Write> {
    /// A fenced write: the script answers 1 (taken) or 0 (fenced).
    fn fenced(script: ScriptName, keys: Vec<String>, args: Args) -> Self {
        Self::new(script, keys, args, move |v| {
            Reader(script.as_str()).write(&v)
        })
    }
}

impl Call<u64> {
    /// A call the script answers with a count.
    fn count(script: ScriptName, keys: Vec<String>, args: Args) -> Self {
        Self::new(script, keys, args, move |v| {
            Reader(script.as_str()).number(&v)
        })
    }
}

impl<T: 'static> Call<Vec<T>> {
    /// A call for `n` items, answered with one value per item, each read by `item`.
    fn per_item(
        script: ScriptName,
        keys: Vec<String>,
        args: Args,
        n: usize,
        item: fn(Reader, &Value) -> Result<T, ReplyError>,
    ) -> Self {
        Self::new(script, keys, args, move |v| {
            let r = Reader(script.as_str());
            r.answers(&v, n)?.iter().map(|a| item(r, a)).collect()
        })
    }
}

impl<R> Call<R> {
    fn new(
        script: ScriptName,
        keys: Vec<String>,
        args: Args,
        parse: impl Fn(Value) -> Result<R, ReplyError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            script,
            op: script.as_str(),
            keys,
            args: args.0,
            parse: Box::new(parse),
        }
    }

    /// Names the call `op` in errors.
    fn named(self, op: &'static str) -> Self {
        Self { op, ..self }
    }

    pub fn op(&self) -> &'static str {
        self.op
    }

    /// `KEYS`: keys of the queue's slot, for routing (scripts build the others from the prefix).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// `ARGV`, encoded as Redis receives it.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    /// Reads a reply to this call.
    ///
    /// # Errors
    /// The reply is not one the script gives.
    pub fn parse(&self, reply: Value) -> Result<R, ReplyError> {
        (self.parse)(reply)
    }

    /// Sends the call (`EVALSHA`, loading the script when Redis does not know it) and reads the
    /// reply.
    ///
    /// # Errors
    /// [`CallError::Redis`] when Redis fails or refuses, [`CallError::Reply`] when it answers
    /// something the script does not.
    pub async fn run<C>(&self, conn: &mut C) -> Result<R, CallError>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        let mut inv = scripts::get(self.script).prepare_invoke();
        for k in &self.keys {
            inv.key(k);
        }
        for a in &self.args {
            inv.arg(a.as_slice());
        }
        let reply: Value = inv
            .invoke_async(conn)
            .await
            .map_err(|source| CallError::Redis {
                op: self.op,
                source,
            })?;
        Ok(self.parse(reply)?)
    }
}

/// `ARGV` under construction; every script takes the queue's key prefix first.
struct Args(Vec<Vec<u8>>);

impl Args {
    fn new(keys: &Keys) -> Self {
        Self(vec![keys.prefix().as_bytes().to_vec()])
    }

    fn arg(mut self, value: impl ToRedisArgs) -> Self {
        value.write_redis_args(&mut self.0);
        self
    }

    /// A flag as the scripts read it: `'1'` or `'0'`.
    fn flag(self, on: bool) -> Self {
        self.arg(if on { "1" } else { "0" })
    }

    /// The four fields that name a lease: job id, stream index, entry, token.
    fn lease(self, lease: &Lease) -> Self {
        self.arg(&lease.job_id)
            .arg(stream_index(lease.priority))
            .arg(&lease.entry)
            .arg(lease.token)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the modules' tests.

    use redis::Value;

    use super::Lease;
    use crate::job::Priority;
    use crate::keys::Keys;

    pub fn keys() -> Keys {
        Keys::new("q").expect("valid queue name")
    }

    /// The lease of job `id` on entry `1-0`.
    pub fn lease(id: &str, priority: Priority, token: u64) -> Lease {
        Lease {
            job_id: id.into(),
            priority,
            entry: "1-0".into(),
            token,
        }
    }

    /// The arguments as text, for comparing with the script's `ARGV` comment.
    pub fn text<R>(call: &super::Call<R>) -> Vec<String> {
        call.args()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// Checks a call's arguments, one answer it reads (as `read`) and one it refuses.
    pub fn check<R: PartialEq + std::fmt::Debug>(
        call: &super::Call<R>,
        args: &[&str],
        (answer, read): (Value, R),
        refused: Value,
    ) {
        assert_eq!(text(call), args);
        assert_eq!(call.parse(answer), Ok(read));
        assert!(call.parse(refused.clone()).is_err(), "{refused:?} refused");
    }

    pub fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    pub fn bulks(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| bulk(s)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::keys;
    use super::*;

    /// Every `.rs` file below `dir`.
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_script_has_its_module_and_nothing_else_sends_scripts() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let here = root.join("common/src/protocol");
        for name in ScriptName::ALL {
            let module = here.join(format!("{}.rs", name.as_str()));
            assert!(module.exists(), "{name:?} has no {}", module.display());
        }
        let mut files = Vec::new();
        for dir in [
            "common/src",
            "worker",
            "producer",
            "tests/src",
            "tests/tests",
        ] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 50, "found the sources: {}", files.len());
        for file in files.iter().filter(|f| !f.starts_with(&here)) {
            let text = std::fs::read_to_string(file).expect("utf-8 source");
            for call in ["prepare_invoke", "scripts::get(", "EVALSHA"] {
                assert!(
                    !text.contains(call),
                    "{} sends a script itself ({call}): use its typed call in common/src/protocol",
                    file.display()
                );
            }
        }
    }

    #[test]
    fn stream_indices_are_one_based_in_priority_order() {
        assert_eq!(Priority::ALL.map(stream_index), [1, 2, 3]);
    }

    #[test]
    fn a_lease_encodes_as_id_index_entry_token() {
        let lease = Lease {
            job_id: "j".into(),
            priority: Priority::Low,
            entry: "5-1".into(),
            token: 42,
        };
        let args = Args::new(&keys()).lease(&lease).flag(true).flag(false).0;
        let text: Vec<_> = args.iter().map(|a| String::from_utf8_lossy(a)).collect();
        assert_eq!(text, ["qs:{q}:", "j", "3", "5-1", "42", "1", "0"]);
    }
}
