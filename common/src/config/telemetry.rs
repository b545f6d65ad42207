//! What a worker tells its operator: `metrics.*` (the operations endpoint and the sampled
//! gauges) and `log.*`.

use serde::{Deserialize, Serialize};

use super::check::{invalid, positive};
use super::ConfigError;

/// The worker's operations endpoint and the metrics it serves there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `/metrics`, `/healthz` and `/readyz`; empty = none.
    pub listen_addr: String,
    /// Record metrics. Off, `/metrics` answers 404 and nothing is sampled (for benchmarks).
    pub enabled: bool,
    /// How often the worker samples queue depths, lag, pending, delayed and dead-letter counts.
    pub sample_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen_addr: "0.0.0.0:9464".into(),
            enabled: true,
            sample_interval_ms: 5_000,
        }
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled {
            positive("metrics.sample_interval_ms", self.sample_interval_ms)?;
        }
        let addr = &self.listen_addr;
        if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen_addr",
                format!("{addr:?} is not an ip:port address (or empty for none)"),
            ));
        }
        Ok(())
    }
}

/// Logging. The filter is `RUST_LOG` when set, else the worker's `--log-level`, else `level`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `quayside_worker=debug,info`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_is_an_address_or_nothing() {
        let mut m = MetricsConfig::default();
        m.validate().expect("defaults");
        m.listen_addr = "nowhere".into();
        let e = m.validate().expect_err("bad addr").to_string();
        assert!(e.contains("metrics.listen_addr"), "{e}");
        m.listen_addr = String::new();
        m.validate().expect("empty disables the listener");
        m.sample_interval_ms = 0;
        let e = m.validate().expect_err("never samples").to_string();
        assert!(e.contains("metrics.sample_interval_ms"), "{e}");
        m.enabled = false;
        m.validate()
            .expect("nothing is sampled when metrics are off");
    }
}
