//! `replay.lua`: queue a dead-lettered job again with a fresh attempt budget.

use redis::Value;
use serde::Serialize;

use super::reply::Reader;
use super::{Args, Call, ReplyError};
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// The replay script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Replay<'a> {
    /// The dead letter's entry id in the dead-letter stream.
    pub entry: &'a str,
}

/// What replaying a dead letter did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayOutcome {
    Queued,
    Missing,
    /// The letter has no job id or spec (e.g. a malformed entry): nothing to run.
    Unreplayable,
    /// The job was queued again some other way; the letter was kept.
    Busy {
        state: String,
    },
}

impl Replay<'_> {
    pub fn call(&self, keys: &Keys) -> Call<ReplayOutcome> {
        let args = Args::new(keys).arg(self.entry);
        Call::new(ScriptName::Replay, vec![keys.dlq()], args, parse)
    }
}

const R: Reader = Reader("replay");

fn parse(reply: Value) -> Result<ReplayOutcome, ReplyError> {
    let answer = R.text(&reply)?;
    match answer.as_str() {
        "queued" => Ok(ReplayOutcome::Queued),
        "missing" => Ok(ReplayOutcome::Missing),
        "unreplayable" => Ok(ReplayOutcome::Unreplayable),
        other => match other.strip_prefix("busy:") {
            Some(state) => Ok(ReplayOutcome::Busy {
                state: state.to_owned(),
            }),
            None => Err(R.error(format!("unknown answer {other:?}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{bulk, keys, text};

    #[test]
    fn every_answer_is_read() {
        let call = Replay { entry: "9-1" }.call(&keys());
        assert_eq!(text(&call), ["qs:{q}:", "9-1"]);
        let read = |s: &str| call.parse(bulk(s));
        assert_eq!(read("queued"), Ok(ReplayOutcome::Queued));
        assert_eq!(read("missing"), Ok(ReplayOutcome::Missing));
        assert_eq!(read("unreplayable"), Ok(ReplayOutcome::Unreplayable));
        assert_eq!(
            read("busy:running"),
            Ok(ReplayOutcome::Busy {
                state: "running".into()
            })
        );
        assert!(read("queued again").is_err());
    }
}
