//! `/v1/batches`: many jobs under one batch id, enqueued pipelined; counters, members, cancel.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use quayside_common::config::Config;
use quayside_common::{JobId, JobResult, JobSpec, Status};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::{body, owner, Gateway};
use quayside_producer::{BatchStatus, Enqueued, Error};

/// Batches `GET /v1/batches` lists by default, and at most.
const LIST_DEFAULT: u64 = 20;
const LIST_MAX: u64 = 200;

/// Members listed per `GET /v1/batches/{id}?results=true` page, at most.
const MAX_PAGE: u64 = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    id: Option<String>,
    jobs: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct BatchEnqueued {
    id: String,
    total: usize,
    /// Jobs added now; the others existed already (idempotent re-post).
    created: usize,
    jobs: Vec<Enqueued>,
}

/// The batch id (generated when absent) and its specs, each checked as `POST /v1/jobs` would,
/// with its `batch` set to the batch id.
pub(super) fn check(
    value: serde_json::Value,
    cfg: &Config,
    tenant: Option<&str>,
) -> Result<Checked, ApiError> {
    let req: BatchRequest = body::typed(value, "")?;
    let batch = match &req.id {
        Some(raw) => body::id(raw)?,
        None => JobId::generate(),
    };
    let max = cfg.gateway.max_batch_jobs;
    if req.jobs.is_empty() || req.jobs.len() > max {
        return Err(ApiError::invalid(
            "invalid_spec",
            "jobs",
            format!(
                "jobs: a batch holds 1 to {max} jobs (gateway.max_batch_jobs), got {}",
                req.jobs.len()
            ),
        ));
    }
    let mut specs = Vec::with_capacity(req.jobs.len());
    let mut given_ids = Vec::new();
    for (i, mut value) in req.jobs.into_iter().enumerate() {
        let prefix = format!("jobs[{i}].");
        // A job without an id gets one from the batch id, its name (its `name` label, else its
        // place, as in a `quayside batch` manifest) and its content, so posting the same batch
        // again adds nothing and a job whose content changed runs again.
        let mut member_name = None;
        if let Some(obj) = value.as_object_mut() {
            if !obj.contains_key("id") {
                member_name = Some(
                    obj.get("labels")
                        .and_then(|l| l.get(quayside_producer::NAME_LABEL))
                        .and_then(|n| n.as_str())
                        .map_or_else(|| format!("line {}", i + 1), str::to_owned),
                );
            }
            match obj.get("batch") {
                Some(b) if b.as_str() != Some(batch.as_str()) => {
                    return Err(ApiError::invalid(
                        "invalid_spec",
                        format!("{prefix}batch"),
                        format!("{prefix}batch: must be absent or the batch id \"{batch}\""),
                    ))
                }
                _ => {
                    obj.insert("batch".into(), batch.as_str().into());
                }
            }
        }
        let mut spec = body::job(value, &prefix, cfg, tenant)?;
        match member_name {
            Some(name) => {
                spec.id = quayside_producer::batch_member_id(batch.as_str(), &name, &spec)
            }
            None => given_ids.push((spec.id.clone(), format!("{prefix}id"))),
        }
        specs.push(spec);
    }
    Ok(Checked {
        batch,
        specs,
        given_ids,
    })
}

/// A checked batch request.
pub(super) struct Checked {
    pub batch: JobId,
    pub specs: Vec<JobSpec>,
    /// The ids the caller chose, with their fields (`jobs[3].id`); the others derive from the
    /// batch id.
    pub given_ids: Vec<(JobId, String)>,
}

/// `POST /v1/batches`: `{"id"?, "jobs": [spec, ...]}`. Every spec is checked first (nothing is
/// enqueued if one is invalid; errors name `jobs[i].field`), then all are enqueued pipelined.
/// `201` when any job was added, `200` when every id existed already.
pub(super) async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant.as_deref();
    let Checked {
        batch,
        specs,
        given_ids,
    } = check(body::json(&headers, raw)?, &gw.cfg, tenant)?;
    owner::joinable(&gw, batch.as_str(), tenant, "id").await?;
    owner::ids_free(&gw, &caller, &given_ids).await?;
    let jobs = gw.producer.enqueue_many(&specs).await?;
    let created = jobs.iter().filter(|j| j.created).count();
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/batches/{batch}");
    let out = BatchEnqueued {
        id: batch.as_str().to_owned(),
        total: jobs.len(),
        created,
        jobs,
    };
    Ok((status, [(header::LOCATION, location)], Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ShowQuery {
    results: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

/// One member of a batch as `?results=true` lists it; `state` is absent once its record expired.
#[derive(Debug, Serialize)]
struct Member {
    id: JobId,
    state: Option<Status>,
    result: Option<JobResult>,
}

#[derive(Debug, Serialize)]
struct BatchView {
    #[serde(flatten)]
    status: BatchStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<Vec<Member>>,
}

/// `GET /v1/batches/{id}`: the counters; with `results=true`, also members `offset..offset+limit`
/// (enqueue order) with their state and result.
pub(super) async fn show(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, ApiError> {
    let id = body::id(&id)?;
    let results = body::flag(q.results.as_deref(), "results", false)?;
    let offset = body::number(q.offset.as_deref(), "offset", 0, 0, u64::from(u32::MAX))? as usize;
    let limit = body::number(q.limit.as_deref(), "limit", 100, 1, MAX_PAGE)? as usize;
    let status = owner::batch(&gw, &caller, id.as_str()).await?;
    let jobs = if results {
        let ids = match gw.producer.batch_jobs(id.as_str()).await {
            Ok(ids) => ids,
            // Counters without a member list: a batch from before member lists were kept.
            Err(Error::BatchNotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let page: Vec<JobId> = ids.into_iter().skip(offset).take(limit).collect();
        let records = gw.producer.statuses(&page).await?;
        Some(
            page.into_iter()
                .zip(records)
                .map(|(id, st)| Member {
                    id,
                    state: st.as_ref().map(|s| s.state),
                    result: st.and_then(|s| s.result),
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(Json(BatchView { status, jobs }).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchList {
    batches: Vec<BatchStatus>,
}

/// `GET /v1/batches?limit=N`: the newest batches first, with their counters; a tenant's token
/// sees its tenant's only.
pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = body::number(q.limit.as_deref(), "limit", LIST_DEFAULT, 1, LIST_MAX)? as usize;
    let only = caller.tenant.as_ref().map(|t| Some(t.as_str()));
    let batches = gw.producer.recent_batches(limit, only).await?;
    Ok(Json(BatchList { batches }).into_response())
}

/// `DELETE /v1/batches/{id}`: cancels every job of the batch that has not ended.
pub(super) async fn cancel(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = body::id(&id)?;
    owner::batch(&gw, &caller, id.as_str()).await?;
    Ok(Json(gw.producer.cancel_batch(id.as_str()).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(jobs: serde_json::Value) -> Vec<String> {
        let body = serde_json::json!({ "id": "nightly", "jobs": jobs });
        let cfg = Config {
            languages: quayside_common::config::default_languages(),
            ..Config::default()
        };
        let specs = check(body, &cfg, None).expect("a valid batch").specs;
        specs.into_iter().map(|s| s.id.to_string()).collect()
    }

    fn job(name: &str, source: &str) -> serde_json::Value {
        serde_json::json!({
            "kind": "run", "language": "python",
            "files": { "main.py": source },
            "labels": { "name": name },
        })
    }

    #[test]
    fn member_ids_follow_name_and_content_as_the_cli_derives_them() {
        let first = ids(serde_json::json!([
            job("a", "print(1)"),
            job("b", "print(2)")
        ]));
        let again = ids(serde_json::json!([
            job("a", "print(1)"),
            job("b", "print(2)")
        ]));
        assert_eq!(first, again, "the same batch posted again: the same ids");
        let edited = ids(serde_json::json!([
            job("a", "print(1)"),
            job("b", "print(3)")
        ]));
        assert_eq!(edited[0], first[0], "a did not change");
        assert_ne!(edited[1], first[1], "b changed: a new id, so it runs");
        let mut flagged = job("a", "print(1)");
        flagged["args"] = serde_json::json!(["-v"]);
        assert_ne!(
            ids(serde_json::json!([flagged]))[0],
            first[0],
            "new args: new id"
        );

        // The id `quayside batch --manifest` gives the same line (the same function, over the
        // decoded spec, so spelling a default out changes nothing).
        let mut spelled = job("a", "print(1)");
        spelled["stdin"] = "".into();
        spelled["priority"] = "high".into();
        assert_eq!(ids(serde_json::json!([spelled]))[0], first[0]);
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "v": 1, "id": "any", "kind": "run", "language": "python",
            "files": { "main.py": "print(1)" },
        }))
        .expect("spec");
        assert_eq!(
            quayside_producer::batch_member_id("nightly", "a", &spec).as_str(),
            first[0]
        );
    }
}
