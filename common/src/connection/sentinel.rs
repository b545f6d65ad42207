//! Finding the primary through Redis Sentinel.
//!
//! Asked again for every new connection, so a connection made after a failover goes to the
//! new primary: the sentinels are asked in order for the address of `master`, and the node
//! found there must say it is a primary (`ROLE`), since a sentinel that has not seen the
//! failover yet still names the old one, which may be back as a replica.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _};

use crate::config::SentinelConfig;

/// Why no primary was found: the last sentinel's or node's answer.
#[derive(Debug, thiserror::Error)]
#[error("no sentinel of {addresses} names a reachable primary for {master:?}: {last}")]
pub struct NoPrimary {
    pub master: String,
    pub addresses: String,
    pub last: String,
}

/// The primary's connection info: `base` (credentials, TLS, database of the primary) at the
/// address the sentinels give.
pub(super) async fn primary(
    cfg: &SentinelConfig,
    base: &ConnectionInfo,
    connect: std::time::Duration,
) -> Result<ConnectionInfo, NoPrimary> {
    let mut last = String::from("no sentinel answered");
    for address in &cfg.addresses {
        match ask(cfg, address, base, connect).await {
            Ok(info) => return Ok(info),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(NoPrimary {
        master: cfg.master.clone(),
        addresses: cfg.addresses.join(","),
        last,
    })
}

async fn ask(
    cfg: &SentinelConfig,
    address: &str,
    base: &ConnectionInfo,
    connect: std::time::Duration,
) -> Result<ConnectionInfo, String> {
    let timeouts = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(connect));
    let sentinel = sentinel_info(cfg, address, base)?;
    let mut conn = redis::Client::open(sentinel)
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(&timeouts)
        .await
        .map_err(|e| format!("sentinel: {e}"))?;
    let named: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&cfg.master)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("sentinel: {e}"))?;
    let (host, port) = named.ok_or_else(|| format!("does not monitor {:?}", cfg.master))?;
    let info = base.clone().set_addr(at(base.addr(), host.clone(), port));
    let mut node = redis::Client::open(info.clone())
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(&timeouts)
        .await
        .map_err(|e| format!("primary {host}:{port}: {e}"))?;
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut node)
        .await
        .map_err(|e| format!("primary {host}:{port}: {e}"))?;
    match role.first() {
        Some(redis::Value::BulkString(r)) if r == b"master" => Ok(info),
        _ => Err(format!("{host}:{port} is not a primary (yet)")),
    }
}

/// `base`'s kind of address (plain or TLS, with its certificates) at `host:port`.
pub(super) fn at(base: &ConnectionAddr, host: String, port: u16) -> ConnectionAddr {
    match base {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    }
}

/// How to reach the sentinel at `address`: its own credentials, TLS like the primary's when
/// `tls` is set.
fn sentinel_info(
    cfg: &SentinelConfig,
    address: &str,
    base: &ConnectionInfo,
) -> Result<ConnectionInfo, String> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    let addr = if cfg.tls {
        at(base.addr(), host, port)
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let info = addr.into_connection_info().map_err(|e| e.to_string())?;
    Ok(super::with_credentials(
        info,
        cfg.username.as_deref(),
        cfg.password.as_ref(),
    ))
}
