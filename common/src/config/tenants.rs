//! Tenants (`tenants.<name>.*`): the callers sharing the fleet, each with a fair-share weight,
//! quotas, gateway tokens and a webhook secret (`docs/design/tenants.md`). Jobs of a tenant that
//! is not configured run under the defaults below and are counted under the metric label
//! `other`, so the label set stays what the operator wrote.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::check::{between, invalid};
use super::gateway::MIN_TOKEN_LEN;
use super::{ConfigError, GatewayConfig, Secret};
use crate::job::check_tenant;

/// Most tenants one config may name: each is a metric label value and three streams per queue.
pub const MAX_TENANTS: usize = 1_000;
/// Heaviest fair-share weight: a weight-1000 tenant gets 1000 claims to a weight-1 tenant's one.
pub const MAX_WEIGHT: u32 = 1_000;

/// The metric label of the default tenant (jobs without a tenant, raw producers).
pub const DEFAULT_LABEL: &str = "default";
/// The metric label every tenant that is not configured folds into.
pub const OTHER_LABEL: &str = "other";

/// One tenant's share, quotas and credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Fair-share weight within a priority (1 to 1000): with work queued for both, a tenant of
    /// weight 3 is claimed three times as often as one of weight 1.
    pub weight: u32,
    /// Most of its jobs running at once, fleet-wide; 0 = no cap.
    pub max_running: u32,
    /// Most of its jobs waiting to run; an enqueue past it is refused (`TenantQueueFull`,
    /// HTTP 429); 0 = no cap. Raw `XADD` producers are not held to it.
    pub max_queued: u64,
    /// Gateway requests per second allowed for its tokens, per gateway process; 0 = no limit.
    pub rate_per_s: u32,
    /// Requests its tokens may make at once above the rate (at least 1 when a rate is set).
    pub rate_burst: u32,
    /// Gateway bearer tokens that act as this tenant (at least 16 characters each). Redacted
    /// wherever the config is printed or logged.
    pub tokens: Vec<Secret>,
    /// Key of the HMAC-SHA256 signature on its jobs' completion webhooks. Redacted.
    pub webhook_secret: Option<Secret>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            weight: 1,
            max_running: 0,
            max_queued: 0,
            rate_per_s: 0,
            rate_burst: 1,
            tokens: Vec::new(),
            webhook_secret: None,
        }
    }
}

/// The metric label of `tenant`: its name when configured, [`DEFAULT_LABEL`] for none, else
/// [`OTHER_LABEL`]. The only way a tenant becomes a label, so the label set stays bounded.
pub fn tenant_label<'a>(
    tenants: &'a BTreeMap<String, TenantConfig>,
    tenant: Option<&str>,
) -> &'a str {
    match tenant {
        None => DEFAULT_LABEL,
        Some(t) => tenants
            .get_key_value(t)
            .map_or(OTHER_LABEL, |(name, _)| name.as_str()),
    }
}

/// Checks every tenant, and that no token is shared (between tenants, or with
/// `gateway.tokens`, whose holders act as the default tenant): a token must name one tenant.
pub(super) fn validate(
    tenants: &BTreeMap<String, TenantConfig>,
    gateway: &GatewayConfig,
) -> Result<(), ConfigError> {
    if tenants.len() > MAX_TENANTS {
        return Err(invalid(
            "tenants",
            format!("{} tenants; at most {MAX_TENANTS}", tenants.len()),
        ));
    }
    let mut seen: BTreeSet<&str> = gateway.tokens.iter().map(Secret::expose).collect();
    for (name, t) in tenants {
        check_tenant(name).map_err(|e| invalid("tenants", format!("{name:?}: {e}")))?;
        let key = |field: &str| format!("{name}.{field}");
        between("tenants.<name>.weight", t.weight, 1, MAX_WEIGHT)
            .map_err(|e| named(e, &key("weight")))?;
        if t.rate_per_s > 0 && t.rate_burst == 0 {
            return Err(invalid(
                "tenants",
                format!(
                    "{}: must be at least 1 when a rate is set",
                    key("rate_burst")
                ),
            ));
        }
        for token in &t.tokens {
            if token.expose().chars().count() < MIN_TOKEN_LEN {
                return Err(invalid(
                    "tenants",
                    format!(
                        "{}: every token must be at least {MIN_TOKEN_LEN} characters",
                        key("tokens")
                    ),
                ));
            }
            if !seen.insert(token.expose()) {
                return Err(invalid(
                    "tenants",
                    format!(
                        "{}: a token is also listed for another tenant or in gateway.tokens; \
                         each token must act as one tenant",
                        key("tokens")
                    ),
                ));
            }
        }
        if t.webhook_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_TOKEN_LEN)
        {
            return Err(invalid(
                "tenants",
                format!(
                    "{}: must be at least {MIN_TOKEN_LEN} characters",
                    key("webhook_secret")
                ),
            ));
        }
    }
    Ok(())
}

/// A refusal from a shared check, re-worded to name the tenant's own key.
fn named(e: ConfigError, key: &str) -> ConfigError {
    match e {
        ConfigError::Invalid { problem, .. } => invalid("tenants", format!("{key}: {problem}")),
        other => other,
    }
}

/// A copy with every token and webhook secret replaced, safe to print.
pub(super) fn redacted(tenants: &BTreeMap<String, TenantConfig>) -> BTreeMap<String, TenantConfig> {
    let mut c = tenants.clone();
    for t in c.values_mut() {
        for token in &mut t.tokens {
            *token = Secret::redacted();
        }
        if let Some(s) = &mut t.webhook_secret {
            *s = Secret::redacted();
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, tweak: impl FnOnce(&mut TenantConfig)) -> BTreeMap<String, TenantConfig> {
        let mut t = TenantConfig::default();
        tweak(&mut t);
        [(name.to_owned(), t)].into()
    }

    fn refusal(tenants: &BTreeMap<String, TenantConfig>, gateway: &GatewayConfig) -> String {
        match validate(tenants, gateway) {
            Err(ConfigError::Invalid {
                key: "tenants",
                problem,
            }) => problem,
            other => panic!("expected a refusal of tenants, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_a_full_tenant_are_valid() {
        let gw = GatewayConfig::default();
        validate(&BTreeMap::new(), &gw).expect("no tenants");
        let t = one("acme", |t| {
            t.weight = 3;
            t.max_running = 20;
            t.max_queued = 10_000;
            t.rate_per_s = 50;
            t.rate_burst = 100;
            t.tokens = vec![Secret::new("acme-token-0123456789")];
            t.webhook_secret = Some(Secret::new("acme-webhook-secret-0123"));
        });
        validate(&t, &gw).expect("valid");
    }

    #[test]
    fn refusals_name_the_tenant_and_its_key() {
        let gw = GatewayConfig::default();
        let cases: [(BTreeMap<String, TenantConfig>, &str); 7] = [
            (one("a b", |_| {}), "\"a b\": tenant:"),
            (one("default", |_| {}), "reserved"),
            (
                one("acme", |t| t.weight = 0),
                "acme.weight: must be 1 to 1000",
            ),
            (one("acme", |t| t.weight = 1001), "acme.weight"),
            (
                one("acme", |t| {
                    t.rate_per_s = 5;
                    t.rate_burst = 0;
                }),
                "acme.rate_burst",
            ),
            (
                one("acme", |t| t.tokens = vec![Secret::new("short")]),
                "acme.tokens",
            ),
            (
                one("acme", |t| t.webhook_secret = Some(Secret::new("short"))),
                "acme.webhook_secret",
            ),
        ];
        for (tenants, want) in cases {
            let p = refusal(&tenants, &gw);
            assert!(p.contains(want), "{want}: {p}");
        }
    }

    #[test]
    fn a_token_acts_as_one_tenant_only() {
        let token = "shared-token-0123456789";
        let mut two = one("a", |t| t.tokens = vec![Secret::new(token)]);
        two.extend(one("b", |t| t.tokens = vec![Secret::new(token)]));
        assert!(refusal(&two, &GatewayConfig::default()).contains("b.tokens"));
        let gw = GatewayConfig {
            tokens: vec![Secret::new(token)],
            ..GatewayConfig::default()
        };
        let a = one("a", |t| t.tokens = vec![Secret::new(token)]);
        assert!(refusal(&a, &gw).contains("gateway.tokens"));
    }

    #[test]
    fn labels_are_configured_names_default_or_other() {
        let t = one("acme", |_| {});
        assert_eq!(tenant_label(&t, Some("acme")), "acme");
        assert_eq!(tenant_label(&t, None), DEFAULT_LABEL);
        assert_eq!(tenant_label(&t, Some("unknown-caller")), OTHER_LABEL);
    }

    #[test]
    fn secrets_are_redacted() {
        let t = one("acme", |t| {
            t.tokens = vec![Secret::new("acme-token-0123456789")];
            t.webhook_secret = Some(Secret::new("acme-webhook-secret-0123"));
        });
        let shown = toml::to_string(&redacted(&t)).expect("toml");
        assert!(
            !shown.contains("acme-token") && !shown.contains("acme-webhook"),
            "{shown}"
        );
    }
}
