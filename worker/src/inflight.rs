//! The jobs this worker is running, their leases, and the tasks that keep those leases alive:
//! renewal on a timer and cancellation requests from the cancel channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::queue::{JobQueue, Lease, LeaseState};

/// Why a running job's execution was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    None = 0,
    /// A user asked to cancel it: it ends as `cancelled`.
    Cancelled = 1,
    /// Another worker took it over: write nothing.
    LeaseLost = 2,
    /// This worker is draining: hand it back without spending an attempt.
    Drain = 3,
}

/// One running job as the background tasks see it.
#[derive(Debug)]
pub struct Tracked {
    pub lease: Lease,
    pub cancel: CancellationToken,
    reason: AtomicU8,
    /// Its run is over and its outcome is being written: no longer in flight, and its lease
    /// is no longer renewed (the write ends it; a renewal racing it would only see it gone).
    finishing: AtomicBool,
}

impl Tracked {
    /// Stops the execution; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.cancel.cancel();
    }

    /// The run is over; from now on the job's outcome is being written.
    pub fn finishing(&self) {
        self.finishing.store(true, Ordering::Release);
    }

    pub fn is_finishing(&self) -> bool {
        self.finishing.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::Acquire) {
            1 => StopReason::Cancelled,
            2 => StopReason::LeaseLost,
            3 => StopReason::Drain,
            _ => StopReason::None,
        }
    }
}

/// Registry of running jobs, keyed by job id.
#[derive(Debug, Default)]
pub struct InFlight {
    jobs: Mutex<HashMap<String, Arc<Tracked>>>,
}

impl InFlight {
    /// Starts tracking a job; the returned guard stops tracking when dropped.
    pub fn track(self: &Arc<Self>, lease: Lease) -> TrackGuard {
        let tracked = Arc::new(Tracked {
            lease,
            cancel: CancellationToken::new(),
            reason: AtomicU8::new(StopReason::None as u8),
            finishing: AtomicBool::new(false),
        });
        self.jobs
            .lock()
            .expect("lock poisoned")
            .insert(tracked.lease.job_id.clone(), Arc::clone(&tracked));
        TrackGuard {
            registry: Arc::clone(self),
            tracked,
        }
    }

    /// Jobs running now (not those whose outcome is being written).
    pub fn len(&self) -> usize {
        self.jobs
            .lock()
            .expect("lock poisoned")
            .values()
            .filter(|t| !t.is_finishing())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Vec<Arc<Tracked>> {
        self.jobs
            .lock()
            .expect("lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    fn get(&self, job_id: &str) -> Option<Arc<Tracked>> {
        self.jobs
            .lock()
            .expect("lock poisoned")
            .get(job_id)
            .cloned()
    }

    /// Stops every running job with `reason`.
    pub fn stop_all(&self, reason: StopReason) {
        for t in self.snapshot() {
            t.stop(reason);
        }
    }

    /// Renews all leases every `interval` until `shutdown`. Runs on its own task so a busy job
    /// can never starve it (the cause of most double runs in other queues).
    pub async fn renew_forever(
        self: Arc<Self>,
        queue: Arc<dyn JobQueue>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let jobs: Vec<Arc<Tracked>> = self
                .snapshot()
                .into_iter()
                .filter(|t| !t.is_finishing())
                .collect();
            if jobs.is_empty() {
                continue;
            }
            let leases: Vec<Lease> = jobs.iter().map(|t| t.lease.clone()).collect();
            match queue.renew(&leases).await {
                Ok(states) => {
                    for (t, state) in jobs.iter().zip(states) {
                        match state {
                            LeaseState::Held => {}
                            LeaseState::CancelRequested => t.stop(StopReason::Cancelled),
                            // Finished while the renewal was on its way: the finish took the entry.
                            LeaseState::Lost if t.is_finishing() => {}
                            LeaseState::Lost => {
                                tracing::warn!(job_id = %t.lease.job_id, "lease lost to another worker; stopping execution");
                                t.stop(StopReason::LeaseLost);
                            }
                            LeaseState::Requeued => {
                                tracing::warn!(job_id = %t.lease.job_id, "the job's stream entry was deleted (or its group lost); it was queued again, stopping this execution");
                                t.stop(StopReason::LeaseLost);
                            }
                        }
                    }
                }
                Err(error) => crate::queue::log_error(&error, "renew leases"),
            }
        }
    }

    /// Stops running jobs whose cancellation is published, until `shutdown`. Reconnects after
    /// errors; a request missed meanwhile is still seen at the next lease renewal.
    pub async fn listen_for_cancels(
        self: Arc<Self>,
        queue: Arc<dyn JobQueue>,
        shutdown: CancellationToken,
    ) {
        loop {
            match queue.cancel_requests().await {
                Ok(mut ids) => loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        id = ids.next() => match id {
                            Some(id) => if let Some(t) = self.get(&id) {
                                tracing::info!(job_id = %id, "cancellation requested; stopping execution");
                                t.stop(StopReason::Cancelled);
                            },
                            None => break,
                        },
                    }
                },
                Err(error) => crate::queue::log_error(&error, "subscribe to cancellations"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Removes its job from the registry when dropped.
#[derive(Debug)]
pub struct TrackGuard {
    registry: Arc<InFlight>,
    pub tracked: Arc<Tracked>,
}

impl Drop for TrackGuard {
    fn drop(&mut self) {
        let mut jobs = self.registry.jobs.lock().expect("lock poisoned");
        if jobs
            .get(&self.tracked.lease.job_id)
            .is_some_and(|t| Arc::ptr_eq(t, &self.tracked))
        {
            jobs.remove(&self.tracked.lease.job_id);
        }
    }
}
