//! `quayside serve`: the HTTP gateway (`quayside_gateway`) as a process: config
//! checks, logging, metrics recorder, listener, and a drain on SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;
use quayside_common::config::Config;
use quayside_gateway::{self as gateway, Gateway};
use quayside_producer::Producer;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; overrides gateway.listen_addr.
    #[arg(long)]
    listen: Option<String>,
}

pub async fn run(mut cfg: Config, producer: Producer, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.listen {
        cfg.gateway.listen_addr = addr;
    }
    cfg.validate().map_err(|e| super::usage(e.to_string()))?;
    cfg.gateway
        .check_serve()
        .map_err(|e| super::usage(e.to_string()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let metrics = if cfg.metrics.enabled {
        Some(gateway::metrics::install().context("installing the metrics recorder")?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(&cfg.gateway.listen_addr)
        .await
        .with_context(|| format!("listening on {}", cfg.gateway.listen_addr))?;
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone())?;
    tracing::info!(
        addr = %listener.local_addr()?,
        queue = %cfg.queue.name,
        tokens = cfg.gateway.tokens.len(),
        config = ?cfg.redacted().gateway,
        "gateway listening"
    );
    if cfg.gateway.tokens.is_empty() {
        tracing::warn!("gateway.allow_unauthenticated: /v1/ answers anyone");
    }
    let gw = Gateway::new(producer, cfg, metrics, shutdown);
    gateway::serve(listener, gw).await.context("serving")?;
    tracing::info!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}

/// The first SIGTERM or SIGINT drains (waits answer, log streams end, requests in flight
/// finish); a second exits at once.
fn watch_signals(token: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining (send another to exit now)");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
    Ok(())
}
