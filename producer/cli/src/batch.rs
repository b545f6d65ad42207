//! `quayside batch`: enqueue a folder, glob or manifest under one batch id (pipelined), follow
//! it live from its channel, summarize it (table, JUnit, JSON lines), show or cancel it.

mod inputs;
mod junit;
mod per_test;
mod progress;
mod summary;
mod tests_dir;
mod tests_flags;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;
use quayside_common::config::Config;
use quayside_common::JobId;
use quayside_producer::{BatchStatus, Error, Producer};

use crate::job_flags::JobFlags;
use crate::{terminal, usage};
use progress::Followed;

/// Exit code when Ctrl-C stops following (the shell's 128 + SIGINT); the batch runs on.
const INTERRUPTED: u8 = 130;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    action: Option<BatchAction>,
    #[command(flatten)]
    submit: SubmitBatch,
}

#[derive(Debug, Subcommand)]
enum BatchAction {
    /// List the newest batches with their progress (the last 1,000 made in 7 days, newest
    /// first).
    List {
        /// List at most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a batch's counters (kept in Redis: works from any terminal, after restarts).
    Status {
        /// Batch id.
        id: String,
    },
    /// Follow a batch live until it ends, then summarize it like `batch --wait`.
    Wait {
        /// Batch id.
        id: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Cancel every job of the batch that has not ended.
    Cancel {
        /// Batch id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct SubmitBatch {
    /// Folders (one job per source file, one per sub-folder project; the folder's headers
    /// .h/.hpp/.hh/.inc go to each of its source files) or single source files.
    sources: Vec<PathBuf>,
    /// Glob pattern (repeatable, quote it); each matching source file or folder is one job,
    /// matching headers go to each.
    #[arg(long = "glob", value_name = "PATTERN")]
    globs: Vec<String>,
    /// Files (headers, data) added to every job: a glob pattern (repeatable, quote it); a file
    /// keeps its name, a folder its name with its files under it.
    #[arg(long = "shared", value_name = "GLOB")]
    shared: Vec<String>,
    /// JSON-lines file (or - for stdin): one job spec per line; `v`, `id`, `batch` optional.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["sources", "globs", "shared", "JobFlags", "TestsFlags"]
    )]
    manifest: Option<PathBuf>,
    /// Batch id; generated when absent. A job's id comes from the batch id, its path and its
    /// content (files, flags, tests): the same inputs enqueue nothing new, an edited one runs.
    #[arg(long)]
    batch_id: Option<String>,
    /// Follow the batch until it ends, then print the summary; exit 1 if any job failed.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    follow: FollowArgs,
    #[command(flatten)]
    job: JobFlags,
    #[command(flatten)]
    tests: tests_flags::TestsFlags,
}

#[derive(Debug, clap::Args)]
struct FollowArgs {
    /// Write JUnit XML to FILE: one testcase per job, or with tests one testsuite per job and
    /// one testcase per test.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Stop following after this many seconds (exit code 4); the batch runs on.
    #[arg(long)]
    timeout: Option<f64>,
    /// How many of the slowest jobs (and of the slowest tests) the summary lists.
    #[arg(long, default_value_t = 5)]
    slowest: usize,
    /// How many failures the summary shows with their output.
    #[arg(long, default_value_t = 10)]
    failures: usize,
}

/// Runs `quayside batch ...`.
///
/// # Errors
/// Usage errors (exit 2), unknown batch (3), Redis errors (5).
pub async fn run(
    producer: &Producer,
    cfg: &Config,
    args: BatchArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match args.action {
        None => submit(producer, cfg, args.submit, json).await,
        Some(BatchAction::Wait { id, follow }) => {
            check_batch_id(&id)?;
            wait(producer, &id, &HashMap::new(), &follow, json).await
        }
        Some(BatchAction::List { limit }) => {
            let batches = producer.recent_batches(limit, None).await?;
            if json {
                println!("{}", terminal::json(&batches)?);
            } else {
                print_list(&batches);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BatchAction::Status { id }) => {
            let status = producer
                .batch_status(&id)
                .await?
                .ok_or(Error::BatchNotFound(id))?;
            if json {
                println!("{}", terminal::json(&status)?);
            } else {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BatchAction::Cancel { id }) => {
            let tally = producer.cancel_batch(&id).await?;
            if json {
                println!("{}", terminal::json(&tally)?);
            } else {
                let id = terminal::line(&id);
                println!(
                    "batch {id}: {} cancelled, {} running told to stop, {} had already ended{}",
                    tally.cancelled,
                    tally.requested,
                    tally.already_ended,
                    if tally.missing > 0 {
                        format!(", {} expired", tally.missing)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_batch_id(id: &str) -> anyhow::Result<()> {
    JobId::parse(id).map_err(|e| usage(format!("invalid batch id: {e}")))?;
    Ok(())
}

async fn submit(
    producer: &Producer,
    cfg: &Config,
    a: SubmitBatch,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !a.wait && a.follow.junit.is_some() {
        return Err(usage(
            "--junit needs --wait (or use `quayside batch wait ID --junit FILE`)",
        ));
    }
    let batch = match a.batch_id {
        Some(b) => b,
        None => format!("batch-{}", JobId::generate()),
    };
    check_batch_id(&batch)?;
    let planned = match &a.manifest {
        Some(path) => inputs::from_manifest(path, &batch)?,
        None if a.sources.is_empty() && a.globs.is_empty() => {
            return Err(usage(
                "give folders or files, --glob PATTERN or --manifest FILE",
            ))
        }
        None => {
            let mut template = a.job.template()?;
            a.tests.apply(&mut template, &cfg.languages)?;
            let paths = inputs::Paths {
                sources: &a.sources,
                globs: &a.globs,
                shared: &a.shared,
            };
            let plan = inputs::from_paths(&paths, &template, &cfg.languages, &batch)?;
            if !plan.skipped.is_empty() {
                eprintln!(
                    "quayside: {} file(s) are no language's source and became no job (--shared adds files to every job): {}",
                    plan.skipped.len(),
                    terminal::line(&plan.skipped.join(", "))
                );
            }
            plan.jobs
        }
    };
    let mut names = HashMap::with_capacity(planned.len());
    let specs: Vec<_> = planned
        .into_iter()
        .map(|mut p| {
            p.spec.batch = Some(batch.clone());
            p.spec
                .labels
                .entry(inputs::NAME_LABEL.to_owned())
                .or_insert_with(|| p.name.clone());
            names.insert(p.spec.id.clone(), p.name);
            p.spec
        })
        .collect();
    let started = Instant::now();
    let enqueued = producer.enqueue_many(&specs).await?;
    let created = enqueued.iter().filter(|e| e.created).count();
    eprintln!(
        "batch {batch}: {} jobs enqueued: {created} new, {} unchanged, in {}",
        specs.len(),
        specs.len() - created,
        progress::human(started.elapsed())
    );
    if !a.wait {
        if json {
            let line =
                serde_json::json!({ "batch": batch, "jobs": specs.len(), "created": created });
            println!("{}", terminal::json(&line)?);
        } else {
            println!("{batch}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait(producer, &batch, &names, &a.follow, json).await
}

async fn wait(
    producer: &Producer,
    batch: &str,
    names: &HashMap<JobId, String>,
    f: &FollowArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let timeout = f.timeout.map(Duration::from_secs_f64);
    let status = match progress::follow(producer, batch, names, timeout).await? {
        Followed::Done(status) => status,
        Followed::TimedOut => {
            eprintln!(
                "quayside: batch {batch} not done after {}s; its jobs run on. Resume with: quayside batch wait {batch}",
                f.timeout.unwrap_or_default()
            );
            return Ok(ExitCode::from(4));
        }
        Followed::Interrupted => {
            eprintln!(
                "\nstopped following batch {batch}; its jobs run on. Resume with: quayside batch wait {batch}   (cancel: quayside batch cancel {batch})"
            );
            return Ok(ExitCode::from(INTERRUPTED));
        }
    };
    let members = summary::rows(producer, batch, names).await?;
    let rows = &members.rows;
    if let Some(path) = &f.junit {
        let wall = match (status.created_at_ms, status.finished_at_ms) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1000.0,
            _ => 0.0,
        };
        std::fs::write(path, junit::render(batch, rows, wall))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if json {
        summary::json_lines(&mut out, batch, rows)?;
    } else {
        summary::print(&mut out, &status, &members, f.slowest, f.failures)?;
    }
    // Every member is accounted for (none lost from the list), and each job's latest version
    // succeeded.
    let all_ok = (rows.len() + members.superseded) as u64 == status.total
        && rows.iter().all(summary::Row::succeeded);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_status(s: &BatchStatus) {
    let state = if s.done { "done" } else { "running" };
    println!(
        "batch {}: {state}, {}/{} ended",
        terminal::line(&s.id),
        s.total - s.remaining,
        s.total
    );
    println!(
        "  running {}, queued {}, succeeded {}, not succeeded {}",
        s.running, s.queued, s.succeeded, s.unsuccessful
    );
    // Counter names come from Redis, which anyone with queue access can write.
    for (status, n) in &s.by_status {
        println!("  {:<16} {n:>7}", terminal::line(status));
    }
    if let (Some(a), Some(b)) = (s.created_at_ms, s.finished_at_ms) {
        println!(
            "  wall time {}",
            progress::human(Duration::from_millis(b.saturating_sub(a)))
        );
    }
}

/// One line per batch, newest first.
fn print_list(batches: &[BatchStatus]) {
    println!(
        "{:<40} {:<16} {:<7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "batch", "tenant", "state", "total", "ok", "not ok", "running", "queued"
    );
    for b in batches {
        println!(
            "{:<40} {:<16} {:<7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            // Batch ids and tenants come from Redis, which anyone with queue access can write.
            terminal::line(&b.id),
            terminal::line(b.tenant.as_deref().unwrap_or("default")),
            if b.done { "done" } else { "running" },
            b.total,
            b.succeeded,
            b.unsuccessful,
            b.running,
            b.queued
        );
    }
}
