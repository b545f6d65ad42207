//! One clear story per outage of a dependency (Redis, the runner's backend) instead of a warning
//! per failed call: the first failure says what is down, since when and why; repeats are
//! counted and summarised once per [`REPEAT`]; the first success says it is back and how long
//! the outage lasted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a continuing outage is mentioned again.
pub const REPEAT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Down {
    since: Instant,
    since_ms: u64,
    failures: u64,
    reported: Instant,
    last_error: String,
}

/// The outage state of one dependency, shared by everything that calls it.
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    repeat: Duration,
    /// Fast path for the common case: nothing is down.
    down: AtomicBool,
    state: Mutex<Option<Down>>,
}

impl Outage {
    /// `what` names the dependency in log lines: "redis", "runner".
    pub fn new(what: &'static str) -> Self {
        Self::every(what, REPEAT)
    }

    /// Like [`Outage::new`], repeating every `repeat` (tests).
    pub fn every(what: &'static str, repeat: Duration) -> Self {
        Self {
            what,
            repeat,
            down: AtomicBool::new(false),
            state: Mutex::new(None),
        }
    }

    /// A call failed because the dependency is down (unreachable, not ready).
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("lock poisoned");
        match state.as_mut() {
            None => {
                let since_ms = quayside_common::now_ms();
                tracing::warn!(
                    dependency = self.what,
                    since = %clock(since_ms),
                    %error,
                    "{} is down; waiting for it (repeats are summarised every {} s)",
                    self.what,
                    self.repeat.as_secs()
                );
                *state = Some(Down {
                    since: now,
                    since_ms,
                    failures: 1,
                    reported: now,
                    last_error: error.to_string(),
                });
                self.down.store(true, Ordering::Release);
            }
            Some(down) => {
                down.failures += 1;
                down.last_error = error.to_string();
                if now.duration_since(down.reported) >= self.repeat {
                    down.reported = now;
                    tracing::warn!(
                        dependency = self.what,
                        since = %clock(down.since_ms),
                        down_s = down.since.elapsed().as_secs(),
                        failures = down.failures,
                        error = %down.last_error,
                        "{} is still down",
                        self.what
                    );
                }
            }
        }
    }

    /// A call succeeded: ends the outage, if there was one.
    pub fn recovered(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state.lock().expect("lock poisoned");
        if let Some(down) = state.take() {
            self.down.store(false, Ordering::Release);
            tracing::info!(
                dependency = self.what,
                since = %clock(down.since_ms),
                down_ms = down.since.elapsed().as_millis() as u64,
                failures = down.failures,
                "{} is back after {:.1} s",
                self.what,
                down.since.elapsed().as_secs_f64()
            );
        }
    }

    /// Since when (unix ms) the dependency is down and the last error, or `None`.
    pub fn down(&self) -> Option<(u64, String)> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        let state = self.state.lock().expect("lock poisoned");
        state.as_ref().map(|d| (d.since_ms, d.last_error.clone()))
    }
}

/// `HH:MM:SS UTC` of a unix time in ms: enough to line an outage up with other logs.
pub fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_down_until_a_success() {
        let o = Outage::every("redis", Duration::from_secs(3600));
        assert_eq!(o.down(), None);
        o.recovered();
        o.failed(&"connection refused");
        o.failed(&"connection reset");
        let (since, error) = o.down().expect("down");
        assert!(since > 0);
        assert_eq!(error, "connection reset", "the last error");
        o.recovered();
        assert_eq!(o.down(), None);
    }

    #[test]
    fn clock_reads_utc() {
        assert_eq!(clock(0), "00:00:00 UTC");
        assert_eq!(clock((13 * 3600 + 5 * 60 + 9) * 1000 + 999), "13:05:09 UTC");
    }
}
