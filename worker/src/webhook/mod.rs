//! The completion-webhook sender every worker runs (unless `webhooks.send = false`): it claims
//! due deliveries from the queue's outbox under a lease (`webhook.lua`: two senders never POST
//! the same delivery at once while both live), POSTs each signed result, and reports how it
//! went, fenced by the lease. A sender that dies mid-delivery leaves the entry due again when
//! its lease ends, so another sender delivers it: at-least-once (a receiver may see a
//! duplicate, with the same `Quayside-Job-Id` and a higher `Quayside-Delivery`).
//!
//! - [`sign`]: the body and the `Quayside-Signature` header;
//! - [`http`]: one POST under the SSRF rules, timeout and bounded read.

mod http;
mod sign;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use quayside_common::callback::secret_for;
use quayside_common::connection::Redis;
use quayside_common::protocol::webhook::{Attempt, ClaimWebhooks, Delivery, Recorded, WebhookDone};
use quayside_common::{now_ms, Keys};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;
use crate::shutdown::sleep_or_stop;
use quayside_common::config::Config;

pub use sign::signature;

/// Longest error text kept with a failed attempt.
const MAX_ERROR_LEN: usize = 300;

/// What the sender needs.
pub struct Sender {
    pub cfg: Arc<Config>,
    pub redis: Arc<Redis>,
    pub keys: Keys,
    pub metrics: Arc<WorkerMetrics>,
}

impl Sender {
    /// Delivers due webhooks until `stop`: claims up to `webhooks.concurrency` at a time,
    /// sends them at once, and looks again after `webhooks.poll_ms` when none was due.
    pub async fn run(self, stop: CancellationToken) {
        let poll = Duration::from_millis(self.cfg.webhooks.poll_ms);
        loop {
            let claimed = match self.claim().await {
                Ok(d) => d,
                Err(error) => {
                    tracing::debug!(error = %error, "cannot claim webhooks");
                    Vec::new()
                }
            };
            let busy = !claimed.is_empty();
            join_all(claimed.iter().map(|d| self.deliver(d))).await;
            if stop.is_cancelled() || (!busy && sleep_or_stop(&stop, poll).await) {
                return;
            }
        }
    }

    fn retry_for_ms(&self) -> u64 {
        self.cfg.webhooks.retry_for_s.saturating_mul(1000)
    }

    /// Due deliveries, now this sender's for a lease. Errors as text: they are only logged.
    async fn claim(&self) -> Result<Vec<Delivery>, String> {
        let call = ClaimWebhooks {
            limit: self.cfg.webhooks.concurrency,
            lease_ms: self.cfg.webhooks.lease_ms(),
            retry_for_ms: self.retry_for_ms(),
            dead_cap: self.cfg.queue.dlq_max_len,
        }
        .call(&self.keys);
        let mut conn = self.redis.conn().await.map_err(|e| e.to_string())?;
        call.run(&mut conn).await.map_err(|e| e.to_string())
    }

    /// One attempt of one delivery, recorded (retried while Redis does not answer, up to the
    /// lease: past it another sender owns the delivery anyway).
    async fn deliver(&self, d: &Delivery) {
        let attempt = self.attempt(d).await;
        match &attempt {
            Attempt::Delivered => {
                tracing::debug!(job_id = %d.job_id, attempt = d.attempt, "webhook delivered");
            }
            Attempt::Retry { error, .. } => {
                tracing::info!(job_id = %d.job_id, attempt = d.attempt, error = %error, "webhook attempt failed; retrying");
            }
            Attempt::Dead { reason, error } => {
                tracing::warn!(job_id = %d.job_id, attempt = d.attempt, reason, error = %error, "webhook refused; dead-lettered");
            }
        }
        let call = WebhookDone {
            delivery: d,
            attempt,
            retry_for_ms: self.retry_for_ms(),
            dead_cap: self.cfg.queue.dlq_max_len,
        }
        .call(&self.keys);
        let give_up =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.webhooks.lease_ms() / 2);
        loop {
            let written = match self.redis.conn().await {
                Ok(mut conn) => call.run(&mut conn).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match written {
                Ok(Recorded::Fenced) => {
                    tracing::debug!(job_id = %d.job_id, "webhook lease moved on; outcome not written");
                    return;
                }
                Ok(recorded) => {
                    if recorded == Recorded::Dead {
                        tracing::warn!(job_id = %d.job_id, attempts = d.attempt, "webhook dead-lettered");
                    }
                    self.metrics
                        .webhook(d.tenant.as_deref(), recorded.as_label());
                    return;
                }
                Err(error) if tokio::time::Instant::now() < give_up => {
                    tracing::debug!(error = %error, "cannot record a webhook attempt; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    tracing::warn!(job_id = %d.job_id, error = %error, "cannot record a webhook attempt; another sender will retry it");
                    return;
                }
            }
        }
    }

    /// Signs and POSTs one delivery; never fails, says how it went.
    async fn attempt(&self, d: &Delivery) -> Attempt {
        let hooks = &self.cfg.webhooks;
        let Some(secret) = secret_for(hooks, &self.cfg.tenants, d.tenant.as_deref()) else {
            return Attempt::Dead {
                reason: "no_secret",
                error: "the tenant has no webhook secret in this worker's config".into(),
            };
        };
        let body = sign::body(&d.job_id, self.keys.queue(), d.tenant.as_deref(), &d.result);
        let signature = sign::signature(secret.expose().as_bytes(), now_ms() / 1000, &body);
        let headers = http::Headers {
            signature: &signature,
            job_id: &d.job_id,
            attempt: d.attempt,
        };
        match http::post(hooks, &d.url, body, &headers).await {
            Ok(()) => Attempt::Delivered,
            Err(http::PostError::Refused(e)) => Attempt::Dead {
                reason: "refused",
                error: clip(e),
            },
            Err(http::PostError::Failed(e)) => Attempt::Retry {
                delay_ms: backoff_ms(hooks.backoff_base_ms, hooks.backoff_max_ms, d.attempt),
                error: clip(e),
            },
        }
    }
}

/// The wait before attempt `attempt + 1`: `base · 2^(attempt-1)`, at most `max`, ±20 % jitter
/// (so receivers that failed together are not retried together).
pub fn backoff_ms(base: u64, max: u64, attempt: u32) -> u64 {
    let exp = base
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(40))
        .min(max);
    let jitter = rand::rng().random_range(0.8..=1.2);
    ((exp as f64) * jitter) as u64
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        for attempt in 1..=4u32 {
            let want = 1000u64 << (attempt - 1);
            for _ in 0..50 {
                let got = backoff_ms(1000, 60_000, attempt);
                assert!(
                    (want * 8 / 10..=want * 12 / 10).contains(&got),
                    "attempt {attempt}: {got}"
                );
            }
        }
        assert!(backoff_ms(1000, 60_000, 60) <= 72_000);
    }
}
