//! Deleting what an attempt created, on every path, and the sweep of what a fleet's dead
//! workers left.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};

use super::spec::{LABEL_MANAGED, MANAGER};
use super::{api_error, KubernetesRunner};
use crate::runner::sandbox::{Sandboxes, LABEL_JOB, LABEL_WORKER};
use crate::runner::RunnerError;

/// Deletes an attempt's Job and ConfigMap: awaited on every normal path, spawned from `Drop`
/// when the attempt's future is dropped before that. A failed deletion goes on the runner's
/// list of [`Sandboxes`] to delete later.
#[derive(Debug)]
pub(super) struct Cleanup {
    sandboxes: Arc<Sandboxes>,
    armed: Option<(Api<Job>, Api<ConfigMap>, String)>,
}

impl Cleanup {
    pub(super) fn new(sandboxes: Arc<Sandboxes>) -> Self {
        Self {
            sandboxes,
            armed: None,
        }
    }

    pub(super) fn arm(&mut self, jobs: Api<Job>, cms: Api<ConfigMap>, name: String) {
        self.armed = Some((jobs, cms, name));
    }

    pub(super) async fn remove(&mut self) {
        if let Some((jobs, cms, name)) = self.armed.take() {
            delete_tracked(&jobs, &cms, &name, &self.sandboxes).await;
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((jobs, cms, name)) = self.armed.take() {
            let sandboxes = Arc::clone(&self.sandboxes);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move { delete_tracked(&jobs, &cms, &name, &sandboxes).await });
                }
                Err(_) => sandboxes.removal_failed(&name),
            }
        }
    }
}

async fn delete_tracked(jobs: &Api<Job>, cms: &Api<ConfigMap>, name: &str, sandboxes: &Sandboxes) {
    match delete(jobs, cms, name).await {
        Ok(()) => sandboxes.removed(name),
        Err(()) => sandboxes.removal_failed(name),
    }
}

/// Deletes a Job (background propagation: its pod goes too) and its ConfigMap. Not found is
/// fine; other failures are logged, and the caller retries later (the Job's TTL is the last
/// fallback).
pub(super) async fn delete(jobs: &Api<Job>, cms: &Api<ConfigMap>, name: &str) -> Result<(), ()> {
    let mut ok = true;
    if let Err(error) = jobs.delete(name, &DeleteParams::background()).await {
        if !is_not_found(&error) {
            tracing::warn!(job = %name, %error, "cannot delete job; retrying from upkeep");
            ok = false;
        }
    }
    if let Err(error) = cms.delete(name, &DeleteParams::background()).await {
        if !is_not_found(&error) {
            tracing::warn!(configmap = %name, %error, "cannot delete configmap; retrying from upkeep");
            ok = false;
        }
    }
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes this backend's Jobs (and ConfigMaps) for which `why(name, labels, created epoch
/// seconds)` gives a reason, logging each. ConfigMaps are listed too: one whose Job was never
/// created has no owner to be collected with.
pub(super) async fn sweep(
    client: &Client,
    ns: &str,
    sandboxes: &Sandboxes,
    why: impl Fn(&str, &BTreeMap<String, String>, Option<i64>) -> Option<&'static str>,
) -> Result<usize, RunnerError> {
    let params = ListParams::default().labels(&format!("{LABEL_MANAGED}={MANAGER}"));
    let (jobs, cms, _) = KubernetesRunner::apis(client, ns);
    let mut removed = 0;
    let listed = jobs
        .list_metadata(&params)
        .await
        .map_err(|e| api_error("cannot list jobs", e))?;
    let cm_listed = cms
        .list_metadata(&params)
        .await
        .map_err(|e| api_error("cannot list configmaps", e))?;
    let names = listed
        .items
        .iter()
        .map(|j| &j.metadata)
        .chain(cm_listed.items.iter().map(|c| &c.metadata));
    let mut seen = std::collections::BTreeSet::new();
    for meta in names {
        let (Some(name), Some(labels)) = (&meta.name, &meta.labels) else {
            continue;
        };
        let created = meta.creation_timestamp.as_ref().map(|t| t.0.as_second());
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(reason) = why(name, labels, created) else {
            continue;
        };
        let (job, owner) = (labels.get(LABEL_JOB), labels.get(LABEL_WORKER));
        if delete(&jobs, &cms, name).await.is_ok() {
            sandboxes.removed(name);
            removed += 1;
            tracing::info!(job_object = %name, job = ?job, owner = ?owner, why = reason, "deleted sandbox job");
        }
    }
    Ok(removed)
}
