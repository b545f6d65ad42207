//! The engine's own record of who stopped a container: its event stream.
//!
//! A container whose main process died of SIGKILL (exit status 137, or 143 under gVisor, where
//! SIGTERM kills it too) was either killed by the program itself (`kill -9 $$`, a CPU-time
//! limit) or from outside: `docker kill`, `docker rm -f`, `docker stop`, an engine restart.
//! Nothing inside the sandbox can tell these apart reliably: without Yama the program may read
//! and write the memory of the wrapper (same uid, `/proc/1/mem`), so whatever the wrapper says
//! can be forged. The engine logs a `kill` event for every kill it is asked to do, and nothing
//! inside a container can make it log one, so the worker follows the engine's events for its
//! own containers and asks them, for a container that died of a signal, whether it was killed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt as _;
use tokio::sync::Notify;

use crate::runner::sandbox::LABEL_WORKER;

/// What the engine's events say about one container's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Witness {
    /// It died without the engine being asked to kill it: the ending is the program's.
    Clean,
    /// The engine was asked to kill it (with this signal) before it died.
    Killed { signal: String },
    /// The event stream broke while it ran, or its `die` never came: cannot tell.
    Unknown,
}

#[derive(Clone, Debug, Default)]
struct Seen {
    killed: Option<String>,
    died: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped whenever the stream breaks: a container watched across a bump may have been
    /// killed while nobody listened.
    generation: u64,
    watched: HashMap<String, Seen>,
}

/// Follows the engine's `kill` and `die` events for one worker's containers.
#[derive(Debug, Default)]
pub(super) struct KillWatch {
    state: Mutex<State>,
    changed: Notify,
}

impl KillWatch {
    /// Starts following the events of containers labelled with `worker_id`. The task ends
    /// when the watch is dropped.
    pub(super) fn start(docker: Docker, worker_id: &str) -> Arc<Self> {
        let watch = Arc::new(Self::default());
        let weak = Arc::downgrade(&watch);
        let label = format!("{LABEL_WORKER}={worker_id}");
        tokio::spawn(follow(docker, label, weak));
        watch
    }

    /// Starts recording the events of container `name`, before it is created. Returns the
    /// stream's generation, for [`KillWatch::witness`].
    pub(super) fn watch(&self, name: &str) -> u64 {
        let mut state = self.state.lock().expect("lock poisoned");
        state.watched.insert(name.to_owned(), Seen::default());
        state.generation
    }

    /// Stops recording `name`.
    pub(super) fn forget(&self, name: &str) {
        self.state
            .lock()
            .expect("lock poisoned")
            .watched
            .remove(name);
    }

    /// How `name` ended, as the events tell, waiting up to `wait` for its `die` event.
    pub(super) async fn witness(&self, name: &str, generation: u64, wait: Duration) -> Witness {
        let judge = |state: &State| {
            if state.generation != generation {
                return Some(Witness::Unknown);
            }
            match state.watched.get(name) {
                None => Some(Witness::Unknown),
                Some(Seen { died: false, .. }) => None,
                Some(Seen {
                    killed: Some(signal),
                    ..
                }) => Some(Witness::Killed {
                    signal: signal.clone(),
                }),
                Some(Seen { killed: None, .. }) => Some(Witness::Clean),
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if let Some(w) = judge(&self.state.lock().expect("lock poisoned")) {
                return w;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return judge(&self.state.lock().expect("lock poisoned"))
                    .unwrap_or(Witness::Unknown);
            }
        }
    }

    fn record(&self, action: &str, attributes: &HashMap<String, String>) {
        let Some(name) = attributes.get("name") else {
            return;
        };
        let mut state = self.state.lock().expect("lock poisoned");
        if let Some(seen) = state.watched.get_mut(name) {
            match action {
                "kill" => {
                    seen.killed = Some(attributes.get("signal").cloned().unwrap_or_default());
                }
                "die" => seen.died = true,
                _ => return,
            }
            drop(state);
            self.changed.notify_waiters();
        }
    }

    fn broke(&self) {
        self.state.lock().expect("lock poisoned").generation += 1;
        self.changed.notify_waiters();
    }
}

/// Unix seconds with nanoseconds, as the events API takes them.
fn timestamp(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

async fn follow(docker: Docker, label: String, watch: Weak<KillWatch>) {
    let now_nanos = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    };
    // Replayed from the engine's buffer on every (re)connect: what happened while the stream
    // was being set up is not missed.
    let mut since = now_nanos() - 1_000_000_000;
    let mut delay = Duration::from_millis(100);
    loop {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "event".to_owned(),
                vec!["kill".to_owned(), "die".to_owned()],
            ),
            ("label".to_owned(), vec![label.clone()]),
        ]);
        let options = EventsOptions {
            since: Some(timestamp(since)),
            until: None,
            filters: Some(filters),
        };
        let mut events = docker.events(Some(options));
        while let Some(event) = events.next().await {
            let Some(watch) = watch.upgrade() else { return };
            match event {
                Ok(message) => {
                    delay = Duration::from_millis(100);
                    if let Some(t) = message.time_nano {
                        since = since.max(t);
                    }
                    let attributes = message.actor.and_then(|a| a.attributes).unwrap_or_default();
                    watch.record(message.action.as_deref().unwrap_or(""), &attributes);
                }
                Err(error) => {
                    tracing::debug!(%error, "docker event stream broke; reconnecting");
                    break;
                }
            }
        }
        let Some(watch) = watch.upgrade() else { return };
        watch.broke();
        drop(watch);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_kill_before_the_death_is_from_outside() {
        let w = KillWatch::default();
        let g = w.watch("a");
        w.watch("b");
        w.record("kill", &attrs(&[("name", "a"), ("signal", "9")]));
        w.record("die", &attrs(&[("name", "a"), ("exitCode", "137")]));
        w.record("die", &attrs(&[("name", "b"), ("exitCode", "137")]));
        w.record("die", &attrs(&[("name", "not-watched")]));
        let wait = Duration::from_millis(10);
        assert_eq!(
            w.witness("a", g, wait).await,
            Witness::Killed { signal: "9".into() }
        );
        assert_eq!(w.witness("b", g, wait).await, Witness::Clean);
        w.forget("a");
        assert_eq!(w.witness("a", g, wait).await, Witness::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn no_death_or_a_broken_stream_is_unknown() {
        let w = Arc::new(KillWatch::default());
        let g = w.watch("a");
        assert_eq!(
            w.witness("a", g, Duration::from_secs(1)).await,
            Witness::Unknown,
            "die never came"
        );
        let waiting = {
            let w = Arc::clone(&w);
            tokio::spawn(async move { w.witness("a", g, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        w.broke();
        w.record("die", &attrs(&[("name", "a")]));
        assert_eq!(waiting.await.expect("task"), Witness::Unknown);
        assert_eq!(timestamp(1_500_000_000_250_000_000), "1500000000.250000000");
    }
}
