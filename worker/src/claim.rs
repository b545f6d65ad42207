//! The claim loop: take as many jobs as there are free slots, highest priority first, and hand
//! each to [`crate::execute`] together with its slot. It claims only while the runner gate is
//! open ([`crate::gate`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quayside_common::Priority;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::execute::execute;
use crate::metrics::Event;
use crate::queue::ClaimBatch;
use crate::shutdown::sleep_or_stop;

/// How often a worker asks again while the queue is paused: a resume is seen within this long
/// (no signal needed, and the pause itself holds from the moment it is written).
pub const PAUSE_POLL: Duration = Duration::from_millis(500);

/// Longest an idle worker blocks while a tenant with queued work is held at its running cap:
/// the slot that frees (on any worker) rings nothing, so it asks again this soon.
pub const HELD_POLL: Duration = Duration::from_millis(100);

const STRICT: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];
const LOWEST_FIRST: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];

/// How many of the next `n` claims the starvation guard reserves for the lowest non-empty
/// priority, given `claimed` jobs so far: one in every `guard`.
pub fn guarded_claims(claimed: u64, n: u64, guard: u32) -> u64 {
    if guard == 0 {
        return 0;
    }
    let g = u64::from(guard);
    (claimed + n) / g - claimed / g
}

/// Claims and dispatches until `stop` fires. Each job runs on `tracker` holding one slot.
pub async fn claim_loop(
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let w = &ctx.cfg.worker;
    let reclaim_every = Duration::from_millis(w.reclaim_interval_ms);
    let mut next_reclaim = Instant::now();
    let mut claimed_total: u64 = 0;
    let mut error_delay = Duration::from_millis(100);
    // Whether the last claim found the queue paused (to log the change once, not every poll).
    let mut paused = false;

    loop {
        if !ctx.gate.is_open() && !ctx.gate.wait_open(&stop).await {
            return;
        }
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        if !ctx.gate.is_open() {
            // Closed while this loop waited for a slot: claim nothing until it opens again.
            continue;
        }
        let mut permits = vec![first];
        while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
            permits.push(p);
        }

        let result = if Instant::now() >= next_reclaim {
            next_reclaim = Instant::now() + reclaim_every;
            ctx.queue
                .reclaim(permits.len(), w.lease_ms)
                .await
                .map(|batch| {
                    if !batch.claimed.is_empty() {
                        ctx.metrics.emit(Event::Reclaimed {
                            jobs: batch.claimed.len(),
                        });
                    }
                    (batch, true)
                })
        } else {
            claim_new(&ctx, permits.len(), claimed_total)
                .await
                .map(|b| (b, false))
        };

        match result {
            Ok((batch, _)) if batch.paused => {
                error_delay = Duration::from_millis(100);
                drop(permits);
                if !std::mem::replace(&mut paused, true) {
                    tracing::info!("queue paused; claiming nothing until it is resumed");
                }
                if sleep_or_stop(&stop, PAUSE_POLL).await {
                    return;
                }
            }
            Ok((batch, reclaiming)) => {
                error_delay = Duration::from_millis(100);
                if std::mem::replace(&mut paused, false) {
                    tracing::info!("queue resumed; claiming again");
                }
                log_dropped(&ctx, &batch);
                for (tenant, why) in &batch.skipped {
                    ctx.metrics.claim_skipped(tenant, why);
                }
                let idle = batch.claimed.is_empty();
                claimed_total += batch.claimed.len() as u64;
                dispatch(&ctx, &tracker, batch.claimed, &mut permits);
                drop(permits);
                if idle && !reclaiming {
                    if let Some(last) = batch.last_ids {
                        let until_reclaim = next_reclaim.saturating_duration_since(Instant::now());
                        let most = if batch.held {
                            HELD_POLL
                        } else {
                            Duration::from_millis(w.claim_block_ms)
                        };
                        let block = most.min(until_reclaim).max(Duration::from_millis(1));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            r = ctx.queue.wait_for_entries(&last, block.as_millis() as u64) => {
                                if let Err(error) = r {
                                    crate::queue::log_error(&error, "wait for new entries");
                                    sleep_or_stop(&stop, error_delay).await;
                                }
                            }
                        }
                    }
                }
            }
            Err(error) => {
                drop(permits);
                crate::queue::log_error(&error, "claim jobs");
                if sleep_or_stop(&stop, error_delay).await {
                    return;
                }
                error_delay = (error_delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One claim round: strict order, except the share the starvation guard reserves.
async fn claim_new(
    ctx: &Context,
    n: usize,
    claimed_total: u64,
) -> Result<ClaimBatch, crate::queue::QueueError> {
    let guarded = guarded_claims(claimed_total, n as u64, ctx.cfg.worker.starvation_guard) as usize;
    if guarded == 0 {
        return ctx.queue.claim(n, &STRICT).await;
    }
    let mut batch = ctx.queue.claim(guarded, &LOWEST_FIRST).await?;
    if batch.paused {
        return Ok(batch);
    }
    let rest = n - batch.claimed.len();
    if rest > 0 {
        let more = ctx.queue.claim(rest, &STRICT).await?;
        batch.claimed.extend(more.claimed);
        batch.dropped.extend(more.dropped);
        batch.held |= more.held;
        batch.skipped.extend(more.skipped);
        batch.last_ids = if batch.claimed.is_empty() {
            more.last_ids
        } else {
            None
        };
    }
    Ok(batch)
}

fn dispatch(
    ctx: &Arc<Context>,
    tracker: &TaskTracker,
    jobs: Vec<crate::queue::Claimed>,
    permits: &mut Vec<OwnedSemaphorePermit>,
) {
    for job in jobs {
        let Some(permit) = permits.pop() else {
            // Cannot happen: claims never ask for more than the permits held.
            tracing::error!(job_id = %job.lease.job_id, "claimed more jobs than free slots");
            break;
        };
        let ctx = Arc::clone(ctx);
        tracker.spawn(async move {
            let slot = ctx.metrics.slot_taken();
            execute(ctx, job).await;
            drop(slot);
            drop(permit);
        });
    }
}

fn log_dropped(ctx: &Context, batch: &ClaimBatch) {
    for d in &batch.dropped {
        ctx.metrics.emit(Event::EntryDropped(d));
    }
}

#[cfg(test)]
mod tests {
    use super::guarded_claims;

    #[test]
    fn guard_reserves_one_in_n() {
        assert_eq!(guarded_claims(0, 1, 0), 0, "0 means strict");
        let picks: u64 = (0..100).map(|i| guarded_claims(i, 1, 10)).sum();
        assert_eq!(picks, 10);
        assert_eq!(guarded_claims(0, 25, 10), 2);
        assert_eq!(guarded_claims(9, 1, 10), 1);
        assert_eq!(guarded_claims(10, 1, 10), 0);
    }
}
