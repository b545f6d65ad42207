//! Enqueueing: one job or many, checked first, then sent in pipelined script calls; an id that
//! exists is answered with its state and nothing is added.

use futures_util::stream::{self};
use futures_util::StreamExt as _;
use quayside_common::admission;
use quayside_common::scripts::Scripts;
use quayside_common::wire::encode_spec;
use quayside_common::{JobId, JobSpec, Priority, Status};
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
    /// [`Error::Invalid`] for a malformed spec, [`Error::QueueFull`] past `queue.max_depth`.
    pub async fn enqueue(&self, spec: &JobSpec) -> Result<Enqueued, Error> {
        let mut out = self.enqueue_many(std::slice::from_ref(spec)).await?;
        out.pop().ok_or_else(|| Error::Reply {
            op: "enqueue",
            detail: "no answer".into(),
        })
    }

    /// Enqueues many jobs: validated first (shape, then the `limits` caps and floors of this
    /// producer's config: what needs no language table), then sent in script calls of 256
    /// jobs, pipelined.
    ///
    /// # Errors
    /// The first invalid spec (nothing is sent then), or [`Error::QueueFull`] naming the first
    /// job refused (jobs before it were enqueued).
    pub async fn enqueue_many(&self, specs: &[JobSpec]) -> Result<Vec<Enqueued>, Error> {
        for s in specs {
            s.validate_shape()?;
            admission::check_sizes(&self.limits, &self.queue, s)?;
        }
        let invocations: Vec<_> = specs
            .chunks(ENQUEUE_CHUNK)
            .map(|c| self.enqueue_invocation(c))
            .collect();
        let conn = self.conn().await?;
        // A few chunks in flight keep the pipe full without queueing seconds of work in Redis.
        // Futures collected before streaming them: a closure inside the stream type makes the
        // future not provably `Send` for every lifetime, which an axum handler needs.
        let calls: Vec<_> = invocations
            .iter()
            .map(|inv| {
                let mut c = conn.clone();
                async move { inv.invoke_async::<Vec<String>>(&mut c).await }
            })
            .collect();
        let replies: Vec<_> = stream::iter(calls)
            .buffered(ENQUEUE_IN_FLIGHT)
            .collect()
            .await;
        let mut out = Vec::with_capacity(specs.len());
        for (chunk, reply) in specs.chunks(ENQUEUE_CHUNK).zip(replies) {
            let answers = reply.map_err(|e| self.redis_error("enqueue", e))?;
            for (spec, answer) in chunk.iter().zip(answers) {
                out.push(self.enqueued(spec, &answer)?);
            }
        }
        Ok(out)
    }

    fn enqueue_invocation(&self, chunk: &[JobSpec]) -> redis::ScriptInvocation<'static> {
        let mut inv = Scripts::get().enqueue.prepare_invoke();
        inv.key(self.keys.stream(Priority::Normal));
        inv.arg(self.keys.prefix())
            .arg(self.queue.max_depth)
            .arg(chunk.len());
        for s in chunk {
            inv.arg(s.id.as_str())
                .arg(s.priority.index() + 1)
                .arg(encode_spec(s))
                .arg(s.batch.as_deref().unwrap_or(""))
                .arg(s.result_ttl_s.unwrap_or(self.queue.default_result_ttl_s));
        }
        inv
    }

    fn enqueued(&self, spec: &JobSpec, answer: &str) -> Result<Enqueued, Error> {
        if answer.starts_with("new:") {
            return Ok(Enqueued {
                id: spec.id.clone(),
                created: true,
                state: Some(Status::Queued),
            });
        }
        if answer == "exists:expired" {
            return Ok(Enqueued {
                id: spec.id.clone(),
                created: false,
                state: None,
            });
        }
        if let Some(state) = answer.strip_prefix("exists:") {
            return Ok(Enqueued {
                id: spec.id.clone(),
                created: false,
                state: Some(state.parse().map_err(|detail| Error::Reply {
                    op: "enqueue",
                    detail,
                })?),
            });
        }
        if answer == "full" {
            return Err(Error::QueueFull {
                queue: self.keys.queue().to_owned(),
                max_depth: self.queue.max_depth,
                id: spec.id.clone(),
            });
        }
        Err(Error::Reply {
            op: "enqueue",
            detail: answer.to_owned(),
        })
    }
}
