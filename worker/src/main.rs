//! `quayside-worker`: load config, set up logs, build the runner, serve until signalled.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quayside_common::config::Config;
use quayside_worker::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

/// Claims Quayside jobs from Redis and runs them in sandboxes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file (defaults < file < QUAYSIDE_* environment).
    #[arg(long, short, env = "QUAYSIDE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective config (secrets redacted) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log line format (on stderr).
    #[arg(long, value_enum, default_value = "pretty")]
    log_format: LogFormat,
    /// Log level (a tracing filter) when RUST_LOG is unset; overrides `log.level`.
    #[arg(long)]
    log_level: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quayside-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        match toml::to_string_pretty(&cfg.redacted()) {
            Ok(s) => print!("{s}"),
            Err(e) => {
                eprintln!("quayside-worker: cannot render config: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    telemetry::init(
        args.log_format,
        args.log_level.as_deref().unwrap_or(&cfg.log.level),
    );
    // One id for the consumer name and the runner's sandbox labels.
    cfg.worker
        .id
        .get_or_insert_with(quayside_worker::generate_worker_id);

    let runner = match quayside_worker::runner::build(&cfg) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot build runner");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        worker = cfg.worker.id.as_deref().unwrap_or_default(),
        queue = %cfg.queue.name,
        redis = %quayside_common::connection::endpoint(&cfg.redis),
        runner = runner.name(),
        slots = cfg.worker.slots,
        languages = %cfg.languages.keys().map(String::as_str).collect::<Vec<_>>().join(","),
        "worker starting (--print-config prints the whole effective config)"
    );
    let shutdown = CancellationToken::new();
    quayside_worker::shutdown::watch_signals(shutdown.clone());
    match quayside_worker::run(cfg, runner, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{:#}", anyhow::Error::from(e)), "worker failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_flag_has_help() {
        let undocumented: Vec<_> = super::Args::command()
            .get_arguments()
            .filter(|a| a.get_help().is_none())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(undocumented.is_empty(), "no help text: {undocumented:?}");
    }
}
