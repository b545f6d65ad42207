//! `heartbeat.lua`: record a worker's heartbeat and prune workers (and consumers) that stopped.

use super::{Args, Call};
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// The heartbeat script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Heartbeat<'a> {
    pub worker: &'a str,
    /// The registry document (JSON) `quayside stats` shows.
    pub doc: &'a str,
    /// The worker counts as live this long after this beat.
    pub ttl_ms: u64,
    /// Also delete idle consumers of departed workers from every lane's group: the periodic
    /// beat does, not the extra beats a worker sends as its in-flight count changes (one per
    /// job on a busy worker).
    pub sweep: bool,
}

impl Heartbeat<'_> {
    /// How many workers expired.
    pub fn call(&self, keys: &Keys) -> Call<u64> {
        let args = Args::new(keys)
            .arg(self.worker)
            .arg(self.doc)
            .arg(self.ttl_ms)
            .arg(if self.sweep { "1" } else { "0" });
        Call::count(ScriptName::Heartbeat, vec![keys.workers()], args)
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::protocol::testing::{check, keys};

    #[test]
    fn the_document_and_ttl_follow_the_worker() {
        let call = Heartbeat {
            worker: "w",
            doc: "{}",
            ttl_ms: 6000,
            sweep: true,
        }
        .call(&keys());
        let args = ["qs:{q}:", "w", "{}", "6000", "1"];
        check(&call, &args, (Value::Int(0), 0), Value::Nil);
    }
}
