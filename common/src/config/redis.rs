//! Where Redis is and how to reach it (`redis.*`): URL, ACL user, TLS, pool and timeouts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::{at_least, invalid, positive};
use super::{ConfigError, Secret};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS; the password is never
    /// printed.
    pub url: String,
    /// ACL user (Redis 6+), as an alternative to putting it in `url`.
    pub username: Option<String>,
    /// Password (of `username`, or of the default user), as an alternative to putting it in
    /// `url`. Redacted wherever the config is printed or logged.
    pub password: Option<Secret>,
    /// PEM file with the CA certificate(s) to trust for `rediss://` instead of the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// Pooled connections per process (each multiplexes many requests); not used on a cluster.
    pub pool_size: usize,
    /// Give up on a connection attempt after this long.
    pub connect_timeout_ms: u64,
    /// Give up on a command's reply after this long (blocking reads add their block time).
    pub command_timeout_ms: u64,
    /// Find the primary through Redis Sentinel instead of at `url`'s host; `url` then gives
    /// only the primary's credentials, TLS (`rediss://`) and database.
    pub sentinel: Option<SentinelConfig>,
    /// Talk to a Redis Cluster through these seed nodes instead of one server at `url`; `url`
    /// then gives only the credentials and TLS (`rediss://`) every node shares. Not with
    /// `sentinel`.
    pub cluster: Option<ClusterConfig>,
}

/// `redis.cluster.*`: the seed nodes of a Redis Cluster (the rest is discovered from them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `host:port` of one or more nodes, as a list or one comma-separated string (environment).
    #[serde(deserialize_with = "list_or_commas")]
    pub nodes: Vec<String>,
}

impl ClusterConfig {
    /// `scheme` and `path` are `redis.url`'s.
    fn validate(&self, scheme: &str, path: &str) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(invalid("redis.cluster.nodes", "no node host:port given"));
        }
        for n in &self.nodes {
            if host_port(n).is_none() {
                return Err(invalid(
                    "redis.cluster.nodes",
                    format!("{n:?} is not host:port"),
                ));
            }
        }
        if !matches!(scheme, "redis" | "rediss") {
            return Err(invalid(
                "redis.url",
                "a cluster needs a redis:// or rediss:// URL (for its credentials and TLS)",
            ));
        }
        if !matches!(path, "" | "/" | "/0") {
            return Err(invalid(
                "redis.url",
                "a cluster has only database 0; remove the /db from the URL",
            ));
        }
        Ok(())
    }
}

/// `(host, port)` of a `host:port` address (not a URL).
pub(crate) fn host_port(address: &str) -> Option<(String, u16)> {
    let (h, p) = address.rsplit_once(':')?;
    (!h.is_empty() && !h.contains('/')).then_some(())?;
    Some((h.to_owned(), p.parse().ok()?))
}

/// `redis.sentinel.*`: the sentinels that name the primary, and how to talk to them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under (`sentinel monitor <master> ...`).
    pub master: String,
    /// `host:port` of each sentinel, as a list or one comma-separated string (environment).
    #[serde(deserialize_with = "list_or_commas")]
    pub addresses: Vec<String>,
    /// ACL user on the sentinels, if they require one.
    pub username: Option<String>,
    /// Password on the sentinels (`requirepass` in sentinel.conf), if any.
    pub password: Option<Secret>,
    /// Talk TLS to the sentinels too (with `redis.tls_ca_file` as for the primary).
    pub tls: bool,
}

fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::Commas(s) => s
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl SentinelConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.master.is_empty() {
            return Err(invalid(
                "redis.sentinel.master",
                "empty: the name the sentinels monitor",
            ));
        }
        if self.addresses.is_empty() {
            return Err(invalid(
                "redis.sentinel.addresses",
                "no sentinel host:port given",
            ));
        }
        for a in &self.addresses {
            if host_port(a).is_none() {
                return Err(invalid(
                    "redis.sentinel.addresses",
                    format!("{a:?} is not host:port"),
                ));
            }
        }
        if self.username.is_some() && self.password.is_none() {
            return Err(invalid(
                "redis.sentinel.username",
                "needs redis.sentinel.password",
            ));
        }
        Ok(())
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            username: None,
            password: None,
            tls_ca_file: None,
            pool_size: 8,
            connect_timeout_ms: 5_000,
            command_timeout_ms: 10_000,
            sentinel: None,
            cluster: None,
        }
    }
}

impl RedisConfig {
    /// Refuses a URL Redis clients cannot parse, credentials given twice or half, and a CA file
    /// without TLS.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = redis::parse_redis_url(&self.url)
            .ok_or_else(|| invalid("redis.url", "not a redis:// or rediss:// URL"))?;
        if self.password.is_some() && url.password().is_some() {
            return Err(invalid(
                "redis.password",
                "the password is also in redis.url; set it in one place",
            ));
        }
        if self.username.is_some() && !url.username().is_empty() {
            return Err(invalid(
                "redis.username",
                "a user is also in redis.url; set it in one place",
            ));
        }
        if self.username.is_some() && self.password.is_none() && url.password().is_none() {
            return Err(invalid("redis.username", "needs redis.password"));
        }
        if self.tls_ca_file.is_some() && url.scheme() != "rediss" {
            return Err(invalid(
                "redis.tls_ca_file",
                "needs a rediss:// redis.url (TLS)",
            ));
        }
        if let Some(s) = &self.sentinel {
            s.validate()?;
        }
        if let Some(c) = &self.cluster {
            if self.sentinel.is_some() {
                return Err(invalid(
                    "redis.cluster",
                    "set either redis.cluster or redis.sentinel, not both",
                ));
            }
            c.validate(url.scheme(), url.path())?;
        }
        at_least("redis.pool_size", self.pool_size, 1)?;
        positive("redis.connect_timeout_ms", self.connect_timeout_ms)?;
        positive("redis.command_timeout_ms", self.command_timeout_ms)
    }

    /// A copy safe to print: the password, in the URL or on its own, is replaced.
    pub(super) fn redacted(&self) -> Self {
        let mut c = self.clone();
        c.url = super::redact_url(&c.url);
        if c.password.is_some() {
            c.password = Some(Secret::redacted());
        }
        if let Some(s) = c.sentinel.as_mut().filter(|s| s.password.is_some()) {
            s.password = Some(Secret::redacted());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut RedisConfig)) -> Result<(), String> {
        let mut r = RedisConfig::default();
        f(&mut r);
        r.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn auth_and_tls_settings_are_checked() {
        let e = with(|r| {
            r.url = "redis://:a@h".into();
            r.password = Some(Secret::new("b"));
        });
        assert!(e.expect_err("twice").contains("redis.password"));
        let e = with(|r| r.username = Some("u".into()));
        assert!(e.expect_err("no password").contains("needs redis.password"));
        let e = with(|r| r.tls_ca_file = Some("ca.pem".into()));
        assert!(e.expect_err("plain url").contains("rediss://"));
        with(|r| {
            r.url = "rediss://localhost:6380".into();
            r.tls_ca_file = Some("ca.pem".into());
            r.username = Some("u".into());
            r.password = Some(Secret::new("p"));
        })
        .expect("tls with a CA and an ACL user");
        let e = with(|r| r.url = "http://h".into());
        assert!(e.expect_err("not redis").contains("redis.url"));
        let e = with(|r| r.pool_size = 0);
        assert!(e.expect_err("no pool").contains("redis.pool_size"));
    }

    #[test]
    fn sentinel_settings_are_checked_and_addresses_read_from_a_list_or_commas() {
        let sentinel = |f: &dyn Fn(&mut SentinelConfig)| {
            with(|r| {
                let mut s = SentinelConfig {
                    master: "mymaster".into(),
                    addresses: vec!["127.0.0.1:26379".into(), "s2:26380".into()],
                    ..SentinelConfig::default()
                };
                f(&mut s);
                r.sentinel = Some(s);
            })
        };
        sentinel(&|_| {}).expect("valid");
        let e = sentinel(&|s| s.master.clear()).expect_err("no master");
        assert!(e.contains("redis.sentinel.master"), "{e}");
        let e = sentinel(&|s| s.addresses.clear()).expect_err("no sentinels");
        assert!(e.contains("redis.sentinel.addresses"), "{e}");
        let e = sentinel(&|s| s.addresses = vec!["nohost".into()]).expect_err("no port");
        assert!(e.contains("\"nohost\" is not host:port"), "{e}");
        let from_env: SentinelConfig =
            serde_json::from_value(serde_json::json!({"master": "m", "addresses": "a:1, b:2,"}))
                .expect("commas");
        assert_eq!(from_env.addresses, ["a:1", "b:2"]);
    }

    #[test]
    fn cluster_settings_are_checked() {
        let cluster = |url: &str, nodes: &[&str]| {
            with(|r| {
                r.url = url.into();
                r.cluster = Some(ClusterConfig {
                    nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
                });
            })
        };
        cluster("redis://:pw@seed", &["127.0.0.1:7000", "h:7001"]).expect("valid");
        let e = cluster("redis://h", &[]).expect_err("no nodes");
        assert!(e.contains("redis.cluster.nodes"), "{e}");
        let e = cluster("redis://h", &["redis://h:7000"]).expect_err("not host:port");
        assert!(e.contains("redis.cluster.nodes"), "{e}");
        let e = cluster("redis://h/2", &["h:7000"]).expect_err("db 2");
        assert!(e.contains("redis.url") && e.contains("database 0"), "{e}");
        let e = cluster("redis+unix:///s.sock", &["h:7000"]).expect_err("unix");
        assert!(e.contains("redis.url"), "{e}");
    }

    #[test]
    fn the_password_is_redacted_in_the_url_and_on_its_own() {
        let r = RedisConfig {
            url: "redis://:pw@x".into(),
            ..RedisConfig::default()
        };
        assert!(!format!("{:?}", r.redacted()).contains("pw@"));
        let r = RedisConfig {
            password: Some(Secret::new("hunter2")),
            ..RedisConfig::default()
        };
        assert_eq!(
            r.redacted().password.as_ref().map(Secret::expose),
            Some("***")
        );
    }
}
