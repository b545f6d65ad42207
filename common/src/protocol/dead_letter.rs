//! Why a job or a stream entry was dead-lettered: the `reason` field of `qs:{Q}:dlq` entries and
//! the `reason` label of the dead-letter and rejection metrics, one list for the scripts'
//! callers, the metrics and `docs/protocol.md` (tested against it).

use serde::{Deserialize, Serialize};

use crate::outcome::Status;

/// Every reason a dead letter can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The job's workers died (its lease expired) `max_attempts` times.
    AttemptsExhausted,
    /// Its sandbox kept failing for infrastructure reasons for longer than
    /// `retry.give_up_after_ms`.
    InfraTimeout,
    /// An infrastructure error a retry cannot fix.
    PermanentError,
    /// The spec is not JSON.
    NotJson,
    /// The spec has no `v`, or another one.
    BadVersion,
    /// A spec field of the wrong type, or an unknown field.
    BadSchema,
    /// A required spec field, or an entry's `id`/`job`, is missing.
    MissingField,
    /// The configuration refuses the spec, or the entry's id is not a valid job id.
    InvalidSpec,
    /// The entry's `id` and the spec's differ.
    IdMismatch,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 9] = [
        Self::AttemptsExhausted,
        Self::InfraTimeout,
        Self::PermanentError,
        Self::NotJson,
        Self::BadVersion,
        Self::BadSchema,
        Self::MissingField,
        Self::InvalidSpec,
        Self::IdMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::InfraTimeout => "infra_timeout",
            Self::PermanentError => "permanent_error",
            Self::NotJson => "not_json",
            Self::BadVersion => "bad_version",
            Self::BadSchema => "bad_schema",
            Self::MissingField => "missing_field",
            Self::InvalidSpec => "invalid_spec",
            Self::IdMismatch => "id_mismatch",
        }
    }

    /// The job's own fault (it is refused as invalid), as opposed to infrastructure giving up.
    pub fn is_rejection(self) -> bool {
        !matches!(
            self,
            Self::AttemptsExhausted | Self::InfraTimeout | Self::PermanentError
        )
    }

    /// The terminal status a job dead-lettered for this reason ends with.
    pub fn status(self) -> Status {
        if self.is_rejection() {
            Status::Rejected
        } else {
            Status::Dead
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeadLetterReason {
    type Err = String;
    /// Reads a reason by the name serde gives it (the same as [`DeadLetterReason::as_str`],
    /// tested).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::from(s))
            .map_err(|_| format!("unknown dead-letter reason {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for r in DeadLetterReason::ALL {
            assert_eq!(r.as_str().parse::<DeadLetterReason>(), Ok(r));
            assert_eq!(
                serde_json::to_value(r).expect("serializes"),
                serde_json::json!(r.as_str())
            );
        }
        assert!("malformed_entry".parse::<DeadLetterReason>().is_err());
    }

    #[test]
    fn infrastructure_reasons_end_dead_and_the_rest_rejected() {
        let dead: Vec<_> = DeadLetterReason::ALL
            .into_iter()
            .filter(|r| r.status() == Status::Dead)
            .map(DeadLetterReason::as_str)
            .collect();
        assert_eq!(
            dead,
            ["attempts_exhausted", "infra_timeout", "permanent_error"]
        );
    }

    /// The reasons in the table of `docs/protocol.md`'s "Dead letters" section.
    fn documented() -> BTreeSet<String> {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md"),
        )
        .expect("docs/protocol.md");
        let sections: Vec<&str> = doc.split("\n## ").collect();
        let dead: Vec<&&str> = sections
            .iter()
            .filter(|s| s.starts_with("Dead letters\n"))
            .collect();
        assert_eq!(dead.len(), 1, "one \"Dead letters\" section");
        dead[0]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`'))
            .map(|(reason, _)| reason.to_owned())
            .collect()
    }

    #[test]
    fn the_protocol_doc_lists_exactly_these_reasons() {
        let ours: BTreeSet<String> = DeadLetterReason::ALL
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        assert_eq!(documented(), ours);
    }
}
