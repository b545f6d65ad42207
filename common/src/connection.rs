//! Redis connections for producers and workers.
//!
//! deadpool-redis creates and health-checks connections, but it pings on every checkout, which
//! would double the round trips on the hot path. So callers share one multiplexed connection
//! taken from the pool (clones pipeline onto the same socket) and go back to the pool for a
//! fresh one only after an I/O error. Blocking commands get their own [`Redis::dedicated`]
//! connection, since a blocked multiplexed connection stalls everyone sharing it.

use std::sync::Mutex;
use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::config::{redact_url, RedisConfig};

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
    #[error("cannot connect to redis at {url}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// A pool plus the shared connection in use.
pub struct Redis {
    pool: Pool,
    client: redis::Client,
    url: String,
    connect: Duration,
    command: Duration,
    shared: Mutex<Option<MultiplexedConnection>>,
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
        let manager = Manager::new_with_config(cfg.url.as_str(), conn_cfg).map_err(redis_err)?;
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
        let client = redis::Client::open(cfg.url.as_str()).map_err(redis_err)?;
        Ok(Self {
            pool,
            client,
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
    pub async fn conn(&self) -> Result<MultiplexedConnection, ConnectError> {
        if let Some(c) = self.shared.lock().expect("lock poisoned").as_ref() {
            return Ok(c.clone());
        }
        let fresh = deadpool_redis::Connection::take(self.pool.get().await.map_err(|source| {
            ConnectError::Connect {
                url: self.url.clone(),
                source,
            }
        })?);
        *self.shared.lock().expect("lock poisoned") = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops the shared connection after `err` if it means the socket is unusable, so the next
    /// [`Redis::conn`] reconnects.
    pub fn note_error(&self, err: &redis::RedisError) {
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
        {
            self.shared.lock().expect("lock poisoned").take();
        }
    }

    /// A connection of its own for blocking reads. It has no reply timeout: callers bound each
    /// blocking call themselves (block time plus a margin).
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, ConnectError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|source| ConnectError::Redis {
                url: self.url.clone(),
                source,
            })
    }

    /// A pub/sub connection.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, ConnectError> {
        self.client
            .get_async_pubsub()
            .await
            .map_err(|source| ConnectError::Redis {
                url: self.url.clone(),
                source,
            })
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
