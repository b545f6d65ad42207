//! `quayside`: enqueue jobs, wait for them, follow logs, cancel, manage dead letters, read stats.
//!
//! Exit codes scripts can rely on: 0 ok (for `wait`/`submit --wait`: the job succeeded),
//! 1 the job ended but did not succeed, 2 usage or invalid job, 3 job or batch not found,
//! 4 timed out waiting, 5 Redis or other infrastructure error; 130 Ctrl-C while following a batch.

mod batch;
mod job_flags;
mod terminal;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use job_flags::{collect, JobFlags};
use quayside_common::config::Config;
use quayside_common::wire::decode_spec;
use quayside_common::{JobId, JobResult, JobSpec, Status};
use quayside_producer::{Error, Producer, QueueStats};

mod serve;

#[derive(Debug, Parser)]
#[command(version, about = "Quayside job queue client")]
struct Cli {
    /// TOML config file (defaults < file < QUAYSIDE_* environment).
    #[arg(long, short, global = true, env = "QUAYSIDE_CONFIG")]
    config: Option<PathBuf>,
    /// Redis URL; overrides the config.
    #[arg(long, global = true)]
    redis_url: Option<String>,
    /// Queue name; overrides the config.
    #[arg(long, short, global = true)]
    queue: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue a job from source files (folders are walked) or from a JSON spec.
    Submit(Box<SubmitArgs>),
    /// Show a job's state and result.
    Status {
        /// Job id.
        id: String,
    },
    /// Wait for a job's result (no polling).
    Wait {
        /// Job id.
        id: String,
        /// Give up after this many seconds (exit code 4).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Print a job's log; with --follow, live until it ends.
    Logs {
        /// Job id.
        id: String,
        /// Keep printing new output until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Queue depths, pending, delayed and dead-letter counts, workers.
    Stats,
    /// Find jobs that can no longer reach their next step (a queued job whose stream entry was
    /// trimmed, a running one whose entry or consumer group was lost, a lost retry) and ended
    /// jobs whose keys would never expire. Exit 1 when problems were found and not repaired.
    /// Safe against a live fleet: each record is checked and repaired in one atomic step.
    Check {
        /// Put each problem right: queue the job again, reschedule the retry, create the
        /// missing consumer group, set the TTL.
        #[arg(long)]
        repair: bool,
    },
    /// Enqueue a folder, glob or manifest as one batch; follow, summarize or cancel a batch.
    Batch(Box<batch::BatchArgs>),
    /// Print the full Lua source of a protocol script (for clients in other languages to EVAL).
    Script {
        /// Script name.
        #[arg(value_parser = quayside_common::scripts::BODIES.map(|(name, _)| name))]
        name: String,
    },
    /// Serve the HTTP gateway (docs/http.md) until SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// List dead letters, oldest first.
    List {
        /// List at most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Queue dead-lettered jobs again (by dead-letter entry id, or all).
    Replay {
        /// Dead-letter entry ids, as `dlq list` prints them.
        entries: Vec<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    Purge,
}

#[derive(Debug, clap::Args)]
struct SubmitArgs {
    /// Source files or folders; names inside the job are paths relative to the folder given,
    /// or the file name for a single file.
    files: Vec<PathBuf>,
    /// A complete JSON job spec (file, or - for stdin) instead of files and flags.
    #[arg(long, conflicts_with = "files")]
    spec: Option<PathBuf>,
    /// Job id (idempotency key); generated when absent.
    #[arg(long)]
    id: Option<String>,
    /// Batch id to count the job in (`quayside batch status ID`); none when absent.
    #[arg(long)]
    batch: Option<String>,
    #[command(flatten)]
    job: JobFlags,
    /// Wait for the result and exit with its status.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up waiting after this many seconds (exit code 4); the job runs on.
    #[arg(long)]
    timeout: Option<f64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quayside: {}", terminal::text(&format!("{e:#}")));
            ExitCode::from(exit_code_of(&e))
        }
    }
}

fn exit_code_of(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Error>() {
        Some(Error::Invalid(_) | Error::QueueFull { .. }) => 2,
        Some(Error::NotFound(_) | Error::BatchNotFound(_)) => 3,
        Some(Error::Timeout { .. }) => 4,
        Some(_) => 5,
        None if e.downcast_ref::<UsageError>().is_some() => 2,
        None => 5,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(cli.config.as_deref()).map_err(|e| usage(e.to_string()))?;
    if let Some(url) = cli.redis_url {
        cfg.redis.url = url;
    }
    if let Some(q) = cli.queue {
        cfg.queue.name = q;
    }
    cfg.validate().map_err(|e| usage(e.to_string()))?;
    let producer = Producer::new(&cfg)?;
    let json = cli.json;
    match cli.command {
        Command::Submit(args) => submit(&producer, *args, json).await,
        Command::Status { id } => {
            let id = parse_id(&id)?;
            let st = producer.status(&id).await?.ok_or(Error::NotFound(id))?;
            if json {
                println!("{}", terminal::json(&st)?);
            } else {
                println!("{} {} (attempts {})", st.id, st.state, st.attempts);
                if let Some(r) = &st.result {
                    print_result(r);
                } else if let Some(e) = &st.last_error {
                    println!("last error: {}", terminal::line(e));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait { id, timeout } => {
            let r = producer
                .wait(&parse_id(&id)?, timeout.map(Duration::from_secs_f64))
                .await?;
            Ok(report(&r, json))
        }
        Command::Logs { id, follow } => {
            let mut logs = producer.logs(&parse_id(&id)?, follow);
            while let Some(entry) = logs.next().await {
                let entry = entry?;
                if json {
                    println!("{}", terminal::json(&entry)?);
                } else if entry.source == "end" {
                    eprintln!(
                        "[job ended: {}]",
                        terminal::line(&String::from_utf8_lossy(&entry.data))
                    );
                } else if entry.source == "stdout" {
                    print!("{}", terminal::bytes(&entry.data));
                } else {
                    eprint!("{}", terminal::bytes(&entry.data));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { id } => {
            let outcome = producer.cancel(&parse_id(&id)?).await?;
            if json {
                println!("{}", terminal::json(&outcome)?);
            } else {
                println!("{}", terminal::line(&format!("{outcome:?}")));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { action } => dlq(&producer, action, json).await,
        Command::Batch(args) => batch::run(&producer, &cfg, *args, json).await,
        // Needs no Redis: the producer connects lazily, on its first command.
        Command::Script { name } => {
            let (_, body) = quayside_common::scripts::BODIES
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| usage(format!("no script named {name}")))?;
            print!("{}", quayside_common::scripts::source(body));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve::run(cfg, producer, args).await,
        Command::Check { repair } => {
            let report = producer.check(repair).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_check(&report);
            }
            let unrepaired = !report.counts.is_empty() && !report.repaired;
            Ok(if unrepaired {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Stats => {
            let stats = producer.stats().await?;
            if json {
                println!("{}", terminal::json(&stats)?);
            } else {
                print_stats(&stats);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_id(id: &str) -> anyhow::Result<JobId> {
    JobId::parse(id).map_err(|e| usage(format!("invalid job id: {e}")))
}

async fn submit(producer: &Producer, a: SubmitArgs, json: bool) -> anyhow::Result<ExitCode> {
    let spec = match &a.spec {
        Some(path) => {
            let mut raw = Vec::new();
            if path == Path::new("-") {
                std::io::stdin().read_to_end(&mut raw)?;
            } else {
                raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            }
            decode_spec(&raw).map_err(|e| usage(e.to_string()))?
        }
        None => spec_from_flags(&a)?,
    };
    let enqueued = producer.enqueue(&spec).await?;
    if !a.wait {
        if json {
            println!("{}", terminal::json(&enqueued)?);
        } else if enqueued.created {
            println!("{}", enqueued.id);
        } else {
            let state = enqueued
                .state
                .map_or("ended, record expired", |s| s.as_str());
            println!("{} (already exists: {state})", enqueued.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = producer
        .wait(&spec.id, a.timeout.map(Duration::from_secs_f64))
        .await?;
    Ok(report(&r, json))
}

fn spec_from_flags(a: &SubmitArgs) -> anyhow::Result<JobSpec> {
    if a.job.language.is_none() {
        return Err(usage("--language is required (or use --spec)"));
    }
    if a.files.is_empty() {
        return Err(usage("give at least one source file or folder"));
    }
    let mut spec = a.job.template()?;
    for path in &a.files {
        collect(path, path, &mut spec.files)?;
    }
    if let Some(id) = &a.id {
        spec.id = parse_id(id)?;
    }
    spec.batch = a.batch.clone();
    Ok(spec)
}

fn report(r: &JobResult, json: bool) -> ExitCode {
    if json {
        match terminal::json(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("quayside: {e}"),
        }
    } else {
        print_result(r);
    }
    if r.status == Status::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_result(r: &JobResult) {
    let code = r
        .exit_code
        .map(|c| format!(" exit {c}"))
        .unwrap_or_default();
    println!(
        "{}: {}{code} (attempts {}, {} ms)",
        r.id, r.status, r.attempts, r.durations.total_ms
    );
    for (name, c) in [
        ("compile output", &r.compile_output),
        ("stdout", &r.stdout),
        ("stderr", &r.stderr),
    ] {
        if !c.is_empty() {
            let more = if c.truncated { " (truncated)" } else { "" };
            println!(
                "--- {name}{more}\n{}",
                terminal::bytes(&c.bytes()).trim_end()
            );
        }
    }
    if let Some(e) = &r.error {
        println!("--- error\n{}", terminal::text(e));
    }
}

fn print_check(r: &quayside_producer::CheckReport) {
    let verb = if r.repaired { "repaired" } else { "found" };
    if r.counts.is_empty() {
        println!("checked {} job records: no problems", r.records);
        return;
    }
    let total: u64 = r.counts.values().sum();
    println!("checked {} job records: {verb} {total} problems", r.records);
    for (problem, n) in &r.counts {
        println!("  {problem:<22} {n}");
    }
    for f in &r.findings {
        println!("{} {}", f.id, f.problem);
    }
    if !r.repaired {
        println!("run `quayside check --repair` to put them right");
    }
}

fn print_stats(s: &QueueStats) {
    println!("queue {}", s.queue);
    println!(
        "{:<8} {:>8} {:>8} {:>8}",
        "priority", "waiting", "running", "depth"
    );
    for p in &s.priorities {
        println!(
            "{:<8} {:>8} {:>8} {:>8}",
            p.priority, p.waiting, p.pending, p.depth
        );
    }
    println!(
        "{:<8} {:>8} {:>8} {:>8}",
        "total",
        s.waiting(),
        s.pending(),
        s.waiting() + s.pending()
    );
    println!(
        "delayed retries: {}   dead letters: {}",
        s.delayed, s.dead_letters
    );
    let num = |w: &quayside_producer::WorkerInfo, k: &str| w.0.get(k).and_then(|v| v.as_u64());
    // Worker fields come from Redis, which anyone with queue access can write.
    let text = |w: &quayside_producer::WorkerInfo, k: &str| {
        terminal::line(w.0.get(k).and_then(|v| v.as_str()).unwrap_or("-")).into_owned()
    };
    println!("workers: {}", s.workers.len());
    if s.workers.is_empty() {
        return;
    }
    println!(
        "  {:<32} {:<20} {:<10} {:>5} {:>9} {:<8}",
        "id", "host", "runner", "slots", "in_flight", "version"
    );
    let (mut slots, mut in_flight) = (0, 0);
    for w in &s.workers {
        let (ws, wi) = (num(w, "slots"), num(w, "in_flight"));
        slots += ws.unwrap_or(0);
        in_flight += wi.unwrap_or(0);
        let show = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "  {:<32} {:<20} {:<10} {:>5} {:>9} {:<8}",
            text(w, "id"),
            text(w, "host"),
            text(w, "runner"),
            show(ws),
            show(wi),
            text(w, "version")
        );
    }
    println!(
        "  {:<32} {:<20} {:<10} {:>5} {:>9}",
        "total", "", "", slots, in_flight
    );
}

async fn dlq(producer: &Producer, action: DlqAction, json: bool) -> anyhow::Result<ExitCode> {
    match action {
        DlqAction::List { count } => {
            let letters = producer.dlq_list(count).await?;
            if json {
                println!("{}", terminal::json(&letters)?);
            } else {
                for l in letters {
                    let shown = format!(
                        "{} job={} reason={} attempts={} error={}",
                        l.entry, l.job_id, l.reason, l.attempts, l.error
                    );
                    println!("{}", terminal::line(&shown));
                }
            }
        }
        DlqAction::Replay { entries, all } => {
            let entries = if all {
                producer
                    .dlq_list(usize::MAX >> 1)
                    .await?
                    .into_iter()
                    .map(|l| l.entry)
                    .collect()
            } else if entries.is_empty() {
                return Err(usage("name dead-letter entries to replay, or --all"));
            } else {
                entries
            };
            for e in entries {
                let outcome = producer.dlq_replay(&e).await?;
                if json {
                    println!(
                        "{}",
                        terminal::json(&serde_json::json!({ "entry": e, "result": outcome }))?
                    );
                } else {
                    println!("{}", terminal::line(&format!("{e}: {outcome:?}")));
                }
            }
        }
        DlqAction::Purge => {
            let n = producer.dlq_purge().await?;
            if json {
                println!("{}", terminal::json(&serde_json::json!({ "purged": n }))?);
            } else {
                println!("purged {n} dead letters");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Paths (`quayside dlq replay --all`) of every subcommand, flag and argument that
    /// `--help` shows without saying what it is for.
    fn undocumented(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = arg
                    .get_long()
                    .map(|l| format!("--{l}"))
                    .unwrap_or_else(|| format!("<{}>", arg.get_id()));
                found.push(format!("{path} {name}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                found.push(sub_path.clone());
            }
            undocumented(sub, &sub_path, found);
        }
    }

    #[test]
    fn every_subcommand_flag_and_argument_has_help() {
        let mut cli = super::Cli::command();
        cli.build();
        let mut found = Vec::new();
        undocumented(&cli, "quayside", &mut found);
        assert!(found.is_empty(), "no help text: {found:#?}");
    }
}
