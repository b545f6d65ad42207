//! One claimed job, from spec to terminal result: validate it, run it under its lease with its
//! live log, then decide its [`Report`] in one match ([`report`](crate::report) writes it).
//!
//! An infrastructure failure is the job's own only if the runner is otherwise healthy: when
//! the runner's check fails too, the job goes back at no cost and the gate stops claims. The
//! job's own infrastructure failures retry (at no attempt's cost) until its first one is
//! `retry.give_up_after_ms` old.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quayside_common::admission::{self, resolve_limits};
use quayside_common::config::Config;
use quayside_common::job::SpecError;
use quayside_common::outcome::Durations;
use quayside_common::protocol::DeadLetterReason;
use quayside_common::verdicts::Summary;
use quayside_common::wire::{decode_spec, WireError};
use quayside_common::{error_chain, now_ms, JobId, JobResult, JobSpec, Status};
use tracing::Instrument as _;

use crate::context::Context;
use crate::inflight::StopReason;
use crate::metrics::{Event, JobLabels};
use crate::queue::{Claimed, Lease};
use crate::report::live_log::LiveLog;
use crate::report::{DeadLetterCause, HandBackCause, Report};
use crate::retry::{backoff_ms, decide, Disposition};
use crate::runner::sandbox::protocol::build_and_run;
use crate::runner::sandbox::tests_mode::{PlannedChecker, TestPlan};
use crate::runner::{Fleet, Output, RunOutput, RunRequest, RunnerError, RunnerErrorKind};

/// How long the last job in flight waits for the registry to show it gone before its result is
/// written.
const BEAT_WAIT: Duration = Duration::from_secs(1);
/// How long the live log may take to catch up once the runner returned.
const LOG_FLUSH_GRACE: Duration = Duration::from_secs(2);

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

/// A claimed job that may run, with what its report needs.
struct Admitted {
    id: JobId,
    req: RunRequest,
    labels: JobLabels,
    ttl_s: u64,
}

/// A claimed job that ends before it runs, and how.
struct Refused {
    report: Report,
    labels: JobLabels,
    ttl_s: u64,
}

async fn run_claimed(ctx: &Context, claimed: Claimed) {
    let lease = claimed.lease.clone();
    let job = match admit(ctx, &claimed) {
        Ok(job) => job,
        Err(r) => return r.report.write(ctx, &lease, r.labels, r.ttl_s).await,
    };
    let guard = ctx.inflight.track(lease.clone());
    let started = Instant::now();
    let started_ms = now_ms();
    let outcome = run(ctx, &job, &lease, guard.tracked.cancel.clone()).await;
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
    let report = match (outcome, stop) {
        (_, StopReason::LeaseLost) => Report::Abandon,
        (Ok(out), _) if out.status != Status::Cancelled => {
            let sandbox_start = out.sandbox_start_ms.map(Duration::from_millis);
            ctx.metrics.ran(job.labels, ran, sandbox_start);
            let tests = job.req.tests.as_ref().map(|plan| plan.tests.len());
            Report::Finish(completed(ctx, &job.id, &claimed, started_ms, out, tests))
        }
        (outcome, StopReason::Cancelled) => {
            Report::Finish(cancelled(ctx, &job, &claimed, outcome.ok()))
        }
        (_, StopReason::Drain) => Report::HandBack {
            cause: HandBackCause::Drain,
            delay_ms: 0,
        },
        // A runner reports `cancelled` only after its token fired.
        (Ok(_), StopReason::None) => Report::HandBack {
            cause: HandBackCause::UnaskedCancel,
            delay_ms: 0,
        },
        (Err(e), StopReason::None) => runner_failed(ctx, &lease, &job, claimed.attempts, &e).await,
    };
    report.write(ctx, &lease, job.labels, job.ttl_s).await;
    drop(guard);
}

/// Runs the job, its output forwarded to its live log, which is flushed before the outcome is
/// written (the log's `end` entry comes last).
async fn run(
    ctx: &Context,
    job: &Admitted,
    lease: &Lease,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<RunOutput, RunnerError> {
    let (output, chunks) = Output::channel();
    let live = LiveLog::start(chunks, ctx.queue.log_sink(&job.id, lease));
    let outcome = ctx.runner.run(&job.req, &output, cancel).await;
    live.finish(output, LOG_FLUSH_GRACE).await;
    outcome
}

/// Validates the claimed job and builds its run request; or the report that ends it at once:
/// malformed, cancelled before it ran, out of attempts, refused by the runner.
fn admit(ctx: &Context, claimed: &Claimed) -> Result<Admitted, Box<Refused>> {
    let lease = &claimed.lease;
    let waited = Duration::from_millis(now_ms().saturating_sub(claimed.enqueued_at_ms));
    let (id, spec) = match validate(&ctx.cfg, claimed) {
        Ok(ok) => ok,
        Err((reason, message)) => {
            let labels = ctx.metrics.labels(lease.priority, None);
            ctx.metrics.claimed(labels, waited);
            let id = JobId::parse(&lease.job_id).unwrap_or_else(|_| JobId::generate());
            let mut result =
                JobResult::without_output(id, Status::Rejected, Some(message), claimed.attempts);
            result.worker = Some(ctx.worker_id.clone());
            return Err(Box::new(Refused {
                report: Report::DeadLetter {
                    result,
                    cause: DeadLetterCause::Rejected(reason),
                },
                labels,
                ttl_s: ctx.cfg.queue.default_result_ttl_s,
            }));
        }
    };
    tracing::Span::current().record("language", spec.language.as_str());
    let labels = ctx.metrics.labels(lease.priority, Some(&spec.language));
    ctx.metrics.claimed(labels, waited);
    let ttl_s = spec
        .result_ttl_s
        .unwrap_or(ctx.cfg.queue.default_result_ttl_s);
    let max_attempts = spec
        .max_attempts
        .unwrap_or(ctx.cfg.queue.default_max_attempts);
    let refuse = |status, error: String, cause: Option<DeadLetterCause>| {
        let result = result(ctx, &id, claimed.attempts, status, error);
        let report = match cause {
            Some(cause) => Report::DeadLetter { result, cause },
            None => Report::Finish(result),
        };
        Err(Box::new(Refused {
            report,
            labels,
            ttl_s,
        }))
    };
    if claimed.cancel_requested {
        return refuse(Status::Cancelled, "cancelled before it ran".into(), None);
    }
    if claimed.attempts > max_attempts {
        // Earlier executions died with their worker (the lease expired): a poison job.
        let msg =
            format!("{max_attempts} attempt(s) started and none finished (worker lost each time)");
        let cause = DeadLetterCause::WorkersKeptDying { max_attempts };
        return refuse(Status::Dead, msg, Some(cause));
    }
    // The runner's own limits (e.g. how long one argument may be) count as admission too.
    let admitted = request(&ctx.cfg, spec, claimed.attempts, &ctx.fleet)
        .and_then(|r| ctx.runner.admit(&r).map(|()| r));
    match admitted {
        Ok(req) => Ok(Admitted {
            id,
            req,
            labels,
            ttl_s,
        }),
        Err(e) => refuse(
            Status::Rejected,
            e.to_string(),
            Some(DeadLetterCause::Rejected(DeadLetterReason::InvalidSpec)),
        ),
    }
}

/// What to do after an infrastructure failure: hand the job back when the runner is down,
/// otherwise retry or dead-letter it as [`decide`] says.
async fn runner_failed(
    ctx: &Context,
    lease: &Lease,
    job: &Admitted,
    attempts: u32,
    e: &RunnerError,
) -> Report {
    ctx.metrics.emit(Event::RunnerFailed(e));
    let message = error_chain(e);
    let jitter: f64 = rand::random();
    if e.kind() != RunnerErrorKind::Permanent && ctx.gate.unavailable(e).await {
        // Not the job's failure: the runner is down. Claims stop until it is back.
        let delay_ms = backoff_ms(1, &ctx.cfg.retry, jitter);
        let cause = HandBackCause::RunnerUnavailable { error: message };
        return Report::HandBack { cause, delay_ms };
    }
    let history = ctx.queue.failure_history(lease).await.unwrap_or_default();
    match decide(e.kind(), history, now_ms(), &ctx.cfg.retry, jitter) {
        Disposition::Retry { delay_ms } => Report::Retry {
            delay_ms,
            error: message,
            failures: history.failures + 1,
            reason: e.as_label(),
        },
        Disposition::DeadLetter { reason } => {
            let message = match (reason, history.failing_since_ms) {
                (DeadLetterReason::InfraTimeout, Some(since)) => format!(
                    "infrastructure kept failing for {} s ({} tries); last error: {message}",
                    now_ms().saturating_sub(since) / 1000,
                    history.failures + 1
                ),
                _ => message,
            };
            let result = result(ctx, &job.id, attempts, Status::Dead, message);
            let cause = DeadLetterCause::RunnerGaveUp(reason);
            Report::DeadLetter { result, cause }
        }
    }
}

/// A result with a status and an error, and no output.
fn result(ctx: &Context, id: &JobId, attempts: u32, status: Status, error: String) -> JobResult {
    let mut r = JobResult::without_output(id.clone(), status, Some(error), attempts);
    r.worker = Some(ctx.worker_id.clone());
    r.runner = Some(ctx.runner.name().to_owned());
    r
}

/// The result of a job cancelled while it ran, with the output it printed before it was
/// stopped.
fn cancelled(
    ctx: &Context,
    job: &Admitted,
    claimed: &Claimed,
    out: Option<RunOutput>,
) -> JobResult {
    let error = "cancelled while running".to_owned();
    let mut result = result(ctx, &job.id, claimed.attempts, Status::Cancelled, error);
    if let Some(out) = out {
        result.stdout = out.stdout;
        result.stderr = out.stderr;
        result.compile_output = out.compile_output;
        result.durations.compile_ms = out.compile_ms;
        result.durations.run_ms = out.run_ms;
    }
    result
}

/// `tests`: how many tests the job has, if it has tests.
fn completed(
    ctx: &Context,
    id: &JobId,
    claimed: &Claimed,
    started_ms: u64,
    out: RunOutput,
    tests: Option<usize>,
) -> JobResult {
    let finished = now_ms();
    // A build that failed ran no test: `tests` is empty, the summary still counts them all.
    let summary = tests.map(|total| Summary {
        total: u32::try_from(total).unwrap_or(u32::MAX),
        ..Summary::of(&out.tests)
    });
    JobResult {
        v: quayside_common::job::PROTOCOL_VERSION,
        id: id.clone(),
        status: out.status,
        exit_code: out.exit_code,
        signal: out.signal,
        stdout: out.stdout,
        stderr: out.stderr,
        compile_output: out.compile_output,
        error: out.error,
        durations: Durations {
            queued_ms: started_ms.saturating_sub(claimed.enqueued_at_ms),
            compile_ms: out.compile_ms,
            run_ms: out.run_ms,
            total_ms: finished.saturating_sub(claimed.enqueued_at_ms),
        },
        cpu_ms: out.cpu_ms,
        peak_memory_bytes: out.peak_memory_bytes,
        tests: out.tests,
        summary,
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
    let limits = resolve_limits(cfg, &spec)?;
    let compare = spec.compare_mode();
    let tests = spec.tests.as_deref().map(|cases| {
        Arc::new(
            TestPlan::new(
                cases,
                &limits,
                &spec.args,
                compare,
                spec.stop_on_failure,
                cfg.limits.test_output_kept_bytes,
                cfg.limits.max_result_output_bytes,
            )
            .with_checker(spec.checker.as_ref().map(|c| {
                // Admission checked that the language is known and uses the job's image.
                let lang = cfg.languages.get(&c.language).cloned().unwrap_or_default();
                let (build, run) = build_and_run(&lang, &c.compiler_options, &c.files);
                PlannedChecker {
                    files: c.files.clone(),
                    build,
                    run,
                }
            })),
        )
    });
    Ok(RunRequest {
        limits: tests
            .as_ref()
            .map_or(limits, |plan| plan.sandbox_limits(&limits)),
        tests,
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
    fn a_job_with_tests_or_a_checker_is_run() {
        let cfg = Config::load(None).expect("defaults");
        let mut s = spec();
        s.files = [("main.c".into(), "int main(){}".into())].into();
        s.tests = Some(vec![quayside_common::cases::TestCase {
            name: "01".into(),
            stdin: String::new(),
            args: None,
            expected_stdout: Some("1\n".into()),
            limits: Default::default(),
        }]);
        admission::check(&cfg, &s).expect("the spec itself is valid");
        validate(&cfg, &claimed(&s)).expect("tests run");
        s.checker = Some(quayside_common::cases::Checker {
            language: "c".into(),
            files: [("check.c".into(), "int main(){}".into())].into(),
            compiler_options: Vec::new(),
        });
        s.tests.as_mut().expect("tests")[0].expected_stdout = None;
        admission::check(&cfg, &s).expect("the spec itself is valid");
        let (id, spec) = validate(&cfg, &claimed(&s)).expect("a checker runs");
        let req = request(&cfg, spec, 1, &Fleet::default()).expect("request");
        let plan = req.tests.expect("the tests go to the runner");
        let checker = plan
            .checker
            .as_ref()
            .expect("the checker goes to the runner");
        assert_eq!(id, s.id);
        assert!(checker.build.contains("'check.c'"), "{}", checker.build);
        assert_eq!(
            req.limits.run_wall_time_ms,
            plan.tests[0].limits.run_wall_time_ms + 1_250,
            "the sandbox's wall time holds every test, plus 250 ms each and 1 s"
        );
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
        let e = RunnerError::Api {
            call: "cannot create container".into(),
            source: Some("connection refused".into()),
        };
        assert_eq!(
            error_chain(&e),
            "cannot create container: connection refused"
        );
    }
}
