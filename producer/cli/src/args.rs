//! The command line: subcommands, their flags and help texts (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::job_flags::JobFlags;
use crate::{batch, serve};

#[derive(Debug, Parser)]
#[command(version, about = "Quayside job queue client")]
pub(crate) struct Cli {
    /// TOML config file (defaults < file < QUAYSIDE_* environment).
    #[arg(long, short, global = true, env = "QUAYSIDE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Redis URL; overrides the config.
    #[arg(long, global = true)]
    pub(crate) redis_url: Option<String>,
    /// Queue name; overrides the config.
    #[arg(long, short, global = true)]
    pub(crate) queue: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Queue depths, pending, delayed and dead-letter counts, pause state, workers.
    Stats,
    /// Stop workers claiming from the queue: running jobs finish, enqueues are still accepted,
    /// and the pause holds across worker and Redis restarts until `quayside resume`.
    Pause {
        /// Pause only this tenant (`default`: jobs without a tenant); others keep running.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Let workers claim from a paused queue (or tenant) again (within about a second).
    Resume {
        /// Resume only this tenant (`default`: jobs without a tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
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
    /// Print the language table: image, build, run and compile-only commands with the options
    /// they pass, and each language's default limits (from the config, as workers use it).
    Languages,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqAction {
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
pub(crate) struct SubmitArgs {
    /// Source files or folders; names inside the job are paths relative to the folder given,
    /// or the file name for a single file.
    pub(crate) files: Vec<PathBuf>,
    /// A complete JSON job spec (file, or - for stdin) instead of files and flags.
    #[arg(long, conflicts_with = "files")]
    pub(crate) spec: Option<PathBuf>,
    /// Job id (idempotency key); generated when absent.
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// Batch id to count the job in (`quayside batch status ID`); none when absent.
    #[arg(long)]
    pub(crate) batch: Option<String>,
    #[command(flatten)]
    pub(crate) job: JobFlags,
    /// Wait for the result and exit with its status.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up waiting after this many seconds (exit code 4); the job runs on.
    #[arg(long)]
    pub(crate) timeout: Option<f64>,
}
