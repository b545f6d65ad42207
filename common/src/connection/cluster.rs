//! Reaching a Redis Cluster (`redis.cluster.nodes`).
//!
//! Two cluster clients over the same seed nodes: one whose replies time out after
//! `redis.command_timeout_ms` (the shared connection), and one without a reply timeout for the
//! dedicated connections blocking reads wait on (their callers bound each call themselves).
//! Pub/sub goes to a single node: a classic `PUBLISH` on any node of a cluster is delivered to
//! subscribers on every node, so a subscriber may listen on whichever seed node answers first.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{ConnectionInfo, TlsCertificates};

use super::ConnectError;
use crate::config::{host_port, redact_url, ClusterConfig, RedisConfig};

/// The seed nodes, with the credentials and TLS of `redis.url`, and the clients made of them.
pub(super) struct Cluster {
    /// Replies time out after the command timeout.
    pub(super) shared: ClusterClient,
    /// No reply timeout: for blocking reads.
    pub(super) blocking: ClusterClient,
    /// Each seed node, for pub/sub.
    pub(super) nodes: Vec<ConnectionInfo>,
}

impl Cluster {
    pub(super) fn new(
        cfg: &RedisConfig,
        cluster: &ClusterConfig,
        base: &ConnectionInfo,
        connect: Duration,
        command: Duration,
    ) -> Result<Self, ConnectError> {
        let redis_err = |source| ConnectError::Redis {
            url: redact_url(&cfg.url),
            source,
        };
        let nodes: Vec<ConnectionInfo> = cluster
            .nodes
            .iter()
            .filter_map(|n| host_port(n))
            .map(|(host, port)| {
                base.clone()
                    .set_addr(super::sentinel::at(base.addr(), host, port))
            })
            .collect();
        let ca = match &cfg.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| ConnectError::TlsCa {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let builder = || {
            let b = ClusterClientBuilder::new(nodes.clone()).connection_timeout(connect);
            match &ca {
                Some(root) => b.certs(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                }),
                None => b,
            }
        };
        let shared = builder()
            .response_timeout(command)
            .build()
            .map_err(redis_err)?;
        let blocking = builder()
            .overall_response_timeout(None)
            .build()
            .map_err(redis_err)?;
        Ok(Self {
            shared,
            blocking,
            nodes,
        })
    }

    /// A pub/sub connection to the first seed node that answers.
    pub(super) async fn pubsub(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        let mut last = None;
        for node in &self.nodes {
            match redis::Client::open(node.clone())?.get_async_pubsub().await {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "redis.cluster.nodes is empty",
            ))
        }))
    }
}

/// `cluster` as a log names it: its seed nodes.
pub(super) fn describe(cluster: &ClusterConfig) -> String {
    format!("cluster of {}", cluster.nodes.join(","))
}
