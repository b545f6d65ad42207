//! Per-token request rate limits (`tenants.<name>.rate_per_s`, `rate_burst`): the generic cell
//! rate algorithm, one theoretical arrival time per token, in this gateway process (N gateway
//! replicas allow N times the rate: a shared limiter would cost a Redis round trip per request).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One token's limit: `burst` requests at once, then one every `1 / rate` seconds.
#[derive(Debug)]
pub(crate) struct Gcra {
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run: `interval × (burst − 1)`.
    tolerance: Duration,
    /// When the next request would be on schedule; `None` before the first.
    tat: Mutex<Option<Instant>>,
}

impl Gcra {
    /// `rate_per_s` and `burst` at least 1 (the config checks them).
    pub(crate) fn new(rate_per_s: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / rate_per_s.max(1);
        Self {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            tat: Mutex::new(None),
        }
    }

    /// Admits a request arriving at `now`, or says how long until one would be admitted.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update: the value is whole.
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let due = tat.unwrap_or(now).max(now);
        let earliest = due.checked_sub(self.tolerance).unwrap_or(now);
        if now < earliest {
            return Err(earliest - now);
        }
        *tat = Some(due + self.interval);
        Ok(())
    }
}

/// `Retry-After` in whole seconds for a wait: rounded up, at least 1.
pub(crate) fn retry_after_s(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_one_per_interval() {
        let g = Gcra::new(2, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(g.check(t0), Ok(()), "burst request {i}");
        }
        assert_eq!(g.check(t0), Err(Duration::from_millis(500)), "burst spent");
        assert_eq!(
            g.check(t0 + Duration::from_millis(499)),
            Err(Duration::from_millis(1))
        );
        assert_eq!(g.check(t0 + Duration::from_millis(500)), Ok(()));
        assert!(g.check(t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn an_idle_token_earns_back_its_burst_and_no_more() {
        let g = Gcra::new(1, 2);
        let t0 = Instant::now();
        assert_eq!(g.check(t0), Ok(()));
        assert_eq!(g.check(t0), Ok(()));
        assert!(g.check(t0).is_err());
        let later = t0 + Duration::from_secs(60);
        assert_eq!(g.check(later), Ok(()));
        assert_eq!(g.check(later), Ok(()));
        assert!(
            g.check(later).is_err(),
            "a long idle time banks only the burst"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_s(Duration::ZERO), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_s(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1_001)), 2);
    }
}
