//! `renew.lua`: renew the leases of a worker's running jobs in one step.

use redis::Value;

use super::reply::Reader;
use super::{Args, Call, Lease, ReplyError};
use crate::job::Priority;
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// State of a lease after renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// Held, and the job's cancellation was requested.
    CancelRequested,
    /// Another execution holds the job now; stop and write nothing.
    Lost,
    /// The job's stream entry was deleted (or its consumer group lost), so the job was queued
    /// again under a fresh entry; stop and write nothing.
    Requeued,
}

/// The renew script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Renew<'a> {
    pub worker: &'a str,
    pub leases: &'a [Lease],
}

impl Renew<'_> {
    /// One state per lease, in order.
    pub fn call(&self, keys: &Keys) -> Call<Vec<LeaseState>> {
        let mut args = Args::new(keys).arg(self.worker);
        for l in self.leases {
            args = args.lease(l);
        }
        let n = self.leases.len();
        let key = keys.stream(Priority::Normal);
        Call::per_item(ScriptName::Renew, vec![key], args, n, state)
    }
}

fn state(r: Reader, answer: &Value) -> Result<LeaseState, ReplyError> {
    match r.text(answer)?.as_str() {
        "ok" => Ok(LeaseState::Held),
        "cancel" => Ok(LeaseState::CancelRequested),
        "lost" => Ok(LeaseState::Lost),
        "requeued" => Ok(LeaseState::Requeued),
        other => Err(r.error(format!("unknown lease state {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{bulks, keys, lease, text};

    #[test]
    fn leases_follow_the_worker_and_states_come_back_in_order() {
        let leases = [lease("a", Priority::High, 1), lease("b", Priority::High, 2)];
        let call = Renew {
            worker: "w",
            leases: &leases,
        }
        .call(&keys());
        assert_eq!(
            text(&call),
            ["qs:{q}:", "w", "a", "1", "1-0", "1", "b", "1", "1-0", "2"]
        );
        assert_eq!(
            call.parse(bulks(&["ok", "requeued"])),
            Ok(vec![LeaseState::Held, LeaseState::Requeued])
        );
        assert_eq!(
            call.parse(bulks(&["cancel", "lost"])),
            Ok(vec![LeaseState::CancelRequested, LeaseState::Lost])
        );
        for bad in [bulks(&["ok"]), bulks(&["ok", "maybe"]), Value::Int(1)] {
            assert!(call.parse(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
