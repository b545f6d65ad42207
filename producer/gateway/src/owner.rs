//! What a caller may see: a tenant's token reaches only its tenant's jobs and batches, an
//! operator's (`gateway.tokens`) every one. Another tenant's job or batch is answered like one
//! that does not exist (`404`), so a guessed id tells nothing; and a batch holds one tenant's
//! jobs, so no caller can add to (and count in) another's.

use quayside_common::JobId;
use quayside_producer::{BatchStatus, Error, JobStatus};

use super::auth::Caller;
use super::error::ApiError;
use super::Gateway;

/// Whether `caller` may see something of `tenant` (`None`: the default tenant).
fn sees(caller: &Caller, tenant: Option<&str>) -> bool {
    caller.tenant.is_none() || caller.tenant.as_deref() == tenant
}

/// The tenant a job runs as, from its record (`None`: the default tenant).
pub(super) fn tenant_of(st: &JobStatus) -> Option<&str> {
    st.spec.as_ref().and_then(|s| s.tenant.as_deref())
}

/// The job's record if the caller may see it; `404` if it is unknown or another tenant's.
pub(super) async fn job(gw: &Gateway, caller: &Caller, id: &JobId) -> Result<JobStatus, ApiError> {
    match gw.producer.status(id).await? {
        Some(st) if sees(caller, tenant_of(&st)) => Ok(st),
        _ => Err(Error::NotFound(id.clone()).into()),
    }
}

/// The batch's counters if the caller may see it; `404` if it is unknown or another tenant's.
pub(super) async fn batch(
    gw: &Gateway,
    caller: &Caller,
    id: &str,
) -> Result<BatchStatus, ApiError> {
    match gw.producer.batch_status(id).await? {
        Some(st) if sees(caller, st.tenant.as_deref()) => Ok(st),
        _ => Err(Error::BatchNotFound(id.to_owned()).into()),
    }
}

/// `409 batch_conflict` (naming `field`) when `batch` exists and holds another tenant's jobs
/// than `tenant`'s (`None`: the default tenant).
pub(super) async fn joinable(
    gw: &Gateway,
    batch: &str,
    tenant: Option<&str>,
    field: &str,
) -> Result<(), ApiError> {
    match gw.producer.batch_status(batch).await? {
        Some(st) if st.tenant.as_deref() != tenant => Err(ApiError::conflict(
            "batch_conflict",
            field,
            format!("{field}: batch \"{batch}\" holds another tenant's jobs; choose another id"),
        )),
        _ => Ok(()),
    }
}

/// `409 id_conflict` (naming the id's field) when a tenant's caller posts an id that another
/// tenant's job holds: the `200 created:false` answer would show that job's state. `ids` pairs
/// each id with its field (`id`, `jobs[3].id`). Operators see every job, so they are not asked.
pub(super) async fn ids_free(
    gw: &Gateway,
    caller: &Caller,
    ids: &[(JobId, String)],
) -> Result<(), ApiError> {
    if caller.tenant.is_none() || ids.is_empty() {
        return Ok(());
    }
    let just_ids: Vec<JobId> = ids.iter().map(|(id, _)| id.clone()).collect();
    let owners = gw.producer.owners(&just_ids).await?;
    for ((id, field), owner) in ids.iter().zip(owners) {
        if owner.is_some_and(|t| t != caller.tenant) {
            return Err(ApiError::conflict(
                "id_conflict",
                field,
                format!("{field}: job id \"{id}\" is taken; choose another id"),
            ));
        }
    }
    Ok(())
}
