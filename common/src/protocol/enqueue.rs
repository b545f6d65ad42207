//! `enqueue.lua`: add jobs, idempotently (an id that exists is reported, not queued again).

use std::collections::BTreeMap;

use redis::Value;

use super::reply::Reader;
use super::{stream_index, Args, Call, ReplyError};
use crate::config::TenantConfig;
use crate::job::{JobSpec, Priority};
use crate::keys::Keys;
use crate::outcome::Status;
use crate::scripts::ScriptName;
use crate::wire::encode_spec;

/// The enqueue script's arguments: the jobs of one call.
#[derive(Clone, Copy, Debug)]
pub struct Enqueue<'a> {
    pub specs: &'a [JobSpec],
    /// `queue.max_depth` (0: unlimited).
    pub max_depth: u64,
    /// The result TTL of a job that carries none.
    pub default_ttl_s: u64,
    /// The configured tenants: their queued caps travel with their jobs.
    pub tenants: &'a BTreeMap<String, TenantConfig>,
}

/// What the script did with one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnqueueAnswer {
    /// Queued under this stream entry.
    New { entry: String },
    /// A job with this id exists, in this state; nothing was added.
    Exists(Status),
    /// A member of its batch whose record has expired (it ran and ended long ago); nothing was
    /// added.
    Expired,
    /// The queue holds `max_depth` entries; nothing was added.
    Full,
    /// Its tenant has `queued` jobs waiting and may have at most `cap`; no job of that tenant
    /// in this call was added.
    TenantFull { queued: u64, cap: u64 },
}

impl Enqueue<'_> {
    pub fn call(&self, keys: &Keys) -> Call<Vec<EnqueueAnswer>> {
        let mut args = Args::new(keys).arg(self.max_depth).arg(self.specs.len());
        for s in self.specs {
            args = args
                .arg(s.id.as_str())
                .arg(stream_index(s.priority))
                .arg(encode_spec(s))
                .arg(s.batch.as_deref().unwrap_or(""))
                .arg(s.result_ttl_s.unwrap_or(self.default_ttl_s))
                .arg(s.tenant.as_deref().unwrap_or(""))
                .arg(
                    s.tenant
                        .as_deref()
                        .and_then(|t| self.tenants.get(t))
                        .map_or(0, |t| t.max_queued),
                );
        }
        let n = self.specs.len();
        let key = keys.stream(Priority::Normal);
        Call::per_item(ScriptName::Enqueue, vec![key], args, n, answer)
    }
}

fn answer(r: Reader, answer: &Value) -> Result<EnqueueAnswer, ReplyError> {
    let a = r.text(answer)?;
    if let Some(entry) = a.strip_prefix("new:") {
        return Ok(EnqueueAnswer::New {
            entry: entry.to_owned(),
        });
    }
    if let Some(rest) = a.strip_prefix("tenant_full:") {
        let mut parts = rest.split(':').map(str::parse::<u64>);
        if let (Some(Ok(queued)), Some(Ok(cap)), None) = (parts.next(), parts.next(), parts.next())
        {
            return Ok(EnqueueAnswer::TenantFull { queued, cap });
        }
        return Err(r.error(format!("unknown answer {a:?}")));
    }
    match a.as_str() {
        "full" => Ok(EnqueueAnswer::Full),
        "exists:expired" => Ok(EnqueueAnswer::Expired),
        _ => match a.strip_prefix("exists:") {
            Some(state) => state
                .parse()
                .map(EnqueueAnswer::Exists)
                .map_err(|e: String| r.error(e)),
            None => Err(r.error(format!("unknown answer {a:?}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobKind;
    use crate::protocol::testing::{bulks, keys, text};

    fn specs() -> Vec<JobSpec> {
        let mut a = JobSpec::new(JobKind::Run, "c", [("a.c".into(), "x".into())].into());
        a.id = crate::JobId::parse("a").expect("id");
        let mut b = a.clone();
        b.id = crate::JobId::parse("b").expect("id");
        b.priority = Priority::High;
        b.batch = Some("nightly".into());
        b.result_ttl_s = Some(7200);
        b.tenant = Some("acme".into());
        vec![a, b]
    }

    impl Enqueue<'_> {
        /// The call for `specs` on queue `q`, at most 10 deep, 3600 s results by default.
        fn call_for(specs: &[JobSpec]) -> Call<Vec<EnqueueAnswer>> {
            let acme = TenantConfig {
                max_queued: 50,
                ..TenantConfig::default()
            };
            Enqueue {
                specs,
                max_depth: 10,
                default_ttl_s: 3600,
                tenants: &[("acme".to_owned(), acme)].into(),
            }
            .call(&keys())
        }
    }

    #[test]
    fn each_job_is_seven_arguments() {
        let specs = specs();
        let args = text(&Enqueue::call_for(&specs));
        assert_eq!(args[..3], ["qs:{q}:", "10", "2"]);
        assert_eq!(args[3..5], ["a", "2"]);
        assert_eq!(args[6..10], ["", "3600", "", "0"], "default tenant: no cap");
        assert_eq!(args[10..12], ["b", "1"]);
        assert_eq!(args[13..], ["nightly", "7200", "acme", "50"]);
        let spec: JobSpec = serde_json::from_str(&args[12]).expect("spec JSON");
        assert_eq!(spec.id.as_str(), "b");
    }

    #[test]
    fn answers_are_read_one_per_job() {
        let specs = specs();
        let call = Enqueue::call_for(&specs);
        assert_eq!(
            call.parse(bulks(&["new:1-0", "exists:running"])),
            Ok(vec![
                EnqueueAnswer::New {
                    entry: "1-0".into()
                },
                EnqueueAnswer::Exists(Status::Running)
            ])
        );
        assert_eq!(
            call.parse(bulks(&["exists:expired", "full"])),
            Ok(vec![EnqueueAnswer::Expired, EnqueueAnswer::Full])
        );
        assert_eq!(
            call.parse(bulks(&["new:1-0", "tenant_full:50:50"])),
            Ok(vec![
                EnqueueAnswer::New {
                    entry: "1-0".into()
                },
                EnqueueAnswer::TenantFull {
                    queued: 50,
                    cap: 50
                }
            ])
        );
        for bad in [
            bulks(&["new:1-0"]),
            bulks(&["new:1-0", "exists:bogus"]),
            bulks(&["new:1-0", "queued"]),
            bulks(&["new:1-0", "tenant_full:5"]),
            Value::Int(2),
        ] {
            assert!(call.parse(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
