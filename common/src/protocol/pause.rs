//! Pausing and resuming a queue: plain commands on the queue's `paused` hash (no script: one
//! key, one command each). claim.lua reads the same field, so a pause holds from the moment
//! [`Pause::set`] answers; the current state is part of the [`super::stats`] sample.

use redis::Value;

use super::reply::Reader;
use super::CallError;
use crate::keys::{paused_tenant_field, Keys, PAUSED_QUEUE};

/// Whether a pause or resume changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The queue was running and is now paused, or paused and now running.
    Changed,
    /// It already was in the state asked for (a pause keeps its first time).
    Unchanged,
}

/// Pause state changes of one queue.
#[derive(Clone, Copy, Debug)]
pub struct Pause;

/// What a pause holds: the whole queue, or one tenant's lanes (`default`: the default
/// tenant's) while other tenants run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    Queue,
    Tenant(&'a str),
}

impl Scope<'_> {
    /// The field of the `paused` hash.
    pub fn field(self) -> String {
        match self {
            Self::Queue => PAUSED_QUEUE.to_owned(),
            Self::Tenant(t) => paused_tenant_field(t),
        }
    }
}

const R: Reader = Reader("pause");

impl Pause {
    /// `HSETNX`: pauses the scope as of `now_ms`, unless it is paused already.
    pub fn set_cmd(keys: &Keys, scope: Scope<'_>, now_ms: u64) -> redis::Cmd {
        let mut c = redis::cmd("HSETNX");
        c.arg(keys.paused()).arg(scope.field()).arg(now_ms);
        c
    }

    /// `HDEL`: lets workers claim from the scope again.
    pub fn clear_cmd(keys: &Keys, scope: Scope<'_>) -> redis::Cmd {
        let mut c = redis::cmd("HDEL");
        c.arg(keys.paused()).arg(scope.field());
        c
    }

    /// `XADD` to the doorbell: idle workers blocked on the default streams wake and claim
    /// (a resumed tenant's lanes hold work no new entry announces).
    pub fn ring_cmd(keys: &Keys) -> redis::Cmd {
        let mut c = redis::cmd("XADD");
        c.arg(keys.doorbell())
            .arg("MAXLEN")
            .arg("~")
            .arg(16)
            .arg("*")
            .arg("resume")
            .arg("1");
        c
    }

    /// Reads the answer of either command (1 = changed, 0 = already so).
    ///
    /// # Errors
    /// The reply is not 0 or 1.
    pub fn parse(reply: &Value) -> Result<Change, super::ReplyError> {
        match R.number::<u8>(reply)? {
            1 => Ok(Change::Changed),
            0 => Ok(Change::Unchanged),
            n => Err(R.error(format!("expected 0 or 1, got {n}"))),
        }
    }

    /// Pauses (`pause = true`) or resumes the queue or one tenant. A resume rings the
    /// doorbell, so idle workers claim at once.
    ///
    /// # Errors
    /// Redis unreachable or refused, or an unexpected reply.
    pub async fn apply<C>(
        conn: &mut C,
        keys: &Keys,
        scope: Scope<'_>,
        pause: bool,
    ) -> Result<Change, CallError>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        let cmd = if pause {
            Self::set_cmd(keys, scope, crate::now_ms())
        } else {
            Self::clear_cmd(keys, scope)
        };
        let op = if pause { "pause" } else { "resume" };
        let reply: Value = cmd
            .query_async(conn)
            .await
            .map_err(|source| CallError::Redis { op, source })?;
        let change = Self::parse(&reply)?;
        if !pause && change == Change::Changed {
            let _: Value = Self::ring_cmd(keys)
                .query_async(conn)
                .await
                .map_err(|source| CallError::Redis { op, source })?;
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::keys;

    fn words(c: &redis::Cmd) -> Vec<String> {
        c.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn pause_keeps_its_first_time_and_resume_deletes_the_field() {
        assert_eq!(
            words(&Pause::set_cmd(&keys(), Scope::Queue, 1234)),
            ["HSETNX", "qs:{q}:paused", "*", "1234"]
        );
        assert_eq!(
            words(&Pause::clear_cmd(&keys(), Scope::Queue)),
            ["HDEL", "qs:{q}:paused", "*"]
        );
        assert_eq!(
            words(&Pause::set_cmd(&keys(), Scope::Tenant("acme"), 5)),
            ["HSETNX", "qs:{q}:paused", "t:acme", "5"]
        );
        assert_eq!(
            words(&Pause::ring_cmd(&keys()))[..2],
            ["XADD", "qs:{q}:doorbell"]
        );
    }

    #[test]
    fn replies_say_whether_anything_changed() {
        assert_eq!(Pause::parse(&Value::Int(1)), Ok(Change::Changed));
        assert_eq!(Pause::parse(&Value::Int(0)), Ok(Change::Unchanged));
        assert!(Pause::parse(&Value::Int(2)).is_err());
        assert!(Pause::parse(&Value::Nil).is_err());
    }
}
