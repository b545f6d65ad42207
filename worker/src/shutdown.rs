//! Signals: the first SIGINT or SIGTERM starts a graceful drain, a second exits at once (safe:
//! leases expire and live workers take the jobs over).

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Spawns the signal watcher; `token` fires on the first signal.
///
/// # Panics
/// If signal handlers cannot be installed (startup only).
pub fn watch_signals(token: CancellationToken) {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining (send another to exit now)");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting without waiting for running jobs");
        std::process::exit(130);
    });
}

/// Sleeps, or returns true at once if `stop` fires first.
pub async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
