//! Completion-webhook targets: which URLs a job may name as its `callback`, and which addresses
//! the fleet may then connect to. A job is untrusted, so its callback must never make a worker
//! call an internal service (SSRF): only hosts the operator lists, and never a private,
//! loopback, link-local, unique-local, CGNAT, unspecified or multicast address unless the
//! operator lists the host as private-allowed too. The admission doors check the URL
//! ([`check`]); the sender checks again what the name resolves to at send time
//! ([`public_addrs`]), because DNS can change between the two.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{Secret, TenantConfig, WebhooksConfig};

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A callback URL taken apart: scheme, host and port, as the sender connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub url: url::Url,
    /// `https` (else `http`).
    pub tls: bool,
    /// The host as written: a lowercase name, or an IP literal (v6 without brackets).
    pub host: String,
    /// The IP when the host is an IP literal.
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl Target {
    /// Parses a URL as a callback: `http` or `https`, a host, no user info, at most
    /// [`MAX_URL_LEN`] bytes.
    ///
    /// # Errors
    /// What is wrong with it, for a message naming the `callback` field.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > MAX_URL_LEN {
            return Err(format!("longer than {MAX_URL_LEN} bytes"));
        }
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a URL with user info is not accepted".into());
        }
        let (host, ip) = match url.host() {
            Some(url::Host::Domain(d)) => (d.to_ascii_lowercase(), None),
            Some(url::Host::Ipv4(v4)) => (v4.to_string(), Some(IpAddr::V4(v4))),
            Some(url::Host::Ipv6(v6)) => (v6.to_string(), Some(IpAddr::V6(v6))),
            None => return Err("a URL without a host".into()),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "a URL without a port".to_owned())?;
        Ok(Self {
            url,
            tls,
            host,
            ip,
            port,
        })
    }
}

/// Whether `host:port` matches one of `patterns`: `name`, `*.suffix` (any name below it, not
/// the suffix itself), or an IP literal (`[v6]` bracketed when a port follows), each with an
/// optional `:port` (without one, any port).
pub fn host_matches(patterns: &[String], host: &str, port: u16) -> bool {
    patterns.iter().any(|p| {
        let (pat_host, pat_port) = split_pattern(p);
        if pat_port.is_some_and(|pp| pp != port) {
            return false;
        }
        let pat_host = pat_host.to_ascii_lowercase();
        match pat_host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => pat_host == host,
        }
    })
}

/// `(host, port)` of an allow-list pattern; the host of `[v6]:port` loses its brackets.
fn split_pattern(p: &str) -> (&str, Option<u16>) {
    if let Some(rest) = p.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            return (h, tail.strip_prefix(':').and_then(|x| x.parse().ok()));
        }
    }
    match p.rsplit_once(':') {
        // A bare v6 literal has several colons and no port.
        Some((h, port)) if !h.contains(':') => match port.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (p, None),
        },
        _ => (p, None),
    }
}

/// Checks an allow-list pattern when the config is loaded.
///
/// # Errors
/// Why the pattern can never match.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let (host, _) = split_pattern(p);
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.contains(['*', '/', '@', ' ']) {
        return Err(format!(
            "{p:?} is not a host, *.suffix or IP literal with an optional :port"
        ));
    }
    Ok(())
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918), link-local
/// (169.254/16 and fe80::/10, the cloud metadata service among them), CGNAT (100.64/10),
/// unique-local (fc00::/7), unspecified, broadcast, multicast or documentation, and not a
/// v4-mapped or v4-compatible v6 address of any of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            public_v6(v6)
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

/// The v4 address in the last 32 bits of a v6 address.
fn v4_tail(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // ::a.b.c.d (v4-compatible, deprecated) and 64:ff9b::/96 (NAT64) carry a v4 address.
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return public_v4(v4_tail(ip));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return public_v4(v4_tail(ip));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] == 0x2001 && s[1] == 0x0db8))
}

/// Whether the operator lets this host be reached at a private address.
fn private_allowed(cfg: &WebhooksConfig, t: &Target) -> bool {
    host_matches(&cfg.allow_private_hosts, &t.host, t.port)
}

/// Checks a callback URL against the operator's webhook config: parsed, host allowed, and
/// not an IP literal of a private range unless allowed. What every admission door runs.
///
/// # Errors
/// Why the URL is refused (the caller names the `callback` field).
pub fn check(cfg: &WebhooksConfig, raw: &str) -> Result<Target, String> {
    let t = Target::parse(raw)?;
    if cfg.allowed_hosts.is_empty() {
        return Err(
            "webhooks are not enabled on this fleet (webhooks.allowed_hosts is empty)".into(),
        );
    }
    if !host_matches(&cfg.allowed_hosts, &t.host, t.port) {
        return Err(format!(
            "host {}:{} is not in the operator's webhooks.allowed_hosts",
            t.host, t.port
        ));
    }
    if let Some(ip) = t.ip {
        if !is_public(ip) && !private_allowed(cfg, &t) {
            return Err(format!(
                "{ip} is a private, loopback, link-local or otherwise internal address"
            ));
        }
    }
    Ok(t)
}

/// The key a tenant's webhooks are signed with: its `tenants.<name>.webhook_secret`, or
/// `webhooks.secret` for the default tenant. A tenant that is not configured, or has no
/// secret, has none (its callbacks are refused: an unsigned webhook proves nothing).
pub fn secret_for<'a>(
    cfg: &'a WebhooksConfig,
    tenants: &'a BTreeMap<String, TenantConfig>,
    tenant: Option<&str>,
) -> Option<&'a Secret> {
    match tenant {
        None => cfg.secret.as_ref(),
        Some(t) => tenants.get(t).and_then(|t| t.webhook_secret.as_ref()),
    }
}

/// The addresses the sender may connect to, of those `t`'s host resolved to: the public ones,
/// or all when the operator allows the host at private addresses.
///
/// # Errors
/// None is left: the name resolves only to internal addresses.
pub fn public_addrs(
    cfg: &WebhooksConfig,
    t: &Target,
    resolved: &[SocketAddr],
) -> Result<Vec<SocketAddr>, String> {
    let allow = private_allowed(cfg, t);
    let ok: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| allow || is_public(a.ip()))
        .collect();
    if ok.is_empty() {
        return Err(format!(
            "{} resolves only to internal addresses ({} found)",
            t.host,
            resolved.len()
        ));
    }
    Ok(ok)
}

#[cfg(test)]
mod tests;
