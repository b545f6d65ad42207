//! `retry.lua`: put a running job back for another attempt, fenced by its lease.

use super::{Args, Call, Lease, Write};
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// Whether the attempt that gives the job back counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// It counts against `max_attempts`.
    Attempt,
    /// It does not (the worker drains, the runner as a whole is down).
    Refund,
    /// It does not, and it is an infrastructure failure of the job's own: recorded in the
    /// record's `failing_since` and `infra_failures`, which bound these retries by time.
    InfraFailure,
}

/// The retry script's arguments, besides the caller and its lease.
#[derive(Clone, Copy, Debug)]
pub struct Retry<'a> {
    /// 0: queue it again now; else wait in the delayed set.
    pub delay_ms: u64,
    /// Kept in the record as `last_error`.
    pub error: &'a str,
    pub charge: Charge,
}

impl Retry<'_> {
    pub fn call(&self, keys: &Keys, worker: &str, lease: &Lease) -> Call<Write> {
        let args = Args::new(keys)
            .arg(worker)
            .lease(lease)
            .arg(self.delay_ms)
            .arg(self.error)
            .flag(self.charge != Charge::Attempt)
            .flag(self.charge == Charge::InfraFailure);
        let key = keys.stream(lease.priority);
        Call::fenced(ScriptName::Retry, vec![key], args)
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::job::Priority;
    use crate::protocol::testing::{keys, lease, text};

    #[test]
    fn the_charge_is_two_flags() {
        let lease = lease("a", Priority::Low, 5);
        let args = |charge| {
            let call = Retry {
                delay_ms: 250,
                error: "engine down",
                charge,
            }
            .call(&keys(), "w", &lease);
            assert_eq!(call.keys(), [keys().stream(Priority::Low)]);
            text(&call)
        };
        let head = ["qs:{q}:", "w", "a", "3", "1-0", "5", "250", "engine down"];
        assert_eq!(args(Charge::Attempt)[..8], head);
        assert_eq!(args(Charge::Attempt)[8..], ["0", "0"]);
        assert_eq!(args(Charge::Refund)[8..], ["1", "0"]);
        assert_eq!(args(Charge::InfraFailure)[8..], ["1", "1"]);
    }

    #[test]
    fn the_answer_is_a_fenced_write() {
        let lease = lease("a", Priority::Low, 5);
        let call = Retry {
            delay_ms: 0,
            error: "",
            charge: Charge::Refund,
        }
        .call(&keys(), "w", &lease);
        assert_eq!(call.parse(Value::Int(0)), Ok(Write::Fenced));
        assert!(call.parse(Value::Nil).is_err());
    }
}
