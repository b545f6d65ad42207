//! `claim.lua`: claim new entries (`XREADGROUP`) or take over idle ones (`XAUTOCLAIM`), each
//! marked running under a new fencing token.

use std::collections::BTreeMap;

use redis::Value;

use super::reply::Reader;
use super::{stream_index, Args, Call, DeadLetterReason, Lease, ReplyError};
use crate::config::TenantConfig;
use crate::job::Priority;
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// Which entries to claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimMode<'a> {
    /// Entries never delivered, taking the streams in this order.
    New { order: &'a [Priority] },
    /// Entries pending for longer than `min_idle_ms` (their lease expired), any stream.
    Reclaim { min_idle_ms: u64 },
}

/// The claim script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The claiming consumer.
    pub worker: &'a str,
    pub mode: ClaimMode<'a>,
    /// At most this many jobs.
    pub count: usize,
    /// Caps of the dead-letter stream and of a log stream (a rejected raw job's log ends).
    pub dlq_cap: u64,
    pub log_cap: u64,
    /// Result TTL of a rejected raw job that carries none.
    pub default_ttl_s: u64,
    /// The configured tenants: fair-share weights and running caps travel with every claim
    /// (keep one config per fleet: each claim enforces the claiming worker's).
    pub tenants: &'a BTreeMap<String, TenantConfig>,
}

/// One job handed to this worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub lease: Lease,
    /// Executions started so far, this one included.
    pub attempts: u32,
    pub spec_json: Vec<u8>,
    pub enqueued_at_ms: u64,
    /// Cancellation was requested while the job was held by a previous worker.
    pub cancel_requested: bool,
}

/// Why the claim step removed an entry without running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its job already ran, ended, or was queued again under a newer entry.
    Duplicate,
    /// It was deleted from its stream while pending; its job was queued again.
    Requeued,
    /// It carried no usable job and was dead-lettered with this reason.
    DeadLettered(DeadLetterReason),
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Duplicate => f.write_str("duplicate"),
            Self::Requeued => f.write_str("requeued"),
            Self::DeadLettered(r) => write!(f, "dead-lettered ({r})"),
        }
    }
}

/// An entry the claim step removed without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub priority: Priority,
    pub entry: String,
    pub reason: DropReason,
}

/// What one claim call returned.
#[derive(Clone, Debug, Default)]
pub struct ClaimBatch {
    pub claimed: Vec<Claimed>,
    pub dropped: Vec<Dropped>,
    /// When nothing was claimed: the last entry id of each default stream and of the doorbell
    /// ([`Keys::wake_streams`]), to block on.
    pub last_ids: Option<[String; 4]>,
    /// A tenant with queued work was skipped for its running cap: ask again soon rather than
    /// block (the slot that frees rings nothing).
    pub held: bool,
    /// Lanes with queued work this call passed over: the tenant (`default` for the default
    /// tenant) and why, `running_cap` or `paused`.
    pub skipped: Vec<(String, &'static str)>,
    /// The queue is paused: nothing was claimed, and no last ids come back (poll instead of
    /// blocking, so a resume is seen quickly).
    pub paused: bool,
}

/// The reply: the batch, and the streams found without the consumer group (nothing was read
/// there; the caller creates the group again).
#[derive(Clone, Debug, Default)]
pub struct ClaimReply {
    pub batch: ClaimBatch,
    pub missing: Vec<Priority>,
}

impl Claim<'_> {
    /// The call; named `claim` or `reclaim` by its mode.
    pub fn call(&self, keys: &Keys) -> Call<ClaimReply> {
        let (mode, order, min_idle_ms, op) = match self.mode {
            ClaimMode::New { order } => ("new", order_digits(order), 0, "claim"),
            ClaimMode::Reclaim { min_idle_ms } => ("reclaim", "123".into(), min_idle_ms, "reclaim"),
        };
        let args = Args::new(keys)
            .arg(self.worker)
            .arg(mode)
            .arg(self.count)
            .arg(order)
            .arg(min_idle_ms)
            .arg(self.dlq_cap)
            .arg(self.log_cap)
            .arg(self.default_ttl_s);
        let shares: Vec<_> = self
            .tenants
            .iter()
            .filter(|(_, t)| t.weight != 1 || t.max_running != 0)
            .collect();
        let mut args = args.arg(shares.len());
        for (name, t) in shares {
            args = args.arg(name.as_str()).arg(t.weight).arg(t.max_running);
        }
        Call::new(ScriptName::Claim, keys.streams().to_vec(), args, parse).named(op)
    }
}

/// Stream indices in claim order, e.g. `"123"`.
fn order_digits(order: &[Priority]) -> String {
    order
        .iter()
        .map(|p| char::from(b'0' + stream_index(*p) as u8))
        .collect()
}

const R: Reader = Reader("claim");

fn parse(reply: Value) -> Result<ClaimReply, ReplyError> {
    let [claimed, dropped, last, missing, paused, held, skipped] = R.parts(reply)?;
    let mut batch = ClaimBatch {
        paused: R.number::<u8>(&paused)? == 1,
        held: R.number::<u8>(&held)? == 1,
        ..ClaimBatch::default()
    };
    for s in R.records(&skipped, 2)? {
        let why = match R.text(&s[1])?.as_str() {
            "running_cap" => "running_cap",
            "paused" => "paused",
            other => return Err(R.error(format!("unknown skip reason {other:?}"))),
        };
        batch.skipped.push((R.text(&s[0])?, why));
    }
    // The specs move out of the reply instead of being copied.
    let Value::Array(mut claimed) = claimed else {
        return Err(R.error(format!("expected the claimed jobs, got {claimed:?}")));
    };
    if claimed.len() % 8 != 0 {
        return Err(R.error(format!("{} values of claimed jobs", claimed.len())));
    }
    for c in claimed.chunks_exact_mut(8) {
        let spec = std::mem::replace(&mut c[5], Value::Nil);
        batch.claimed.push(Claimed {
            lease: Lease {
                priority: R.priority(&c[0])?,
                entry: R.text(&c[1])?,
                job_id: R.text(&c[2])?,
                token: R.number(&c[3])?,
            },
            attempts: R.number(&c[4])?,
            spec_json: R.bytes(spec)?,
            enqueued_at_ms: R.number(&c[6]).unwrap_or(0),
            cancel_requested: R.text(&c[7])? == "1",
        });
    }
    for d in R.records(&dropped, 4)? {
        let reason = match (R.text(&d[2])?.as_str(), R.text(&d[3])?) {
            ("duplicate", _) => DropReason::Duplicate,
            ("requeued", _) => DropReason::Requeued,
            ("dead_lettered", reason) => {
                DropReason::DeadLettered(reason.parse().map_err(|e: String| R.error(e))?)
            }
            (other, _) => return Err(R.error(format!("unknown drop reason {other:?}"))),
        };
        batch.dropped.push(Dropped {
            priority: R.priority(&d[0])?,
            entry: R.text(&d[1])?,
            reason,
        });
    }
    match R.array(&last)? {
        [] => {}
        [a, b, c, d] => {
            batch.last_ids = Some([R.text(a)?, R.text(b)?, R.text(c)?, R.text(d)?]);
        }
        other => return Err(R.error(format!("{} last ids for 4 streams", other.len()))),
    }
    let missing = R
        .array(&missing)?
        .iter()
        .map(|m| R.priority(m))
        .collect::<Result<_, _>>()?;
    Ok(ClaimReply { batch, missing })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{bulk, bulks, keys, text};

    fn claim(mode: ClaimMode<'_>) -> Call<ClaimReply> {
        let tenants = [
            ("acme".to_owned(), TenantConfig::default()),
            (
                "big".to_owned(),
                TenantConfig {
                    weight: 3,
                    max_running: 20,
                    ..TenantConfig::default()
                },
            ),
        ]
        .into();
        Claim {
            worker: "w1",
            mode,
            count: 4,
            dlq_cap: 100,
            log_cap: 1000,
            default_ttl_s: 3600,
            tenants: &tenants,
        }
        .call(&keys())
    }

    #[test]
    fn new_claims_name_the_stream_order() {
        let order = [Priority::Low, Priority::Normal, Priority::High];
        let call = claim(ClaimMode::New { order: &order });
        assert_eq!(call.op(), "claim");
        assert_eq!(
            text(&call),
            [
                "qs:{q}:", "w1", "new", "4", "321", "0", "100", "1000", "3600", "1", "big", "3",
                "20"
            ],
            "only tenants whose share differs from the default travel"
        );
        assert_eq!(call.keys(), keys().streams());
    }

    #[test]
    fn reclaims_take_every_stream_after_an_idle_time() {
        let call = claim(ClaimMode::Reclaim {
            min_idle_ms: 30_000,
        });
        assert_eq!(call.op(), "reclaim");
        assert_eq!(
            text(&call),
            [
                "qs:{q}:", "w1", "reclaim", "4", "123", "30000", "100", "1000", "3600", "1", "big",
                "3", "20"
            ]
        );
    }

    fn reply(claimed: Value, dropped: Value, last: Value, missing: Value) -> Value {
        Value::Array(vec![
            claimed,
            dropped,
            last,
            missing,
            Value::Int(0),
            Value::Int(0),
            bulks(&["acme", "running_cap", "default", "paused"]),
        ])
    }

    #[test]
    fn a_full_reply_is_read() {
        let claimed = Value::Array(vec![
            bulk("2"),
            bulk("1-0"),
            bulk("job-a"),
            bulk("1700000000000001"),
            bulk("2"),
            bulk("{\"v\":1}"),
            bulk("1699"),
            bulk("1"),
        ]);
        let dropped = bulks(&[
            "1",
            "2-0",
            "duplicate",
            "",
            "3",
            "3-0",
            "requeued",
            "",
            "2",
            "4-0",
            "dead_lettered",
            "missing_field",
        ]);
        let r = claim(ClaimMode::Reclaim { min_idle_ms: 1 })
            .parse(reply(claimed, dropped, Value::Array(vec![]), bulks(&["3"])))
            .expect("valid");
        let c = &r.batch.claimed[0];
        assert_eq!(
            c.lease,
            Lease {
                job_id: "job-a".into(),
                priority: Priority::Normal,
                entry: "1-0".into(),
                token: 1_700_000_000_000_001,
            }
        );
        assert_eq!((c.attempts, c.enqueued_at_ms), (2, 1699));
        assert_eq!(c.spec_json, b"{\"v\":1}");
        assert!(c.cancel_requested);
        let reasons: Vec<_> = r.batch.dropped.iter().map(|d| d.reason).collect();
        assert_eq!(
            reasons,
            [
                DropReason::Duplicate,
                DropReason::Requeued,
                DropReason::DeadLettered(DeadLetterReason::MissingField)
            ]
        );
        assert_eq!(r.batch.dropped[1].priority, Priority::Low);
        assert_eq!(r.batch.last_ids, None);
        assert_eq!(r.missing, [Priority::Low]);
        assert_eq!(
            r.batch.skipped,
            [
                ("acme".to_owned(), "running_cap"),
                ("default".to_owned(), "paused")
            ]
        );
    }

    #[test]
    fn an_idle_reply_carries_the_last_ids() {
        let empty = || Value::Array(vec![]);
        let r = claim(ClaimMode::New {
            order: &Priority::ALL,
        })
        .parse(reply(
            empty(),
            empty(),
            bulks(&["1-0", "0-0", "7-3", "9-0"]),
            empty(),
        ))
        .expect("valid");
        assert!(r.batch.claimed.is_empty());
        assert_eq!(
            r.batch.last_ids,
            Some(["1-0".into(), "0-0".into(), "7-3".into(), "9-0".into()])
        );
    }

    #[test]
    fn a_paused_reply_is_read() {
        let empty = || Value::Array(vec![]);
        let r = claim(ClaimMode::New {
            order: &Priority::ALL,
        })
        .parse(Value::Array(vec![
            empty(),
            empty(),
            empty(),
            empty(),
            Value::Int(1),
            Value::Int(0),
            empty(),
        ]))
        .expect("valid");
        assert!(r.batch.paused);
        assert!(r.batch.claimed.is_empty());
        assert_eq!(
            r.batch.last_ids, None,
            "a paused worker polls, it does not block"
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let call = claim(ClaimMode::New {
            order: &Priority::ALL,
        });
        let empty = || Value::Array(vec![]);
        let cases = [
            (Value::Int(1), "expected 7 parts"),
            (
                Value::Array(vec![empty(), empty()]),
                "expected 7 parts, got 2",
            ),
            (
                reply(bulks(&["2", "1-0"]), empty(), empty(), empty()),
                "2 values of claimed",
            ),
            (
                reply(
                    empty(),
                    bulks(&["1", "1-0", "vanished", ""]),
                    empty(),
                    empty(),
                ),
                "unknown drop reason \"vanished\"",
            ),
            (
                reply(
                    empty(),
                    bulks(&["1", "1-0", "dead_lettered", "malformed_entry"]),
                    empty(),
                    empty(),
                ),
                "unknown dead-letter reason",
            ),
            (
                reply(empty(), empty(), bulks(&["1-0"]), empty()),
                "1 last ids for 4",
            ),
            (
                reply(empty(), empty(), empty(), bulks(&["9"])),
                "out of range",
            ),
        ];
        for (reply, want) in cases {
            let e = call.parse(reply.clone()).expect_err(want);
            assert!(e.to_string().contains(want), "{reply:?}: {e}");
        }
        let mut claimed = vec![bulk("1"), bulk("1-0"), bulk("a"), bulk("not a token")];
        claimed.extend([bulk("1"), bulk("{}"), bulk("0"), bulk("")]);
        assert!(call
            .parse(reply(Value::Array(claimed), empty(), empty(), empty()))
            .is_err());
    }
}
