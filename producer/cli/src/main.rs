//! `quayside`: enqueue jobs, wait for them, follow logs, cancel, manage dead letters, read stats.
//!
//! Exit codes scripts can rely on: 0 ok (for `wait`/`submit --wait`: the job succeeded),
//! 1 the job ended but did not succeed, 2 usage or invalid job, 3 job or batch not found,
//! 4 timed out waiting, 5 Redis or other infrastructure error; 130 Ctrl-C while following a batch.
//!
//! - `args`: the subcommands and flags (clap); `job_flags`: the job-spec flags `submit` and
//!   `batch` share.
//! - `submit`, `batch`, `dlq`, `serve`: one file per subcommand that is more than a call.
//! - `print`, `terminal`: what is printed, as text (escaped for a terminal) or `--json`.

mod args;
mod batch;
mod dlq;
mod job_flags;
mod languages;
mod print;
mod submit;
mod terminal;

use std::process::ExitCode;
use std::time::Duration;

use args::{Cli, Command};
use clap::Parser;
use dlq::dlq;
use futures_util::StreamExt as _;
use print::{print_check, print_result, print_stats, report};
use quayside_common::config::Config;
use quayside_common::JobId;
use quayside_producer::{Error, Producer};
use submit::submit;

mod serve;
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

/// `quayside pause|resume [--tenant T]`.
async fn pause(
    producer: &quayside_producer::Producer,
    tenant: Option<String>,
    pause: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let change = match &tenant {
        None => producer.set_paused(pause).await?,
        Some(t) => producer.set_tenant_paused(t, pause).await?,
    };
    let state = if pause { "paused" } else { "running" };
    let changed = change == quayside_producer::PauseChange::Changed;
    let queue = producer.keys().queue();
    let what = match &tenant {
        None => format!("queue {queue}"),
        Some(t) => format!("tenant {} of queue {queue}", terminal::text(t)),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"queue": queue, "tenant": tenant, "state": state, "changed": changed})
        );
    } else if changed {
        println!("{what} {state}");
    } else {
        println!("{what} was already {state}");
    }
    Ok(ExitCode::SUCCESS)
}

fn exit_code_of(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Error>() {
        Some(Error::Invalid(_) | Error::QueueFull { .. }) => 2,
        Some(Error::NotFound(_) | Error::BatchNotFound(_)) => 3,
        Some(Error::Timeout { .. }) => 4,
        // EX_TEMPFAIL: the tenant's queue drains; the same command succeeds later.
        Some(Error::TenantQueueFull { .. }) => 75,
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
        Command::Submit(args) => submit(&producer, &cfg.languages, *args, json).await,
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
        // Needs no Redis either: the table is the configuration's.
        Command::Languages => {
            print!("{}", languages::render(&cfg, json)?);
            Ok(ExitCode::SUCCESS)
        }
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
        Command::Pause { tenant } => pause(&producer, tenant, true, json).await,
        Command::Resume { tenant } => pause(&producer, tenant, false, json).await,
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
