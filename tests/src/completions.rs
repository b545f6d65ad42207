//! Terminal notifications (every publish on a queue's `done` channels), counted per job, so a
//! test can assert each job ended exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use quayside_common::connection::Redis;
use quayside_common::JobId;

use crate::{within, TestQueue};

impl TestQueue {
    /// Starts counting terminal notifications per job (every publish on a `done` channel).
    pub async fn count_completions(&self) -> Completions {
        let mut pubsub = Redis::new(&self.cfg.redis)
            .expect("redis config")
            .pubsub()
            .await
            .expect("pubsub");
        let prefix = format!("{}done:", self.keys.prefix());
        pubsub
            .psubscribe(format!("{prefix}*"))
            .await
            .expect("psubscribe");
        let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let sink = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut msgs = pubsub.into_on_message();
            while let Some(m) = msgs.next().await {
                let id = m.get_channel_name().trim_start_matches(&prefix).to_owned();
                let status: String = m.get_payload().unwrap_or_default();
                sink.lock().expect("lock").push((id, status));
            }
        });
        Completions { seen }
    }
}

/// Terminal notifications seen so far, in arrival order.
pub struct Completions {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Completions {
    pub fn order(&self) -> Vec<(String, String)> {
        self.seen.lock().expect("lock").clone()
    }

    /// Asserts each id was announced exactly once (no double result) and nothing else was.
    pub fn assert_exactly_once(&self, ids: &[JobId]) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (id, _) in self.order() {
            *counts.entry(id).or_default() += 1;
        }
        for id in ids {
            assert_eq!(
                counts.remove(id.as_str()),
                Some(1),
                "job {id} must end exactly once"
            );
        }
        assert!(counts.is_empty(), "unexpected completions: {counts:?}");
    }

    /// Waits until `n` completions were seen.
    pub async fn wait_for(&self, n: usize, secs: u64) {
        within(secs, &format!("{n} completions"), async {
            while self.seen.lock().expect("lock").len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}
