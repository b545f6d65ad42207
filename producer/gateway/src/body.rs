//! Request bodies: JSON parsing with errors that name the field, and the job spec as the
//! gateway accepts it (`v` and `id` optional: filled with `1` and a fresh UUIDv7).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use quayside_common::config::Config;
use quayside_common::job::PROTOCOL_VERSION;
use quayside_common::{admission, JobId, JobSpec};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// The body as JSON. An absent content type is taken as JSON; any other than `application/json`
/// (or `+json`) is `415`; a body over the limit is `413`; unparsable JSON is `422`.
pub(super) fn json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("content type {essence:?} is not supported; send application/json"),
            ));
        }
    }
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the gateway accepts (gateway.max_body_bytes)",
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "malformed_json",
            "",
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(
            "malformed_json",
            "",
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// Deserializes `value` into `T`; a mismatch is `422 bad_schema` naming the field (or
/// `missing_field` for a required one left out), prefixed with `prefix` (`jobs[3].` inside a
/// batch).
pub(super) fn typed<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ApiError> {
    // Serde reads a struct from an array too (`[a, b]` as its fields in order): refuse that.
    if let Some(path) = struct_as_array(&value, prefix) {
        return Err(ApiError::invalid(
            "bad_schema",
            &path,
            format!("{path}: expected a JSON object, got an array"),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        // Serde names a missing or unknown field only in its message, at the parent's path.
        let named = inner
            .split('`')
            .nth(1)
            .filter(|_| inner.starts_with("missing field") || inner.starts_with("unknown field"));
        // An unknown field's path already ends with it; a missing one's is its parent's.
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => String::new(),
            (p, Some(name)) if !p.ends_with(name) => format!("{p}.{name}"),
            (p, _) => p.to_owned(),
        };
        let field = format!("{prefix}{field}");
        let field = field.trim_end_matches('.').to_owned();
        // A required field left out is `missing_field`, as a worker dead-letters it.
        let kind = if inner.starts_with("missing field") {
            "missing_field"
        } else {
            "bad_schema"
        };
        let message = if field.is_empty() {
            inner
        } else {
            format!("{field}: {inner}")
        };
        ApiError::invalid(kind, field, message)
    })
}

/// The first place where an array stands for an object (the body itself, or a job's
/// `limits`), as a field path.
fn struct_as_array(value: &Value, prefix: &str) -> Option<String> {
    let root = prefix.trim_end_matches('.').to_owned();
    match value {
        Value::Array(_) => Some(root),
        Value::Object(o) if o.get("limits").is_some_and(Value::is_array) => {
            Some(format!("{prefix}limits"))
        }
        _ => None,
    }
}

/// A job spec from a request: `v` defaults to 1 and `id` to a fresh UUIDv7; then the shape is
/// checked and the spec is admitted against `cfg` (language, sizes, limits), exactly as a
/// worker would, so a job the workers would reject is refused here with `422`.
pub(super) fn job(
    mut value: Value,
    prefix: &str,
    cfg: &Config,
    tenant: Option<&str>,
) -> Result<JobSpec, ApiError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::invalid(
            "bad_schema",
            prefix.trim_end_matches('.'),
            "a job spec must be a JSON object",
        ));
    };
    match obj.get("v") {
        None => {
            obj.insert("v".into(), PROTOCOL_VERSION.into());
        }
        Some(v) if v.as_u64().is_some_and(|v| v != u64::from(PROTOCOL_VERSION)) => {
            return Err(ApiError::invalid(
                "bad_version",
                format!("{prefix}v"),
                format!("{prefix}v: unsupported protocol version {v} (this gateway speaks v={PROTOCOL_VERSION})"),
            ));
        }
        Some(_) => {}
    }
    if !obj.contains_key("id") {
        obj.insert("id".into(), JobId::generate().as_str().into());
    }
    let mut spec: JobSpec = typed(value, prefix)?;
    if spec.tenant.is_some() && spec.tenant.as_deref() != tenant {
        // A caller's tenant comes from its token, never from what it writes.
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_mismatch",
            format!(
                "{prefix}tenant: your token acts as {}; leave the field out",
                tenant.map_or("the default tenant".to_owned(), |t| format!("tenant {t:?}"))
            ),
        );
        e.body.field = Some(format!("{prefix}tenant"));
        return Err(e);
    }
    spec.tenant = tenant.map(str::to_owned);
    spec.validate_shape()
        .map_err(|e| ApiError::spec(prefix, &e))?;
    admission::check(cfg, &spec).map_err(|e| ApiError::spec(prefix, &e))?;
    Ok(spec)
}

/// A path's job or batch id, `422` naming `id` when it could never be one.
pub(super) fn id(raw: &str) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|e| ApiError::spec("", &e))
}

/// An optional boolean query parameter: `true` or `false`.
pub(super) fn flag(raw: Option<&str>, name: &str, default: bool) -> Result<bool, ApiError> {
    match raw {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ApiError::invalid(
            "invalid_parameter",
            name,
            format!("{name}: expected true or false, got {other:?}"),
        )),
    }
}

/// An optional whole-number query parameter within `min..=max`.
pub(super) fn number(
    raw: Option<&str>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            "invalid_parameter",
            name,
            format!("{name}: expected a whole number from {min} to {max}, got {raw:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::load(None).expect("defaults")
    }

    #[test]
    fn v_and_id_are_filled_in() {
        let spec = job(
            serde_json::json!({"kind": "run", "language": "python", "files": {"main.py": "print(1)"}}),
            "",
            &cfg(),
            None,
        )
        .expect("valid");
        assert_eq!(spec.v, 1);
        JobId::parse(spec.id.as_str()).expect("generated id");
    }

    #[test]
    fn the_tenant_is_the_tokens_and_a_body_cannot_name_another() {
        let body = |tenant: Option<&str>| {
            let mut v =
                serde_json::json!({"kind": "run", "language": "python", "files": {"main.py": "1"}});
            if let Some(t) = tenant {
                v["tenant"] = t.into();
            }
            v
        };
        let spec = job(body(None), "", &cfg(), Some("acme")).expect("from the token");
        assert_eq!(spec.tenant.as_deref(), Some("acme"));
        let spec = job(body(Some("acme")), "", &cfg(), Some("acme")).expect("the same tenant");
        assert_eq!(spec.tenant.as_deref(), Some("acme"));
        let spec = job(body(None), "", &cfg(), None).expect("default tenant");
        assert_eq!(spec.tenant, None);
        for (named, token) in [(Some("beta"), Some("acme")), (Some("acme"), None)] {
            let e = job(body(named), "jobs[2].", &cfg(), token).expect_err("another tenant");
            assert_eq!(
                (e.status, e.body.error, e.body.field.as_deref()),
                (
                    StatusCode::FORBIDDEN,
                    "tenant_mismatch",
                    Some("jobs[2].tenant")
                )
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                serde_json::json!({"language": "c", "files": {"a.c": ""}}),
                "missing_field",
                "kind",
            ),
            (
                serde_json::json!({"kind": "run", "langauge": "c", "language": "c", "files": {"a.c": ""}}),
                "bad_schema",
                "langauge",
            ),
            (
                serde_json::json!({"kind": "run", "language": "c", "files": {"a.c": ""}, "limits": {"pids": "x"}}),
                "bad_schema",
                "limits.pids",
            ),
            (
                serde_json::json!({"kind": "run", "language": "c", "files": {"../a.c": ""}}),
                "invalid_spec",
                "files[\"../a.c\"]",
            ),
            (
                serde_json::json!({"kind": "run", "language": "cobol", "files": {"a.c": ""}}),
                "invalid_spec",
                "language",
            ),
            (
                serde_json::json!({"kind": "run", "language": "c", "files": {"a.c": ""}, "limits": {"pids": 100000}}),
                "invalid_spec",
                "limits.pids",
            ),
            (
                serde_json::json!({"v": 2, "kind": "run", "language": "c", "files": {"a.c": ""}}),
                "bad_version",
                "v",
            ),
            (
                serde_json::json!({"id": "a b", "kind": "run", "language": "c", "files": {"a.c": ""}}),
                "invalid_spec",
                "id",
            ),
        ];
        for (value, kind, field) in cases {
            let e = job(value.clone(), "", &cfg(), None).expect_err(&value.to_string());
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(
                (e.body.error, e.body.field.as_deref()),
                (kind, Some(field)),
                "{value}: {}",
                e.body.message
            );
            assert!(e.body.message.contains(field), "{}", e.body.message);
        }
        let e = job(
            serde_json::json!({"kind": "run", "language": "c", "files": {"a.c": ""}, "limits": [null]}),
            "",
            &cfg(),
            None,
        )
        .expect_err("limits as an array");
        assert_eq!(
            e.body.field.as_deref(),
            Some("limits"),
            "{}",
            e.body.message
        );
        let e =
            job(serde_json::json!({"kind": 1}), "jobs[2].", &cfg(), None).expect_err("bad kind");
        assert_eq!(
            e.body.field.as_deref(),
            Some("jobs[2].kind"),
            "{}",
            e.body.message
        );
    }

    #[test]
    fn malformed_and_foreign_bodies_are_refused() {
        let h = HeaderMap::new();
        let e = json(&h, Ok(Bytes::from_static(b"{\"kind\": "))).expect_err("truncated");
        assert_eq!(
            (e.status, e.body.error),
            (StatusCode::UNPROCESSABLE_ENTITY, "malformed_json")
        );
        let e = json(&h, Ok(Bytes::new())).expect_err("empty");
        assert!(e.body.message.contains("empty"), "{}", e.body.message);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "text/plain".parse().expect("header"));
        let e = json(&h, Ok(Bytes::from_static(b"{}"))).expect_err("text");
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
