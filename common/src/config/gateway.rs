//! Settings of the HTTP gateway (`gateway.*`, `quayside serve`): where it listens, who may call
//! it, and how much one request may carry or wait.

use serde::{Deserialize, Serialize};

use super::check::{at_least, between, invalid, socket_addr};
use super::{ConfigError, LimitsConfig, Secret};

/// Shortest bearer token accepted: guessing must stay out of reach.
pub const MIN_TOKEN_LEN: usize = 16;

/// The HTTP gateway: `POST /v1/jobs` and friends for services that would rather not speak Redis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// `ip:port` the gateway listens on.
    pub listen_addr: String,
    /// Bearer tokens, any of which authorizes a `/v1/` request (at least 16 characters each).
    /// Redacted wherever the config is printed or logged.
    pub tokens: Vec<Secret>,
    /// Serve `/v1/` without any token. `quayside serve` refuses to start with no tokens unless
    /// this is set, so an open gateway is always a decision.
    pub allow_unauthenticated: bool,
    /// Largest request body; larger ones get `413`. Must fit the largest job the limits allow
    /// (`limits.max_source_bytes + limits.max_stdin_bytes`); JSON escaping can double a source.
    pub max_body_bytes: u64,
    /// Longest `GET /v1/jobs/{id}/wait` may hold a request; a larger `timeout` is capped.
    pub max_wait_s: u64,
    /// Most jobs one `POST /v1/batches` may carry.
    pub max_batch_jobs: usize,
    /// Connections served at once (log followers and waits hold one each); further clients
    /// wait in the listen backlog rather than exhaust the gateway.
    pub max_connections: usize,
    /// A client must send its request headers within this long after connecting or after its
    /// previous request (slow-loris clients are dropped).
    pub header_read_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:8080".into(),
            tokens: Vec::new(),
            allow_unauthenticated: false,
            max_body_bytes: 8 << 20,
            max_wait_s: 60,
            max_batch_jobs: 10_000,
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
        }
    }
}

impl GatewayConfig {
    pub(super) fn validate(&self, limits: &LimitsConfig) -> Result<(), ConfigError> {
        socket_addr("gateway.listen_addr", &self.listen_addr)?;
        if self
            .tokens
            .iter()
            .any(|t| t.expose().chars().count() < MIN_TOKEN_LEN)
        {
            return Err(invalid(
                "gateway.tokens",
                format!("every token must be at least {MIN_TOKEN_LEN} characters"),
            ));
        }
        let largest_job = limits.max_source_bytes + limits.max_stdin_bytes;
        if self.max_body_bytes < largest_job {
            return Err(invalid(
                "gateway.max_body_bytes",
                format!(
                    "{} is below the largest job the limits allow ({largest_job} bytes: \
                     limits.max_source_bytes + limits.max_stdin_bytes)",
                    self.max_body_bytes
                ),
            ));
        }
        between("gateway.max_wait_s", self.max_wait_s, 1, 3_600)?;
        at_least("gateway.max_batch_jobs", self.max_batch_jobs, 1)?;
        at_least("gateway.max_connections", self.max_connections, 1)?;
        between(
            "gateway.header_read_timeout_ms",
            self.header_read_timeout_ms,
            100,
            300_000,
        )
    }

    /// Checks what only serving needs: some token, unless an open gateway was asked for.
    ///
    /// # Errors
    /// No tokens and `allow_unauthenticated` unset.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() && !self.allow_unauthenticated {
            return Err(invalid(
                "gateway.tokens",
                "no bearer tokens configured: set gateway.tokens (or \
                 gateway.allow_unauthenticated = true for an open gateway)",
            ));
        }
        Ok(())
    }

    /// A copy with every token replaced, safe to print.
    pub(super) fn redacted(&self) -> Self {
        let mut c = self.clone();
        for t in &mut c.tokens {
            *t = Secret::redacted();
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::assert_refusals;

    #[test]
    fn defaults_are_valid_but_serving_needs_a_token_or_an_explicit_opt_out() {
        let g = GatewayConfig::default();
        g.validate(&LimitsConfig::default()).expect("valid");
        let err = g.check_serve().expect_err("no tokens");
        assert!(err.to_string().contains("gateway.tokens"), "{err}");
        let open = GatewayConfig {
            allow_unauthenticated: true,
            ..GatewayConfig::default()
        };
        open.check_serve().expect("explicitly open");
    }

    #[test]
    fn bad_values_name_their_key() {
        let limits = LimitsConfig::default();
        assert_refusals::<GatewayConfig>(
            |g| g.validate(&limits),
            &[
                (
                    |g| g.listen_addr = "localhost".into(),
                    "gateway.listen_addr",
                ),
                (|g| g.tokens = vec![Secret::new("short")], "gateway.tokens"),
                (|g| g.max_body_bytes = 1 << 20, "gateway.max_body_bytes"),
                (|g| g.max_wait_s = 0, "gateway.max_wait_s"),
                (|g| g.max_batch_jobs = 0, "gateway.max_batch_jobs"),
                (|g| g.max_connections = 0, "gateway.max_connections"),
                (
                    |g| g.header_read_timeout_ms = 50,
                    "gateway.header_read_timeout_ms",
                ),
            ],
        );
    }

    #[test]
    fn tokens_are_redacted() {
        let g = GatewayConfig {
            tokens: vec![Secret::new("a-very-secret-token-1")],
            ..GatewayConfig::default()
        };
        let shown = format!("{:?}", g.redacted());
        assert!(!shown.contains("a-very-secret"), "{shown}");
        assert_eq!(g.redacted().tokens[0].expose(), "***");
    }
}
