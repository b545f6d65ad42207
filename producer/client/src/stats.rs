//! Queue statistics as `quayside stats` and the gateway show them, from the sample every reader
//! takes ([`quayside_common::protocol::stats`]).

use std::collections::BTreeMap;

use quayside_common::config::TenantConfig;
use quayside_common::protocol::stats::QueueSample;
use quayside_common::Priority;
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub priorities: Vec<PriorityStats>,
    /// Jobs waiting in the delayed set for a retry.
    pub delayed: u64,
    pub dead_letters: u64,
    /// Whether an operator paused the queue (`quayside pause`): workers claim nothing.
    pub paused: bool,
    /// When it was paused (unix ms); absent while not paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_since_ms: Option<u64>,
    pub workers: Vec<WorkerInfo>,
    /// Per tenant: the default tenant, then every tenant that has had a lane in this queue.
    pub tenants: Vec<TenantStats>,
    /// The completion-webhook outbox.
    pub webhooks: WebhookStats,
}

/// Completion webhooks of the queue's jobs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct WebhookStats {
    /// Waiting to be delivered: due, being sent, or waiting to retry.
    pub pending: u64,
    /// Given up on (the webhook dead-letter stream, capped at `queue.dlq_max_len`).
    pub dead: u64,
}

/// One tenant's share of the queue, and the quotas this producer's config gives it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TenantStats {
    /// Tenant id; `default` for jobs without a tenant.
    pub tenant: String,
    /// Jobs waiting to run.
    pub queued: u64,
    /// Jobs claimed and not yet finished, fleet-wide.
    pub running: u64,
    /// Fair-share weight (`tenants.<name>.weight`; 1 when not configured).
    pub weight: u32,
    /// Most running at once (`max_running`); absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_cap: Option<u32>,
    /// Most queued (`max_queued`); absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_cap: Option<u64>,
    /// Whether an operator paused this tenant (`quayside pause --tenant`).
    pub paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_since_ms: Option<u64>,
}

impl QueueStats {
    /// Entries not yet delivered, all priorities.
    pub fn waiting(&self) -> u64 {
        self.priorities.iter().map(|p| p.waiting).sum()
    }

    /// Entries delivered and not yet finished, all priorities.
    pub fn pending(&self) -> u64 {
        self.priorities.iter().map(|p| p.pending).sum()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PriorityStats {
    pub priority: &'static str,
    /// Entries in the stream (waiting + pending).
    pub depth: u64,
    /// Claimed by a worker, not yet finished.
    pub pending: u64,
    /// Not yet delivered to any worker (the consumer group's lag).
    pub waiting: u64,
}

/// A worker's last heartbeat, as it wrote it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerInfo(pub serde_json::Value);

impl QueueStats {
    /// The stats of queue `queue` from its sample.
    pub(crate) fn new(
        queue: &str,
        sample: QueueSample,
        tenants: &BTreeMap<String, TenantConfig>,
    ) -> Self {
        let tenant_stats = sample
            .tenants
            .iter()
            .map(|t| {
                let cfg = tenants.get(&t.tenant).cloned().unwrap_or_default();
                TenantStats {
                    tenant: t.tenant.clone(),
                    queued: t.queued(),
                    running: t.running(),
                    weight: cfg.weight,
                    running_cap: (cfg.max_running > 0).then_some(cfg.max_running),
                    queued_cap: (cfg.max_queued > 0).then_some(cfg.max_queued),
                    paused: t.paused_since_ms.is_some(),
                    paused_since_ms: t.paused_since_ms,
                }
            })
            .collect();
        let priorities = Priority::ALL
            .into_iter()
            .map(|p| PriorityStats {
                priority: p.as_label(),
                depth: sample.depth[p.index()],
                pending: sample.pending[p.index()],
                waiting: sample.lag(p),
            })
            .collect();
        Self {
            queue: queue.to_owned(),
            priorities,
            delayed: sample.delayed,
            dead_letters: sample.dead_letters,
            paused: sample.paused_since_ms.is_some(),
            paused_since_ms: sample.paused_since_ms,
            workers: sample.worker_docs.into_iter().map(WorkerInfo).collect(),
            tenants: tenant_stats,
            webhooks: WebhookStats {
                pending: sample.webhooks_pending,
                dead: sample.webhooks_dead,
            },
        }
    }
}
