//! Redis connections for producers and workers.
//!
//! deadpool-redis creates and health-checks connections, but it pings on every checkout, which
//! would double the round trips on the hot path. So callers share one multiplexed connection
//! taken from the pool (clones pipeline onto the same socket) and go back to the pool for a
//! fresh one only after an I/O error. Blocking commands get their own [`Redis::dedicated`]
//! connection, since a blocked multiplexed connection stalls everyone sharing it.
//!
//! Authentication and TLS come from [`RedisConfig`]: the URL (`rediss://` for TLS), or
//! `username`/`password` and `tls_ca_file` beside it. Every connection, pooled, dedicated or
//! pub/sub, is made from the same [`ConnectionInfo`]. With `redis.sentinel` the address in it
//! is asked of the sentinels for each new connection ([`sentinel`]), so connections made after
//! a failover reach the new primary; a connection that fails or meets a read-only replica is
//! dropped ([`Redis::note_error`]) and the next one is made anew. With `redis.cluster` the
//! connections reach every node of a Redis Cluster ([`cluster`]); callers see the same
//! [`Connection`] type either way.

use std::sync::Mutex;
use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo as _, TlsCertificates};

use crate::config::{redact_url, RedisConfig, SentinelConfig};

mod cluster;
mod link;
mod sentinel;
pub use link::Connection;
pub use sentinel::NoPrimary;

/// Why Redis could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create connection pool for {url}")]
    Pool {
        url: String,
        #[source]
        source: deadpool_redis::BuildError,
    },
    #[error("cannot connect to redis at {url}")]
    Connect {
        url: String,
        #[source]
        source: deadpool_redis::PoolError,
    },
    #[error("cannot read the CA certificate file {path} (redis.tls_ca_file)")]
    TlsCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to redis at {url}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error(transparent)]
    NoPrimary(#[from] NoPrimary),
}

/// Where connections go: one fixed server (pooled), the primary the sentinels name, or a
/// cluster.
enum Primary {
    Fixed {
        pool: Pool,
        client: redis::Client,
    },
    Sentinel {
        cfg: SentinelConfig,
        base: ConnectionInfo,
    },
    Cluster(Box<cluster::Cluster>),
}

/// A pool plus the shared connection in use.
pub struct Redis {
    primary: Primary,
    url: String,
    connect: Duration,
    command: Duration,
    shared: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("url", &self.url).finish()
    }
}

impl Redis {
    /// Builds the pool; connects lazily.
    ///
    /// # Errors
    /// The URL is invalid.
    pub fn new(cfg: &RedisConfig) -> Result<Self, ConnectError> {
        let url = redact_url(&cfg.url);
        let connect = Duration::from_millis(cfg.connect_timeout_ms);
        let command = Duration::from_millis(cfg.command_timeout_ms);
        // redis-rs would give up on any reply after 500 ms; a big batch under load can take longer.
        let conn_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(command));
        let redis_err = |source| ConnectError::Redis {
            url: url.clone(),
            source,
        };
        let info = connection_info(cfg)?;
        if let Some(sentinel) = &cfg.sentinel {
            return Ok(Self {
                primary: Primary::Sentinel {
                    cfg: sentinel.clone(),
                    base: info,
                },
                url: format!(
                    "sentinel {} at {}",
                    sentinel.master,
                    sentinel.addresses.join(",")
                ),
                connect,
                command,
                shared: Mutex::new(None),
            });
        }
        if let Some(c) = &cfg.cluster {
            return Ok(Self {
                primary: Primary::Cluster(Box::new(cluster::Cluster::new(
                    cfg, c, &info, connect, command,
                )?)),
                url: cluster::describe(c),
                connect,
                command,
                shared: Mutex::new(None),
            });
        }
        let manager = Manager::new_with_config(info.clone(), conn_cfg).map_err(redis_err)?;
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .wait_timeout(Some(connect))
            .create_timeout(Some(connect))
            .recycle_timeout(Some(connect))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|source| ConnectError::Pool {
                url: url.clone(),
                source,
            })?;
        let client = redis::Client::open(info).map_err(redis_err)?;
        Ok(Self {
            primary: Primary::Fixed { pool, client },
            url,
            connect,
            command,
            shared: Mutex::new(None),
        })
    }

    /// The shared connection (a cheap clone), connecting first if needed.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn conn(&self) -> Result<Connection, ConnectError> {
        if let Some(c) = self.shared.lock().expect("lock poisoned").as_ref() {
            return Ok(c.clone());
        }
        let fresh = match &self.primary {
            Primary::Fixed { pool, .. } => Connection::Single(deadpool_redis::Connection::take(
                pool.get().await.map_err(|source| ConnectError::Connect {
                    url: self.url.clone(),
                    source,
                })?,
            )),
            Primary::Sentinel { .. } => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect))
                    .set_response_timeout(Some(self.command));
                Connection::Single(
                    self.client()
                        .await?
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await
                        .map_err(|source| self.redis_error(source))?,
                )
            }
            Primary::Cluster(c) => Connection::Cluster(
                c.shared
                    .get_async_connection()
                    .await
                    .map_err(|source| self.redis_error(source))?,
            ),
        };
        *self.shared.lock().expect("lock poisoned") = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops the shared connection after `err` if it means the socket is unusable, so the next
    /// [`Redis::conn`] reconnects.
    pub fn note_error(&self, err: &redis::RedisError) {
        // A read-only reply: this server was demoted to a replica by a failover.
        let demoted = matches!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        );
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || demoted
        {
            self.shared.lock().expect("lock poisoned").take();
        }
    }

    /// A connection of its own for blocking reads. It has no reply timeout: callers bound each
    /// blocking call themselves (block time plus a margin).
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn dedicated(&self) -> Result<Connection, ConnectError> {
        if let Primary::Cluster(c) = &self.primary {
            return c
                .blocking
                .get_async_connection()
                .await
                .map(Connection::Cluster)
                .map_err(|source| self.redis_error(source));
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect))
            .set_response_timeout(None);
        self.client()
            .await?
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map(Connection::Single)
            .map_err(|source| self.redis_error(source))
    }

    /// A pub/sub connection (on a cluster, to one node: see [`cluster`]).
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, ConnectError> {
        if let Primary::Cluster(c) = &self.primary {
            return c.pubsub().await.map_err(|source| self.redis_error(source));
        }
        self.client()
            .await?
            .get_async_pubsub()
            .await
            .map_err(|source| self.redis_error(source))
    }

    /// A client for the server to use now: the fixed one, or the primary the sentinels name.
    async fn client(&self) -> Result<redis::Client, ConnectError> {
        match &self.primary {
            Primary::Fixed { client, .. } => Ok(client.clone()),
            Primary::Sentinel { cfg, base } => {
                let info = sentinel::primary(cfg, base, self.connect).await?;
                redis::Client::open(info).map_err(|source| self.redis_error(source))
            }
            // Callers take cluster connections from the cluster clients before asking this.
            Primary::Cluster(_) => Err(self.redis_error(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster has no single server to connect to",
            )))),
        }
    }

    fn redis_error(&self, source: redis::RedisError) -> ConnectError {
        ConnectError::Redis {
            url: self.url.clone(),
            source,
        }
    }

    /// How long a reply may take before a command is given up.
    pub fn command_timeout(&self) -> Duration {
        self.command
    }

    /// The URL with its password redacted, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Where and how to connect: the URL, plus the user, password and CA configured beside it.
///
/// # Errors
/// The URL is invalid, or the CA file cannot be read or parsed.
pub fn connection_info(cfg: &RedisConfig) -> Result<ConnectionInfo, ConnectError> {
    let redis_err = |source| ConnectError::Redis {
        url: redact_url(&cfg.url),
        source,
    };
    let mut info = cfg.url.as_str().into_connection_info().map_err(redis_err)?;
    info = with_credentials(info, cfg.username.as_deref(), cfg.password.as_ref());
    if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        // rustls needs a process-wide crypto provider; a second install (ours or another
        // library's) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if let Some(path) = &cfg.tls_ca_file {
        let root_cert = std::fs::read(path).map_err(|source| ConnectError::TlsCa {
            path: path.clone(),
            source,
        })?;
        let certs = TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        info = redis::Client::build_with_tls(info, certs)
            .map_err(redis_err)?
            .get_connection_info()
            .clone();
    }
    Ok(info)
}

/// `info` with the user and password that are set (the others as they were).
fn with_credentials(
    info: ConnectionInfo,
    username: Option<&str>,
    password: Option<&crate::config::Secret>,
) -> ConnectionInfo {
    if username.is_none() && password.is_none() {
        return info;
    }
    let mut settings = info.redis_settings().clone();
    if let Some(user) = username {
        settings = settings.set_username(user);
    }
    if let Some(password) = password {
        settings = settings.set_password(password.expose());
    }
    info.set_redis_settings(settings)
}

/// Where `cfg` points, for logs: `host:port` (or the socket path), then `/db` unless it is 0,
/// then ` (tls)` for `rediss://`. Never a user name or password, not even of a URL that does
/// not parse (config validation refuses those first).
pub fn endpoint(cfg: &RedisConfig) -> String {
    if let Some(s) = &cfg.sentinel {
        return format!(
            "primary {:?} of sentinels {}",
            s.master,
            s.addresses.join(",")
        );
    }
    if let Some(c) = &cfg.cluster {
        return cluster::describe(c);
    }
    let Ok(info) = cfg.url.as_str().into_connection_info() else {
        return "(invalid redis.url)".to_owned();
    };
    let db = match info.redis_settings().db() {
        0 => String::new(),
        n => format!("/{n}"),
    };
    let tls = match info.addr() {
        redis::ConnectionAddr::TcpTls { .. } => " (tls)",
        _ => "",
    };
    format!("{}{db}{tls}", info.addr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_of(url: &str) -> String {
        endpoint(&RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        })
    }

    #[test]
    fn endpoint_names_host_port_db_and_tls_but_no_credentials() {
        assert_eq!(endpoint_of("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(
            endpoint_of("redis://user:s3cret@redis.internal:6380/2"),
            "redis.internal:6380/2"
        );
        assert_eq!(
            endpoint_of("rediss://:s3cret@redis.example"),
            "redis.example:6379 (tls)"
        );
        assert_eq!(
            endpoint_of("redis+unix:///run/redis.sock"),
            "/run/redis.sock"
        );
        assert_eq!(endpoint_of("not a url :s3cret@x"), "(invalid redis.url)");
    }
}
