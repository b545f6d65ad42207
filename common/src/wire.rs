//! JSON encoding of specs and results, with decode errors specific enough to dead-letter on.

use crate::job::{JobSpec, SpecError, PROTOCOL_VERSION};
use crate::outcome::JobResult;
use crate::protocol::DeadLetterReason;

/// Why a stream entry or record could not be decoded. Each variant is a dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload is not valid JSON ({0})")]
    NotJson(String),
    #[error("payload has no numeric `v` field")]
    MissingVersion,
    #[error("unsupported protocol version v={0} (this build speaks v={PROTOCOL_VERSION})")]
    Version(u64),
    /// Serde's message names the field: ``unknown field `langauge` ``, ``invalid type ...``.
    #[error("invalid job spec: {0}")]
    Schema(String),
    /// A required field of the spec is absent: ``missing field `kind` ``.
    #[error("invalid job spec: {0}")]
    SpecMissingField(String),
    #[error("invalid job spec: {0}")]
    Invalid(#[from] SpecError),
    #[error("stream entry has no `{0}` field")]
    MissingField(&'static str),
    #[error("entry id {entry} names job {entry_id:?} but its payload says {payload_id:?}")]
    IdMismatch {
        entry: String,
        entry_id: String,
        payload_id: String,
    },
}

impl WireError {
    /// The dead-letter reason (and metric label) of an entry that fails to decode this way.
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            Self::NotJson(_) => DeadLetterReason::NotJson,
            Self::MissingVersion | Self::Version(_) => DeadLetterReason::BadVersion,
            Self::Schema(_) => DeadLetterReason::BadSchema,
            Self::Invalid(_) => DeadLetterReason::InvalidSpec,
            Self::MissingField(_) | Self::SpecMissingField(_) => DeadLetterReason::MissingField,
            Self::IdMismatch { .. } => DeadLetterReason::IdMismatch,
        }
    }
}

/// Decodes and shape-checks a job spec; the version is checked before the schema so an old
/// worker tells a newer producer "unsupported version" rather than a confusing field error.
///
/// # Errors
/// The first problem found, as a [`WireError`].
pub fn decode_spec(json: &[u8]) -> Result<JobSpec, WireError> {
    // Fast path: a well-formed current spec parses in one pass. Anything else is parsed again
    // step by step, to say precisely what is wrong.
    if let Ok(spec) = serde_json::from_slice::<JobSpec>(json) {
        if spec.v == PROTOCOL_VERSION {
            spec.validate_shape()?;
            return Ok(spec);
        }
    }
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| WireError::NotJson(e.to_string()))?;
    let v = value
        .get("v")
        .and_then(serde_json::Value::as_u64)
        .ok_or(WireError::MissingVersion)?;
    if v != u64::from(PROTOCOL_VERSION) {
        return Err(WireError::Version(v));
    }
    let spec: JobSpec = serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("missing field") {
            WireError::SpecMissingField(msg)
        } else {
            WireError::Schema(msg)
        }
    })?;
    spec.validate_shape()?;
    Ok(spec)
}

pub fn encode_spec(spec: &JobSpec) -> String {
    serde_json::to_string(spec).expect("a JobSpec always serializes")
}

/// # Errors
/// The stored result is not a valid result document.
pub fn decode_result(json: &[u8]) -> Result<JobResult, WireError> {
    serde_json::from_slice(json).map_err(|e| WireError::Schema(e.to_string()))
}

pub fn encode_result(result: &JobResult) -> String {
    serde_json::to_string(result).expect("a JobResult always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobKind, JobSpec};

    fn good() -> JobSpec {
        JobSpec::new(
            JobKind::Run,
            "python",
            [("main.py".into(), "print(1)".into())].into(),
        )
    }

    #[test]
    fn round_trip() {
        let spec = good();
        assert_eq!(decode_spec(encode_spec(&spec).as_bytes()), Ok(spec));
    }

    #[test]
    fn each_malformation_has_its_own_reason() {
        let cases: [(&str, &str); 6] = [
            ("{not json", "not_json"),
            (r#"{"id":"a"}"#, "bad_version"),
            (r#"{"v":9,"id":"a"}"#, "bad_version"),
            (
                r#"{"v":1,"id":"a","language":"c","files":{"a.c":""}}"#,
                "missing_field",
            ),
            (
                r#"{"v":1,"id":"a","kind":"run","language":"c","files":{"a.c":""},"langauge":"x"}"#,
                "bad_schema",
            ),
            (
                r#"{"v":1,"id":"a","kind":"run","language":"c","files":{"../a.c":""}}"#,
                "invalid_spec",
            ),
        ];
        for (json, label) in cases {
            let err = decode_spec(json.as_bytes()).expect_err(json);
            assert_eq!(err.reason().as_str(), label, "{json}: {err}");
        }
    }

    #[test]
    fn schema_errors_name_the_field() {
        let err =
            decode_spec(br#"{"v":1,"id":"a","language":"c","files":{}}"#).expect_err("no kind");
        assert!(err.to_string().contains("missing field `kind`"), "{err}");
    }
}
