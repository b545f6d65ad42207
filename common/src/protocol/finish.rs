//! `finish.lua`: write the terminal results of one or more jobs, each fenced by its lease, with
//! a dead letter where the job is dead-lettered.

use super::reply::Reader;
use super::{Args, Call, DeadLetterReason, Lease, Write};
use crate::job::Priority;
use crate::keys::Keys;
use crate::outcome::JobResult;
use crate::scripts::ScriptName;
use crate::wire::encode_result;

/// A terminal result to write, fenced by its lease.
#[derive(Clone, Copy, Debug)]
pub struct Completion<'a> {
    pub lease: &'a Lease,
    pub result: &'a JobResult,
    pub ttl_s: u64,
    /// Also add a dead letter.
    pub dead_letter: Option<DeadLetter<'a>>,
}

/// A dead letter to add together with a terminal result.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    pub reason: DeadLetterReason,
    pub error: &'a str,
}

impl<'a> Completion<'a> {
    pub fn new(lease: &'a Lease, result: &'a JobResult, ttl_s: u64) -> Self {
        Self {
            lease,
            result,
            ttl_s,
            dead_letter: None,
        }
    }

    /// Dead-letters the job with `reason` as well.
    pub fn dead_letter(self, reason: DeadLetterReason, error: &'a str) -> Self {
        Self {
            dead_letter: Some(DeadLetter { reason, error }),
            ..self
        }
    }
}

/// One result encoded for the script, owned: it can wait for a batch.
#[derive(Clone, Debug)]
pub struct FinishItem {
    lease: Lease,
    status: &'static str,
    result_json: String,
    ttl_s: u64,
    reason: &'static str,
    error: String,
}

impl From<Completion<'_>> for FinishItem {
    fn from(c: Completion<'_>) -> Self {
        Self {
            lease: c.lease.clone(),
            status: c.result.status.as_str(),
            result_json: encode_result(c.result),
            ttl_s: c.ttl_s,
            reason: c.dead_letter.map_or("", |d| d.reason.as_str()),
            error: c
                .dead_letter
                .map_or_else(String::new, |d| d.error.to_owned()),
        }
    }
}

/// The finish script's arguments: the results of one call.
#[derive(Clone, Debug)]
pub struct Finish<'a> {
    pub worker: &'a str,
    pub log_cap: u64,
    pub dlq_cap: u64,
    pub items: Vec<FinishItem>,
}

impl Finish<'_> {
    /// One answer per item, in order.
    pub fn call(self, keys: &Keys) -> Call<Vec<Write>> {
        let n = self.items.len();
        let mut args = Args::new(keys)
            .arg(self.worker)
            .arg(self.log_cap)
            .arg(self.dlq_cap)
            .arg(n);
        for i in self.items {
            args = args
                .lease(&i.lease)
                .arg(i.status)
                .arg(i.result_json)
                .arg(i.ttl_s)
                .arg(i.reason)
                .arg(i.error);
        }
        let key = keys.stream(Priority::Normal);
        Call::per_item(ScriptName::Finish, vec![key], args, n, Reader::write)
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::outcome::Status;
    use crate::protocol::testing::{keys, lease, text};
    use crate::JobId;

    #[test]
    fn each_result_is_nine_arguments_with_its_dead_letter() {
        let lease = lease("a", Priority::High, 9);
        let ok =
            JobResult::without_output(JobId::parse("a").expect("id"), Status::Succeeded, None, 1);
        let dead = JobResult::without_output(
            JobId::parse("a").expect("id"),
            Status::Dead,
            Some("gone".into()),
            3,
        );
        let items = vec![
            Completion::new(&lease, &ok, 60).into(),
            Completion::new(&lease, &dead, 70)
                .dead_letter(DeadLetterReason::InfraTimeout, "gone")
                .into(),
        ];
        let call = Finish {
            worker: "w",
            log_cap: 1000,
            dlq_cap: 100,
            items,
        }
        .call(&keys());
        let args = text(&call);
        assert_eq!(args[..5], ["qs:{q}:", "w", "1000", "100", "2"]);
        assert_eq!(args[5..10], ["a", "1", "1-0", "9", "succeeded"]);
        assert_eq!(args[11..14], ["60", "", ""]);
        assert_eq!(args[18], "dead");
        assert_eq!(args[20..], ["70", "infra_timeout", "gone"]);
        let stored: JobResult = serde_json::from_str(&args[19]).expect("result JSON");
        assert_eq!(stored, dead);

        assert_eq!(
            call.parse(Value::Array(vec![Value::Int(1), Value::Int(0)])),
            Ok(vec![Write::Taken, Write::Fenced])
        );
        let e = call
            .parse(Value::Array(vec![Value::Int(1)]))
            .expect_err("one answer short");
        assert!(e.to_string().contains("1 answers for 2 items"), "{e}");
    }
}
