//! `quayside-test-worker`: the real worker (`quayside_worker::run`) with the test-only
//! [`ScriptRunner`](quayside_e2e::script_runner::ScriptRunner), so queue tests run real worker
//! processes that can be killed without needing Docker.

use std::path::PathBuf;
use std::sync::Arc;

use quayside_common::config::Config;
use quayside_worker::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).map(PathBuf::from);
    let cfg = Config::load(path.as_deref())?;
    telemetry::init(LogFormat::Pretty, "info");
    let shutdown = CancellationToken::new();
    quayside_worker::shutdown::watch_signals(shutdown.clone());
    quayside_worker::run(
        cfg,
        Arc::new(quayside_e2e::script_runner::ScriptRunner),
        shutdown,
    )
    .await?;
    Ok(())
}
