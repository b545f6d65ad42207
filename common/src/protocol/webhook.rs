//! `webhook.lua`: the completion-webhook outbox. Senders claim due deliveries under a lease
//! ([`ClaimWebhooks`]) and report each one's outcome ([`WebhookDone`]), fenced by that lease so
//! a sender whose lease passed (another has taken the delivery) writes nothing.

use super::reply::Reader;
use super::{Args, Call};
use crate::keys::Keys;
use crate::scripts::ScriptName;

const R: Reader = Reader("webhook");

/// Claims up to `limit` due deliveries for `lease_ms`.
#[derive(Clone, Copy, Debug)]
pub struct ClaimWebhooks {
    pub limit: usize,
    pub lease_ms: u64,
    /// Deliveries older than this (since the job ended) are dead-lettered, not claimed.
    pub retry_for_ms: u64,
    /// Most entries kept in the webhook dead-letter stream.
    pub dead_cap: u64,
}

/// One claimed delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub job_id: String,
    pub url: String,
    /// `None` for the default tenant.
    pub tenant: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Fences the outcome report.
    pub lease: String,
    /// The job's result JSON as stored.
    pub result: String,
}

impl ClaimWebhooks {
    pub fn call(&self, keys: &Keys) -> Call<Vec<Delivery>> {
        let args = Args::new(keys)
            .arg("claim")
            .arg(self.limit)
            .arg(self.lease_ms)
            .arg(self.retry_for_ms)
            .arg(self.dead_cap);
        Call::new(ScriptName::Webhook, vec![keys.webhooks()], args, |v| {
            let flat = R.array(&v)?;
            if flat.len() % 6 != 0 {
                return Err(R.error(format!("{} values, not 6 per delivery", flat.len())));
            }
            flat.chunks_exact(6)
                .map(|d| {
                    let tenant = R.text(&d[2])?;
                    Ok(Delivery {
                        job_id: R.text(&d[0])?,
                        url: R.text(&d[1])?,
                        tenant: (!tenant.is_empty()).then_some(tenant),
                        attempt: R.number(&d[3])?,
                        lease: R.text(&d[4])?,
                        result: R.text(&d[5])?,
                    })
                })
                .collect()
        })
        .named("webhook claim")
    }
}

/// How one delivery attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// Try again after `delay_ms` (dead-lettered instead when that passes the retry time).
    Retry { delay_ms: u64, error: String },
    /// Give up now: the target is refused (`reason` says why).
    Dead { reason: &'static str, error: String },
}

/// What the outbox did with a reported attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Delivered,
    Retried,
    Dead,
    /// The lease moved on: another sender holds the delivery; nothing was written.
    Fenced,
}

impl Recorded {
    /// The `outcome` label of `quayside_webhooks_total`.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Dead => "dead",
            Self::Fenced => "fenced",
        }
    }
}

/// Reports one attempt of a claimed delivery.
#[derive(Clone, Debug)]
pub struct WebhookDone<'a> {
    pub delivery: &'a Delivery,
    pub attempt: Attempt,
    pub retry_for_ms: u64,
    pub dead_cap: u64,
}

impl WebhookDone<'_> {
    pub fn call(&self, keys: &Keys) -> Call<Recorded> {
        let (outcome, delay, reason, error) = match &self.attempt {
            Attempt::Delivered => ("delivered", 0, "", ""),
            Attempt::Retry { delay_ms, error } => ("retry", *delay_ms, "", error.as_str()),
            Attempt::Dead { reason, error } => ("dead", 0, *reason, error.as_str()),
        };
        let args = Args::new(keys)
            .arg("done")
            .arg(&self.delivery.job_id)
            .arg(&self.delivery.lease)
            .arg(outcome)
            .arg(delay)
            .arg(self.retry_for_ms)
            .arg(self.dead_cap)
            .arg(reason)
            .arg(error);
        Call::new(
            ScriptName::Webhook,
            vec![keys.webhooks()],
            args,
            |v| match R.text(&v)?.as_str() {
                "delivered" => Ok(Recorded::Delivered),
                "retried" => Ok(Recorded::Retried),
                "dead" => Ok(Recorded::Dead),
                "fenced" => Ok(Recorded::Fenced),
                other => Err(R.error(format!("unknown answer {other:?}"))),
            },
        )
        .named("webhook done")
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::protocol::testing::{bulks, check, keys, text};

    #[test]
    fn a_claim_reads_six_values_per_delivery() {
        let call = ClaimWebhooks {
            limit: 4,
            lease_ms: 25_000,
            retry_for_ms: 3_600_000,
            dead_cap: 100,
        }
        .call(&keys());
        let one = Delivery {
            job_id: "j".into(),
            url: "https://h/x".into(),
            tenant: None,
            attempt: 2,
            lease: "77".into(),
            result: "{}".into(),
        };
        check(
            &call,
            &["qs:{q}:", "claim", "4", "25000", "3600000", "100"],
            (bulks(&["j", "https://h/x", "", "2", "77", "{}"]), vec![one]),
            bulks(&["j", "https://h/x"]),
        );
    }

    #[test]
    fn an_outcome_is_fenced_by_the_lease() {
        let d = Delivery {
            job_id: "j".into(),
            url: "u".into(),
            tenant: Some("acme".into()),
            attempt: 1,
            lease: "9".into(),
            result: "{}".into(),
        };
        let call = WebhookDone {
            delivery: &d,
            attempt: Attempt::Retry {
                delay_ms: 1500,
                error: "HTTP 503".into(),
            },
            retry_for_ms: 60_000,
            dead_cap: 10,
        }
        .call(&keys());
        assert_eq!(
            text(&call),
            ["qs:{q}:", "done", "j", "9", "retry", "1500", "60000", "10", "", "HTTP 503"]
        );
        assert_eq!(
            call.parse(Value::SimpleString("fenced".into())),
            Ok(Recorded::Fenced)
        );
        assert!(call.parse(Value::Int(1)).is_err());
    }
}
