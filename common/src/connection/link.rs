//! [`Connection`]: one connection type for every caller, whether Redis is one server (or the
//! primary Sentinel names) or a Redis Cluster, so the worker, producer library, CLI and gateway
//! issue the same commands on either.
//!
//! On a cluster the crate's `ClusterConnection` routes each command by its first key (scripts
//! by their first `KEYS` entry, pipelines by their first keyed command) and follows `MOVED` and
//! `ASK` redirections. Every key of a queue shares its `{queue}` hash tag, so each call lands
//! on the one node that holds the whole queue. The exception is a command with no key to route
//! by, such as `SCAN`: [`Connection::query_at`] sends it to the node of a key's slot.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// A multiplexed connection to one server, or to every node of a cluster. Cheap to clone:
/// clones share the sockets.
#[derive(Clone)]
pub enum Connection {
    /// One server: fixed, or the primary the sentinels named.
    Single(MultiplexedConnection),
    /// A Redis Cluster: commands go to the node that holds their key's slot.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Connection::Single",
            Self::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl Connection {
    /// Runs `cmd` on the node that holds `key`'s slot: for commands that name no key yet work
    /// on one slot's keys (`SCAN MATCH qs:{q}:*`). On one server, simply runs it.
    ///
    /// # Errors
    /// As the command.
    pub async fn query_at<T: FromRedisValue>(&mut self, key: &str, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => {
                let route = redis::cluster_routing::Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = c.route_command(cmd.clone(), routing).await?;
                Ok(redis::from_redis_value(value.extract_error()?)?)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
