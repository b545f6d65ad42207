//! One claimed job, from spec to terminal result: validate, run under its lease, then finish,
//! retry or dead-letter it, each as one fenced step.
//!
//! An infrastructure failure is the job's own only if the runner is otherwise healthy: when
//! the runner's check fails too, the job goes back at no cost and the gate stops claims. The
//! job's own infrastructure failures retry (at no attempt's cost) until its first one is
//! `retry.give_up_after_ms` old.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quayside_common::admission::{self, resolve_limits};
use quayside_common::config::{Config, RUNNER_BACKSTOP};
use quayside_common::job::SpecError;
use quayside_common::outcome::Durations;
use quayside_common::protocol::DeadLetterReason;
use quayside_common::wire::{decode_spec, WireError};
use quayside_common::{error_chain, now_ms, JobId, JobResult, JobSpec, Status};
use tracing::Instrument as _;

use crate::gate::RunnerGate;
use crate::inflight::{InFlight, StopReason};
use crate::metrics::{Event, HandBack, WorkerMetrics};
use crate::queue::{Charge, Claimed, Completion, JobQueue, Lease, QueueError, Retry, Write};
use crate::retry::{backoff_ms, decide, Disposition};
use crate::runner::{Fleet, RunOutput, RunRequest, RunnerError, RunnerErrorKind, SharedRunner};
use crate::upkeep::Beat;

/// How long the last job in flight waits for the registry to show it gone before its result is
/// written.
const BEAT_WAIT: Duration = Duration::from_secs(1);

/// What every execution shares.
#[derive(Debug)]
pub struct Context {
    pub cfg: Arc<Config>,
    pub queue: Arc<dyn JobQueue>,
    pub runner: SharedRunner,
    pub gate: Arc<RunnerGate>,
    pub inflight: Arc<InFlight>,
    pub metrics: Arc<WorkerMetrics>,
    pub worker_id: String,
    /// The fleet this worker belongs to, for the sandboxes' labels and the sweep.
    pub fleet: Fleet,
    pub beat: Arc<Beat>,
}

/// Runs one claimed job to its next state. Never panics on bad input; logs what it cannot write.
pub async fn execute(ctx: Arc<Context>, claimed: Claimed) {
    let span = tracing::info_span!(
        "job",
        job_id = %claimed.lease.job_id,
        attempt = claimed.attempts,
        priority = claimed.lease.priority.as_label(),
        language = tracing::field::Empty,
        runner = ctx.runner.name(),
    );
    run_claimed(&ctx, claimed).instrument(span).await;
}

async fn run_claimed(ctx: &Context, claimed: Claimed) {
    let lease = claimed.lease.clone();
    let waited = Duration::from_millis(now_ms().saturating_sub(claimed.enqueued_at_ms));
    let (id, spec) = match validate(&ctx.cfg, &claimed) {
        Ok(ok) => ok,
        Err((reason, message)) => {
            let labels = ctx.metrics.labels(lease.priority, None);
            ctx.metrics.claimed(labels, waited);
            let id = JobId::parse(&lease.job_id).unwrap_or_else(|_| JobId::generate());
            let mut result = JobResult::without_output(
                id,
                Status::Rejected,
                Some(message.clone()),
                claimed.attempts,
            );
            result.worker = Some(ctx.worker_id.clone());
            let ttl = ctx.cfg.queue.default_result_ttl_s;
            let event = Event::Rejected {
                job: labels,
                reason,
                error: &message,
            };
            conclude(ctx, &lease, &result, ttl, event).await;
            return;
        }
    };
    tracing::Span::current().record("language", spec.language.as_str());
    let labels = ctx.metrics.labels(lease.priority, Some(&spec.language));
    ctx.metrics.claimed(labels, waited);
    let ttl = spec
        .result_ttl_s
        .unwrap_or(ctx.cfg.queue.default_result_ttl_s);
    let max_attempts = spec
        .max_attempts
        .unwrap_or(ctx.cfg.queue.default_max_attempts);
    let finish = |status: Status, error: Option<String>| {
        let mut r = JobResult::without_output(id.clone(), status, error, claimed.attempts);
        r.worker = Some(ctx.worker_id.clone());
        r.runner = Some(ctx.runner.name().to_owned());
        r
    };

    if claimed.cancel_requested {
        let result = finish(Status::Cancelled, Some("cancelled before it ran".into()));
        conclude(ctx, &lease, &result, ttl, Event::Cancelled { job: labels }).await;
        return;
    }
    if claimed.attempts > max_attempts {
        // Earlier executions died with their worker (the lease expired): a poison job.
        let msg =
            format!("{max_attempts} attempt(s) started and none finished (worker lost each time)");
        let result = finish(Status::Dead, Some(msg));
        let event = Event::WorkersKeptDying {
            job: labels,
            max_attempts,
        };
        conclude(ctx, &lease, &result, ttl, event).await;
        return;
    }

    // The runner's own limits (e.g. how long one argument may be) count as admission too.
    let admitted = request(&ctx.cfg, spec, claimed.attempts, &ctx.fleet)
        .and_then(|r| ctx.runner.admit(&r).map(|()| r));
    let req = match admitted {
        Ok(r) => r,
        Err(e) => {
            let error = e.to_string();
            let result = finish(Status::Rejected, Some(error.clone()));
            let event = Event::Rejected {
                job: labels,
                reason: DeadLetterReason::InvalidSpec,
                error: &error,
            };
            conclude(ctx, &lease, &result, ttl, event).await;
            return;
        }
    };

    let guard = ctx.inflight.track(lease.clone());
    let started = Instant::now();
    let started_ms = now_ms();
    let logs = ctx.queue.log_sink(&id, &lease);
    // Backstop for a runner that hangs: it enforces wall time itself, this only bounds a bug.
    let deadline =
        Duration::from_millis(req.limits.compile_wall_time_ms + req.limits.run_wall_time_ms)
            + RUNNER_BACKSTOP;
    let outcome = match tokio::time::timeout(
        deadline,
        ctx.runner.run(&req, &logs, guard.tracked.cancel.clone()),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(RunnerError::Failed {
            context: format!("runner did not return within {}s", deadline.as_secs()),
            transient: true,
            source: None,
        }),
    };
    let stop = guard.tracked.reason();
    let ran = started.elapsed();
    tracing::debug!(
        elapsed_ms = ran.as_millis() as u64,
        ?stop,
        "execution ended"
    );
    // No longer in flight. When it was the last one, the registry says so before the outcome
    // is visible (`quayside stats` right after the last job never shows it running); under
    // load the heartbeat's own second-by-second check catches up, at no cost per job.
    guard.tracked.finishing();
    if ctx.inflight.is_empty() {
        ctx.beat.now(BEAT_WAIT).await;
    }

    let cancelled = |out: Option<RunOutput>| {
        let mut result = finish(Status::Cancelled, Some("cancelled while running".into()));
        if let Some(out) = out {
            // The output it printed before it was stopped.
            result.stdout = out.stdout;
            result.stderr = out.stderr;
            result.compile_output = out.compile_output;
            result.durations.compile_ms = out.compile_ms;
            result.durations.run_ms = out.run_ms;
        }
        result
    };
    match (outcome, stop) {
        (_, StopReason::LeaseLost) => ctx.metrics.emit(Event::LeaseLost),
        (Ok(out), _) if out.status != Status::Cancelled => {
            let sandbox_start = out.sandbox_start_ms.map(Duration::from_millis);
            ctx.metrics.ran(labels, ran, sandbox_start);
            let result = completed(ctx, &id, &claimed, started_ms, out);
            let event = Event::Finished {
                job: labels,
                status: result.status,
                exit_code: result.exit_code,
            };
            conclude(ctx, &lease, &result, ttl, event).await;
        }
        (outcome, StopReason::Cancelled) => {
            let result = cancelled(outcome.ok());
            conclude(ctx, &lease, &result, ttl, Event::Cancelled { job: labels }).await;
        }
        (_, StopReason::Drain) => hand_back(ctx, &lease, HandBack::Drain, 0).await,
        // A runner reports `cancelled` only after its token fired.
        (Ok(_), StopReason::None) => hand_back(ctx, &lease, HandBack::UnaskedCancel, 0).await,
        (Err(e), StopReason::None) => {
            ctx.metrics.emit(Event::RunnerFailed(&e));
            let message = error_chain(&e);
            let jitter: f64 = rand::random();
            if e.kind() != RunnerErrorKind::Permanent && ctx.gate.unavailable(&e).await {
                // Not the job's failure: the runner is down. Claims stop until it is back.
                let delay = backoff_ms(1, &ctx.cfg.retry, jitter);
                let why = HandBack::RunnerUnavailable { error: &message };
                hand_back(ctx, &lease, why, delay).await;
                drop(guard);
                return;
            }
            let history = ctx.queue.failure_history(&lease).await.unwrap_or_default();
            match decide(e.kind(), history, now_ms(), &ctx.cfg.retry, jitter) {
                Disposition::Retry { delay_ms } => {
                    let retry = Retry {
                        delay_ms,
                        error: &message,
                        charge: Charge::InfraFailure,
                    };
                    let written =
                        persist(ctx, &lease, "retry", || ctx.queue.retry(&lease, retry)).await;
                    if written {
                        ctx.metrics.emit(Event::Retried {
                            job: labels,
                            reason: e.as_label(),
                            error: &message,
                            delay_ms,
                            failures: history.failures + 1,
                        });
                    }
                }
                Disposition::DeadLetter { reason } => {
                    let message = match (reason, history.failing_since_ms) {
                        (DeadLetterReason::InfraTimeout, Some(since)) => format!(
                            "infrastructure kept failing for {} s ({} tries); last error: {message}",
                            now_ms().saturating_sub(since) / 1000,
                            history.failures + 1
                        ),
                        _ => message,
                    };
                    let result = finish(Status::Dead, Some(message.clone()));
                    let event = Event::RunnerGaveUp {
                        job: labels,
                        reason,
                        error: &message,
                    };
                    conclude(ctx, &lease, &result, ttl, event).await;
                }
            }
        }
    }
    drop(guard);
}

/// Puts a job back without spending its attempt (draining, runner unavailable).
async fn hand_back(ctx: &Context, lease: &Lease, why: HandBack<'_>, delay_ms: u64) {
    let retry = Retry {
        delay_ms,
        error: why.why(),
        charge: Charge::Refund,
    };
    let written = persist(ctx, lease, "hand back", || ctx.queue.retry(lease, retry)).await;
    if written {
        ctx.metrics.emit(Event::HandedBack(why));
    }
}

/// Writes the job's terminal result, with the dead letter `ended` calls for (carrying the
/// result's error), and emits `ended` once Redis took it: a refused write was not this
/// worker's to report.
async fn conclude(ctx: &Context, lease: &Lease, result: &JobResult, ttl_s: u64, ended: Event<'_>) {
    let error = result.error.as_deref().unwrap_or("");
    let dead_letter = ended.dead_letter();
    let written = persist(ctx, lease, "finish", || {
        let done = Completion::new(lease, result, ttl_s);
        ctx.queue.finish(match dead_letter {
            Some(reason) => done.dead_letter(reason, error),
            None => done,
        })
    })
    .await;
    if written {
        ctx.metrics.emit(ended);
    }
}

fn completed(
    ctx: &Context,
    id: &JobId,
    claimed: &Claimed,
    started_ms: u64,
    out: RunOutput,
) -> JobResult {
    let finished = now_ms();
    JobResult {
        v: quayside_common::job::PROTOCOL_VERSION,
        id: id.clone(),
        status: out.status,
        exit_code: out.exit_code,
        signal: out.signal,
        stdout: out.stdout,
        stderr: out.stderr,
        compile_output: out.compile_output,
        error: None,
        durations: Durations {
            queued_ms: started_ms.saturating_sub(claimed.enqueued_at_ms),
            compile_ms: out.compile_ms,
            run_ms: out.run_ms,
            total_ms: finished.saturating_sub(claimed.enqueued_at_ms),
        },
        attempts: claimed.attempts,
        worker: Some(ctx.worker_id.clone()),
        runner: Some(ctx.runner.name().to_owned()),
        finished_at_ms: finished,
    }
}

/// Why a job is refused, and the error its result carries.
type Refusal = (DeadLetterReason, String);

/// Decodes the spec and checks it against this worker's configuration.
fn validate(cfg: &Config, claimed: &Claimed) -> Result<(JobId, JobSpec), Refusal> {
    let spec = decode_spec(&claimed.spec_json).map_err(|e| (e.reason(), e.to_string()))?;
    if spec.id.as_str() != claimed.lease.job_id {
        let e = WireError::IdMismatch {
            entry: claimed.lease.entry.clone(),
            entry_id: claimed.lease.job_id.clone(),
            payload_id: spec.id.to_string(),
        };
        return Err((e.reason(), e.to_string()));
    }
    admission::check(cfg, &spec).map_err(|e| {
        (
            DeadLetterReason::InvalidSpec,
            format!("invalid job spec: {e}"),
        )
    })?;
    Ok((spec.id.clone(), spec))
}

fn request(
    cfg: &Config,
    spec: JobSpec,
    attempt: u32,
    fleet: &Fleet,
) -> Result<RunRequest, SpecError> {
    Ok(RunRequest {
        limits: resolve_limits(cfg, &spec)?,
        language_config: cfg
            .languages
            .get(&spec.language)
            .cloned()
            .unwrap_or_default(),
        job_id: spec.id,
        attempt,
        kind: spec.kind,
        language: spec.language,
        files: spec.files,
        compiler_options: spec.compiler_options,
        args: spec.args,
        stdin: spec.stdin,
        fleet: fleet.clone(),
    })
}

/// Runs a fenced write until Redis takes it or refuses it. Redis being unreachable is not a
/// reason to drop a result: retry with backoff for a bounded time, after which the lease has
/// long expired and another worker owns the job. True when the write was taken.
async fn persist<F, Fut>(ctx: &Context, lease: &Lease, what: &'static str, mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Write, QueueError>>,
{
    let give_up = Instant::now() + ctx.cfg.persist_give_up();
    let mut delay = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(Write::Taken) => return true,
            Ok(Write::Fenced) => {
                tracing::warn!(job_id = %lease.job_id, token = lease.token, what, "write refused: this worker no longer holds the job");
                return false;
            }
            Err(error) if Instant::now() < give_up => {
                // An unreachable Redis is the queue's outage story; other errors are news.
                if error.is_unreachable() {
                    tracing::debug!(job_id = %lease.job_id, what, error = %error, "cannot write to redis; retrying");
                } else {
                    tracing::warn!(job_id = %lease.job_id, what, error = %error, retry_in_ms = delay.as_millis() as u64, "cannot write to redis; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                tracing::error!(job_id = %lease.job_id, what, error = %error, "giving up on write; the job will be reclaimed when its lease expires");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quayside_common::{JobKind, Priority};

    fn claimed(spec: &JobSpec) -> Claimed {
        Claimed {
            lease: Lease {
                job_id: spec.id.to_string(),
                priority: Priority::Normal,
                entry: "1-0".into(),
                token: 1,
            },
            attempts: 1,
            spec_json: quayside_common::wire::encode_spec(spec).into_bytes(),
            enqueued_at_ms: 0,
            cancel_requested: false,
        }
    }

    fn spec() -> JobSpec {
        JobSpec::new(JobKind::Run, "c", [("a.c".into(), "x".into())].into())
    }

    #[test]
    fn unknown_language_names_the_known_ones() {
        let cfg = Config::load(None).expect("defaults");
        let mut s = spec();
        s.language = "cobol".into();
        let (reason, msg) = validate(&cfg, &claimed(&s)).expect_err("unknown");
        assert_eq!(reason, DeadLetterReason::InvalidSpec);
        assert!(
            msg.contains("language: unknown language \"cobol\"") && msg.contains("python"),
            "{msg}"
        );
    }

    #[test]
    fn oversized_source_is_rejected() {
        let cfg = Config::load(None).expect("defaults");
        let mut s = spec();
        s.files.insert(
            "big.c".into(),
            "x".repeat(cfg.limits.max_source_bytes as usize + 1),
        );
        let (_, msg) = validate(&cfg, &claimed(&s)).expect_err("too big");
        assert!(
            msg.contains("files:") && msg.contains("exceeds the configured maximum"),
            "{msg}"
        );
    }

    #[test]
    fn limits_come_from_the_job_then_the_language_then_the_worker() {
        let cfg = Config::load(None).expect("defaults");
        let mut go = JobSpec::new(JobKind::Run, "go", [("main.go".into(), "x".into())].into());
        let l = resolve_limits(&cfg, &go).expect("valid");
        assert_eq!(
            (l.memory_bytes, l.pids),
            (512 << 20, 128),
            "go's own defaults"
        );
        assert_eq!(
            l.run_wall_time_ms, cfg.limits.default.run_wall_time_ms,
            "worker default"
        );
        go.limits.pids = Some(20);
        assert_eq!(
            resolve_limits(&cfg, &go).expect("valid").pids,
            20,
            "the job wins"
        );
        go.limits.pids = Some(cfg.limits.max.pids + 1);
        assert!(resolve_limits(&cfg, &go).is_err(), "never over the maximum");
    }

    #[test]
    fn id_mismatch_between_entry_and_payload_is_rejected() {
        let cfg = Config::load(None).expect("defaults");
        let s = spec();
        let mut c = claimed(&s);
        c.lease.job_id = "other".into();
        assert_eq!(
            validate(&cfg, &c).expect_err("mismatch").0,
            DeadLetterReason::IdMismatch
        );
    }

    #[test]
    fn error_chain_is_kept() {
        let e = RunnerError::Failed {
            context: "cannot create container".into(),
            transient: true,
            source: Some("connection refused".into()),
        };
        assert_eq!(
            error_chain(&e),
            "cannot create container: connection refused"
        );
    }
}
