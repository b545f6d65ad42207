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
    /// Pooled connections per process (each multiplexes many requests).
    pub pool_size: usize,
    /// Give up on a connection attempt after this long.
    pub connect_timeout_ms: u64,
    /// Give up on a command's reply after this long (blocking reads add their block time).
    pub command_timeout_ms: u64,
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
