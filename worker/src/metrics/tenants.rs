//! The per-tenant metrics: tenant gauges from each queue sample, claims that passed a tenant
//! over, completion-webhook attempts. Tenants fold into the configured label set
//! (`tenants.<name>`, `default`, `other`), so the label stays bounded.

use std::collections::BTreeMap;

use metrics::SharedString;
use quayside_common::config::{tenant_label, DEFAULT_LABEL, OTHER_LABEL};

use super::{
    WorkerMetrics, TENANT_CLAIMS_SKIPPED_TOTAL, TENANT_PAUSED, TENANT_QUEUED, TENANT_RUNNING,
    WEBHOOKS_TOTAL,
};
use crate::queue::QueueSample;

impl WorkerMetrics {
    /// Counts a claim that passed over `tenant` (a turns member: `default` for the default
    /// tenant) for `reason` (`running_cap` or `paused`); the tenant folds into the configured
    /// label set.
    pub fn claim_skipped(&self, tenant: &str, reason: &'static str) {
        let label = if tenant == DEFAULT_LABEL {
            DEFAULT_LABEL
        } else {
            tenant_label(&self.tenants, Some(tenant))
        };
        TENANT_CLAIMS_SKIPPED_TOTAL
            .counter([
                self.queue.clone(),
                SharedString::from(label.to_owned()),
                SharedString::const_str(reason),
            ])
            .increment(1);
    }

    /// Counts one completion-webhook attempt of a job of `tenant` (`None`: the default
    /// tenant) by its `outcome` label; the tenant folds into the configured label set.
    pub fn webhook(&self, tenant: Option<&str>, outcome: &'static str) {
        let label = tenant_label(&self.tenants, tenant).to_owned();
        WEBHOOKS_TOTAL
            .counter([
                self.queue.clone(),
                SharedString::from(label),
                SharedString::const_str(outcome),
            ])
            .increment(1);
    }

    /// Tenant gauges: every label the config allows is set each sample (0 when idle), so a
    /// tenant that drained reads 0 rather than its last value; unconfigured tenants add up
    /// under `other`.
    pub(super) fn set_tenants(&self, s: &QueueSample) {
        let mut by_label: BTreeMap<&str, (u64, u64, bool)> = BTreeMap::new();
        for label in [DEFAULT_LABEL, OTHER_LABEL] {
            by_label.insert(label, (0, 0, false));
        }
        for name in self.tenants.keys() {
            by_label.insert(name, (0, 0, false));
        }
        for t in &s.tenants {
            let label = if t.tenant == DEFAULT_LABEL {
                DEFAULT_LABEL
            } else {
                tenant_label(&self.tenants, Some(&t.tenant))
            };
            let e = by_label.entry(label).or_default();
            e.0 += t.queued();
            e.1 += t.running();
            e.2 |= t.paused_since_ms.is_some() && label != OTHER_LABEL;
        }
        for (label, (queued, running, paused)) in by_label {
            let l = || [self.queue.clone(), SharedString::from(label.to_owned())];
            TENANT_QUEUED.gauge(l()).set(queued as f64);
            TENANT_RUNNING.gauge(l()).set(running as f64);
            TENANT_PAUSED.gauge(l()).set(if paused { 1.0 } else { 0.0 });
        }
    }
}
