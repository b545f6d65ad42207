//! Completion webhooks (`webhooks.*`): which hosts a job's `callback` may name, the default
//! tenant's signing secret, and how long and how hard the fleet tries to deliver. With no
//! `allowed_hosts` (the default) every callback is refused: webhooks are off.

use serde::{Deserialize, Serialize};

use super::check::{at_least, between, invalid};
use super::{ConfigError, Secret};

/// How completion webhooks are admitted and delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Hosts a callback may name: `hooks.example.com`, `*.example.com` (names below it), or an
    /// IP literal, each with an optional `:port`. Empty = webhooks refused.
    pub allowed_hosts: Vec<String>,
    /// Hosts (same patterns) that may be reached at private, loopback, link-local,
    /// unique-local or CGNAT addresses. Empty = never: a callback that is, or resolves only
    /// to, such an address is refused.
    pub allow_private_hosts: Vec<String>,
    /// HMAC-SHA256 key of the default tenant's webhooks (tenants have
    /// `tenants.<name>.webhook_secret`). Redacted wherever the config is printed.
    pub secret: Option<Secret>,
    /// How long after the job ended delivery is retried before the webhook is dead-lettered.
    pub retry_for_s: u64,
    /// Timeout of one POST: connect, TLS, request and response.
    pub timeout_ms: u64,
    /// First retry delay; it doubles per attempt (with ±20 % jitter) up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Whether this worker delivers webhooks (every worker does by default; a fleet may leave
    /// delivery to some). Jobs still enter the outbox either way.
    pub send: bool,
    /// Deliveries one worker makes at once.
    pub concurrency: usize,
    /// How often an idle sender looks for due deliveries.
    pub poll_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allow_private_hosts: Vec::new(),
            secret: None,
            retry_for_s: 3600,
            timeout_ms: 10_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            send: true,
            concurrency: 4,
            poll_ms: 500,
        }
    }
}

impl WebhooksConfig {
    /// How long a sender holds a claimed delivery before another sender may take it: one
    /// timeout plus slack, so a live sender always ends its POST first.
    pub fn lease_ms(&self) -> u64 {
        self.timeout_ms.saturating_mul(2).saturating_add(5_000)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, list) in [
            ("webhooks.allowed_hosts", &self.allowed_hosts),
            ("webhooks.allow_private_hosts", &self.allow_private_hosts),
        ] {
            for p in list {
                crate::callback::check_pattern(p).map_err(|e| invalid(key, e))?;
            }
        }
        if self.secret.as_ref().is_some_and(|s| s.expose().len() < 16) {
            return Err(invalid("webhooks.secret", "must be at least 16 characters"));
        }
        between("webhooks.retry_for_s", self.retry_for_s, 1, 7 * 86_400)?;
        between("webhooks.timeout_ms", self.timeout_ms, 100, 120_000)?;
        between(
            "webhooks.backoff_base_ms",
            self.backoff_base_ms,
            10,
            3_600_000,
        )?;
        at_least(
            "webhooks.backoff_max_ms",
            self.backoff_max_ms,
            self.backoff_base_ms,
        )?;
        between("webhooks.concurrency", self.concurrency, 1, 256)?;
        between("webhooks.poll_ms", self.poll_ms, 10, 60_000)
    }

    pub(super) fn redacted(&self) -> Self {
        Self {
            secret: self.secret.as_ref().map(|_| Secret::redacted()),
            ..self.clone()
        }
    }
}
