//! `repair.lua`: check (and repair) job records that can no longer reach their next step, or
//! whose keys would never expire.

use redis::Value;
use serde::Serialize;

use super::reply::Reader;
use super::{Args, Call, ReplyError};
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// The repair script's arguments: one chunk of record ids.
#[derive(Clone, Copy, Debug)]
pub struct Repair<'a> {
    /// Put each problem right, or only report it.
    pub repair: bool,
    /// TTL of an ended job's keys when its record carries none.
    pub default_ttl_s: u64,
    pub ids: &'a [&'a str],
}

/// A problem of one record (see `common/lua/repair.lua`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Queued, but its entry is gone from its stream: no worker will ever see it.
    QueuedEntryGone,
    /// Queued, its entry is there, but the group has moved past it without delivering it.
    QueuedEntrySkipped,
    /// Queued in a tenant's lane, but the lane is not in its priority's rotation: no claim
    /// would find it.
    QueuedLaneIdle,
    /// Running, but its entry is gone or pending for no worker: no worker can take it over.
    RunningEntryGone,
    /// Waiting for a retry, but not in the delayed set.
    DelayedUnscheduled,
    /// Ended, but its record or log has no TTL.
    EndedWithoutTtl,
}

impl Problem {
    pub const ALL: [Problem; 6] = [
        Self::QueuedEntryGone,
        Self::QueuedEntrySkipped,
        Self::QueuedLaneIdle,
        Self::RunningEntryGone,
        Self::DelayedUnscheduled,
        Self::EndedWithoutTtl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueuedEntryGone => "queued_entry_gone",
            Self::QueuedEntrySkipped => "queued_entry_skipped",
            Self::QueuedLaneIdle => "queued_lane_idle",
            Self::RunningEntryGone => "running_entry_gone",
            Self::DelayedUnscheduled => "delayed_unscheduled",
            Self::EndedWithoutTtl => "ended_without_ttl",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Repair<'_> {
    /// The records with a problem: id and problem.
    pub fn call(&self, keys: &Keys) -> Call<Vec<(String, Problem)>> {
        let mut args = Args::new(keys)
            .arg(if self.repair { "repair" } else { "check" })
            .arg(self.default_ttl_s);
        for id in self.ids {
            args = args.arg(*id);
        }
        Call::new(ScriptName::Repair, vec![keys.delayed()], args, parse)
    }
}

const R: Reader = Reader("repair");

fn parse(reply: Value) -> Result<Vec<(String, Problem)>, ReplyError> {
    R.records(&reply, 2)?
        .map(|pair| {
            let problem = R.text(&pair[1])?;
            let problem = Problem::ALL
                .into_iter()
                .find(|p| p.as_str() == problem)
                .ok_or_else(|| R.error(format!("unknown finding {problem:?}")))?;
            Ok((R.text(&pair[0])?, problem))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{bulks, keys, text};

    #[test]
    fn ids_go_in_chunks_and_findings_come_back_in_pairs() {
        let call = Repair {
            repair: true,
            default_ttl_s: 60,
            ids: &["a", "b"],
        }
        .call(&keys());
        assert_eq!(text(&call), ["qs:{q}:", "repair", "60", "a", "b"]);
        assert_eq!(
            call.parse(bulks(&["a", "queued_entry_gone", "b", "ended_without_ttl"])),
            Ok(vec![
                ("a".into(), Problem::QueuedEntryGone),
                ("b".into(), Problem::EndedWithoutTtl)
            ])
        );
        assert!(call.parse(bulks(&["a"])).is_err());
        assert!(call.parse(bulks(&["a", "haunted"])).is_err());
        let check = Repair {
            repair: false,
            default_ttl_s: 60,
            ids: &[],
        }
        .call(&keys());
        assert_eq!(text(&check)[1], "check");
    }

    #[test]
    fn problems_print_and_serialize_as_the_script_names_them() {
        for p in Problem::ALL {
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(
                serde_json::to_value(p).expect("serializes"),
                serde_json::json!(p.as_str())
            );
        }
        assert_eq!(
            format!("{:<20}|", Problem::QueuedEntryGone),
            "queued_entry_gone   |"
        );
    }
}
