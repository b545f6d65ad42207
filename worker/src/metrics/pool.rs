//! The handles of the Docker runner's warm pool: how many containers wait per language, how
//! many jobs took one, how many went cold and why, and how long a refill takes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString};

use super::{POOL_CONTAINERS, POOL_HITS_TOTAL, POOL_MISSES_TOTAL, POOL_REFILL_SECONDS};

/// Why a job of a pooled language took the cold path (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Miss {
    /// Its resolved limits are not the language's defaults the pool's containers have.
    Limits,
    /// No container was waiting (all taken, or still being made).
    Empty,
    /// The waiting containers could not be handed over (they had died).
    Failed,
}

impl Miss {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Limits => "limits",
            Self::Empty => "empty",
            Self::Failed => "failed",
        }
    }
}

/// One language's handles: its hits (or one miss reason's count), its waiting gauge, its
/// refill histogram.
type Handles = (Counter, Gauge, Histogram);

/// One queue's pool handles; labelled handles are made on first use and cached. The
/// `language` values are keys of the worker's language table (a bounded set).
#[derive(Debug)]
pub struct PoolMetrics {
    queue: SharedString,
    handles: Mutex<HashMap<(String, Option<Miss>), Handles>>,
}

impl PoolMetrics {
    pub fn new(queue: &str) -> Self {
        Self {
            queue: SharedString::from(queue.to_owned()),
            handles: Mutex::default(),
        }
    }

    fn with<T>(&self, language: &str, miss: Option<Miss>, f: impl FnOnce(&Handles) -> T) -> T {
        let mut handles = self.handles.lock().expect("lock poisoned");
        let key = (language.to_owned(), miss);
        let entry = handles.entry(key).or_insert_with(|| {
            let (q, l) = (self.queue.clone(), SharedString::from(language.to_owned()));
            let counter = match miss {
                None => POOL_HITS_TOTAL.counter([q.clone(), l.clone()]),
                Some(m) => POOL_MISSES_TOTAL.counter([
                    q.clone(),
                    l.clone(),
                    SharedString::const_str(m.as_label()),
                ]),
            };
            (
                counter,
                POOL_CONTAINERS.gauge([q.clone(), l.clone()]),
                POOL_REFILL_SECONDS.histogram([q, l]),
            )
        });
        f(entry)
    }

    /// `waiting` containers of `language` wait for a job now.
    pub fn waiting(&self, language: &str, waiting: usize) {
        self.with(language, None, |(_, g, _)| g.set(waiting as f64));
    }

    /// A job of `language` took a warm container.
    pub fn hit(&self, language: &str) {
        self.with(language, None, |(c, _, _)| c.increment(1));
    }

    /// A job of `language` took the cold path.
    pub fn miss(&self, language: &str, why: Miss) {
        self.with(language, Some(why), |(c, _, _)| c.increment(1));
    }

    /// One container of `language` was made ready in `took`.
    pub fn refilled(&self, language: &str, took: Duration) {
        self.with(language, None, |(_, _, h)| h.record(took.as_secs_f64()));
    }
}
