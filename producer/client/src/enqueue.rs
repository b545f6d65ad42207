//! Enqueueing: one job or many, checked first, then sent in pipelined script calls; an id that
//! exists is answered with its state and nothing is added.

use std::collections::BTreeMap;

use futures_util::stream::{self};
use futures_util::StreamExt as _;
use quayside_common::admission;
use quayside_common::protocol::enqueue::{Enqueue, EnqueueAnswer};
use quayside_common::{JobId, JobSpec, Status};
use serde::Serialize;

use crate::{Error, Producer};

/// Jobs per enqueue script call; calls are pipelined on one connection.
const ENQUEUE_CHUNK: usize = 256;
/// Enqueue script calls in flight at once.
const ENQUEUE_IN_FLIGHT: usize = 8;

/// What enqueueing one job did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: JobId,
    /// False when a job with this id already existed (idempotent enqueue): nothing was added.
    pub created: bool,
    /// `queued` for a new job, the existing job's state otherwise; `None` (left out of JSON)
    /// for a member of its batch whose record has expired: it ran and ended long ago, and the
    /// batch still counts it, so nothing was added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Status>,
}

impl Producer {
    /// Enqueues one job. Enqueueing an id that exists returns that job's state and adds nothing.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed spec, [`Error::QueueFull`] past `queue.max_depth`,
    /// [`Error::TenantQueueFull`] past its tenant's `max_queued`.
    pub async fn enqueue(&self, spec: &JobSpec) -> Result<Enqueued, Error> {
        let mut out = self.enqueue_many(std::slice::from_ref(spec)).await?;
        out.pop().ok_or_else(|| Error::Reply {
            op: "enqueue",
            detail: "no answer".into(),
        })
    }

    /// Enqueues many jobs: validated first (shape, then the `limits` caps and floors of this
    /// producer's config: what needs no language table; a `callback` against its
    /// `webhooks.*` rules), then sent in script calls of 256
    /// jobs, pipelined.
    ///
    /// # Errors
    /// The first invalid spec (nothing is sent then), or [`Error::QueueFull`] naming the first
    /// job refused (jobs before it were enqueued).
    pub async fn enqueue_many(&self, specs: &[JobSpec]) -> Result<Vec<Enqueued>, Error> {
        for s in specs {
            s.validate_shape()?;
            admission::check_sizes(&self.limits, &self.queue, s)?;
            admission::check_callback(&self.webhooks, &self.tenants, s)?;
        }
        self.check_caps_whole(specs).await?;
        let calls: Vec<_> = specs
            .chunks(ENQUEUE_CHUNK)
            .map(|specs| {
                Enqueue {
                    specs,
                    max_depth: self.queue.max_depth,
                    default_ttl_s: self.queue.default_result_ttl_s,
                    tenants: &self.tenants,
                }
                .call(&self.keys)
            })
            .collect();
        let conn = self.conn().await?;
        // A few chunks in flight keep the pipe full without queueing seconds of work in Redis.
        // Futures collected before streaming them: a closure inside the stream type makes the
        // future not provably `Send` for every lifetime, which an axum handler needs.
        let sent: Vec<_> = calls
            .iter()
            .map(|call| {
                let mut c = conn.clone();
                async move { call.run(&mut c).await }
            })
            .collect();
        let replies: Vec<_> = stream::iter(sent)
            .buffered(ENQUEUE_IN_FLIGHT)
            .collect()
            .await;
        let mut out = Vec::with_capacity(specs.len());
        for (chunk, reply) in specs.chunks(ENQUEUE_CHUNK).zip(replies) {
            let answers = reply.map_err(|e| self.call_error(e))?;
            for (spec, answer) in chunk.iter().zip(answers) {
                out.push(self.enqueued(spec, answer)?);
            }
        }
        Ok(out)
    }

    /// A call of more jobs than one script call takes is held to its tenants' queued caps as a
    /// whole before any of it is sent: each script call checks only its own jobs, so a batch
    /// past a cap would otherwise be queued in part. New jobs are those without a record; a
    /// concurrent enqueue of the same tenant between this check and the script calls can still
    /// pass the cap by that enqueue's size, or split the call (the scripts check again).
    async fn check_caps_whole(&self, specs: &[JobSpec]) -> Result<(), Error> {
        if specs.len() <= ENQUEUE_CHUNK {
            return Ok(());
        }
        let mut capped: BTreeMap<&str, (u64, Vec<&JobSpec>)> = BTreeMap::new();
        for s in specs {
            let Some(tenant) = s.tenant.as_deref() else {
                continue;
            };
            match self.tenants.get(tenant).map(|t| t.max_queued) {
                Some(cap) if cap > 0 => capped.entry(tenant).or_insert((cap, Vec::new())).1.push(s),
                _ => {}
            }
        }
        if capped.is_empty() {
            return Ok(());
        }
        let stats = self.stats().await?;
        for (tenant, (cap, members)) in capped {
            let ids: Vec<JobId> = members.iter().map(|s| s.id.clone()).collect();
            let owners = self.owners(&ids).await?;
            let mut new = members.iter().zip(owners).filter(|(_, o)| o.is_none());
            let Some((first, _)) = new.next() else {
                continue;
            };
            let adding = 1 + new.count() as u64;
            let queued = stats
                .tenants
                .iter()
                .find(|t| t.tenant == tenant)
                .map_or(0, |t| t.queued);
            if queued + adding > cap {
                return Err(Error::TenantQueueFull {
                    tenant: tenant.to_owned(),
                    queued,
                    cap,
                    id: first.id.clone(),
                });
            }
        }
        Ok(())
    }

    fn enqueued(&self, spec: &JobSpec, answer: EnqueueAnswer) -> Result<Enqueued, Error> {
        let (created, state) = match answer {
            EnqueueAnswer::New { .. } => (true, Some(Status::Queued)),
            EnqueueAnswer::Exists(state) => (false, Some(state)),
            EnqueueAnswer::Expired => (false, None),
            EnqueueAnswer::Full => {
                return Err(Error::QueueFull {
                    queue: self.keys.queue().to_owned(),
                    max_depth: self.queue.max_depth,
                    id: spec.id.clone(),
                })
            }
            EnqueueAnswer::TenantFull { queued, cap } => {
                return Err(Error::TenantQueueFull {
                    tenant: spec.tenant.clone().unwrap_or_default(),
                    queued,
                    cap,
                    id: spec.id.clone(),
                })
            }
        };
        Ok(Enqueued {
            id: spec.id.clone(),
            created,
            state,
        })
    }
}
