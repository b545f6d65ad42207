//! Following a batch live from its pub/sub channel: a progress bar on a terminal, plain lines
//! every few seconds otherwise, until it ends, the timeout passes or Ctrl-C.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quayside_common::{JobId, Status};
use quayside_producer::{BatchEvent, BatchStatus, Error, Producer};

use crate::terminal;

/// Plain progress lines (no terminal) come at most this often.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// Failures printed above the bar as they happen; the summary lists them all.
const LIVE_FAILURES: usize = 20;

/// How following ended.
pub enum Followed {
    /// Every job ended; the final counters.
    Done(BatchStatus),
    /// `--timeout` passed first.
    TimedOut,
    /// Ctrl-C: the batch runs on.
    Interrupted,
}

/// Follows `batch` until it is done, drawing progress on stderr. `names` labels live failures.
///
/// # Errors
/// Unknown batch; Redis errors the follower cannot wait out.
pub async fn follow(
    producer: &Producer,
    batch: &str,
    names: &HashMap<JobId, String>,
    timeout: Option<Duration>,
) -> anyhow::Result<Followed> {
    // Fails fast on an unknown batch or an unreachable Redis, which the follower would wait out.
    producer
        .batch_status(batch)
        .await?
        .ok_or_else(|| Error::BatchNotFound(batch.to_owned()))?;
    let mut events = producer.follow_batch(batch);
    let mut view = View::new(batch);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(BatchEvent::Progress(status))) => {
                    view.progress(&status);
                    if status.done {
                        view.finish();
                        return Ok(Followed::Done(status));
                    }
                }
                Some(Ok(BatchEvent::JobEnded { id, status })) => view.ended(&id, status, names),
                Some(Err(e)) => {
                    view.finish();
                    return Err(e.into());
                }
                None => {
                    view.finish();
                    anyhow::bail!("the batch's event stream ended before the batch did");
                }
            },
            () = &mut deadline => {
                view.finish();
                return Ok(Followed::TimedOut);
            }
            _ = &mut ctrl_c => {
                view.finish();
                return Ok(Followed::Interrupted);
            }
        }
    }
}

/// Where progress goes: a bar when stderr is a terminal, plain lines otherwise.
enum Output {
    Bar { bar: ProgressBar, failures: usize },
    Lines { last: Option<Instant> },
}

struct View {
    batch: String,
    output: Output,
    rate: Rate,
    last: Option<BatchStatus>,
}

impl View {
    fn new(batch: &str) -> Self {
        // indicatif draws only on a terminal that can redraw (a TTY, TERM not `dumb`).
        let target = ProgressDrawTarget::stderr();
        let output = if std::io::stderr().is_terminal() && !target.is_hidden() {
            let bar = ProgressBar::with_draw_target(Some(0), target);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            Output::Bar { bar, failures: 0 }
        } else {
            Output::Lines { last: None }
        };
        Self {
            batch: batch.to_owned(),
            output,
            rate: Rate::default(),
            last: None,
        }
    }

    fn progress(&mut self, s: &BatchStatus) {
        let ended = s.total - s.remaining;
        self.rate.observe(ended);
        let speed = match (s.done, s.created_at_ms, s.finished_at_ms) {
            (true, Some(a), Some(b)) if b > a => {
                format!(
                    "{:.1} jobs/s overall",
                    s.total as f64 * 1000.0 / (b - a) as f64
                )
            }
            _ => self.rate.describe(s.remaining),
        };
        let counts = format!(
            "{} ok, {} failed, {} running, {} queued",
            s.succeeded, s.unsuccessful, s.running, s.queued
        );
        match &mut self.output {
            Output::Bar { bar, .. } => {
                if self.last.is_none() {
                    bar.enable_steady_tick(Duration::from_millis(200));
                }
                bar.set_message(format!("{counts}, {speed}"));
                bar.set_length(s.total);
                bar.set_position(ended);
            }
            Output::Lines { last } => {
                if s.done || last.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    *last = Some(Instant::now());
                    eprintln!(
                        "batch {}: {ended}/{} ended: {counts}; {speed}",
                        self.batch, s.total
                    );
                }
            }
        }
        self.last = Some(s.clone());
    }

    fn ended(&mut self, id: &JobId, status: Status, names: &HashMap<JobId, String>) {
        let Output::Bar { bar, failures } = &mut self.output else {
            return;
        };
        if status.is_success() {
            return;
        }
        *failures += 1;
        let name = terminal::line(names.get(id).map_or(id.as_str(), String::as_str));
        if *failures <= LIVE_FAILURES {
            bar.println(format!("  {:<15} {name}", status.as_str()));
        } else if *failures == LIVE_FAILURES + 1 {
            bar.println("  (more failures: see the summary)");
        }
    }

    /// Leaves the last state drawn; plain output gets a final line if the last was skipped.
    fn finish(&mut self) {
        match &self.output {
            Output::Bar { bar, .. } => {
                bar.abandon();
                // indicatif leaves the cursor after the bar; what follows starts on a new line.
                eprintln!();
            }
            Output::Lines { last } => {
                if let (Some(s), Some(_)) = (&self.last, last) {
                    if !s.done {
                        eprintln!(
                            "batch {}: {}/{} ended, {} running, {} queued",
                            self.batch,
                            s.total - s.remaining,
                            s.total,
                            s.running,
                            s.queued
                        );
                    }
                }
            }
        }
    }
}

/// Jobs ended per second since following began, and what that makes of the rest.
#[derive(Default)]
struct Rate {
    start: Option<(Instant, u64)>,
    ended: u64,
}

impl Rate {
    fn observe(&mut self, ended: u64) {
        self.start.get_or_insert((Instant::now(), ended));
        self.ended = ended;
    }

    fn per_sec(&self) -> Option<f64> {
        let (t0, e0) = self.start?;
        let secs = t0.elapsed().as_secs_f64();
        let n = self.ended.saturating_sub(e0);
        (n > 0 && secs > 0.0).then(|| n as f64 / secs)
    }

    fn describe(&self, remaining: u64) -> String {
        match self.per_sec() {
            Some(r) if remaining > 0 => format!(
                "{r:.1} jobs/s, ETA {}",
                human(Duration::from_secs_f64(remaining as f64 / r))
            ),
            Some(r) => format!("{r:.1} jobs/s"),
            None => "rate unknown yet".to_owned(),
        }
    }
}

/// `850ms`, `4.2s`, `3m05s`, `1h02m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_write_them() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(4_200)), "4.2s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(3_720)), "1h02m");
    }

    #[test]
    fn no_rate_before_anything_ends_since_following_began() {
        let mut r = Rate::default();
        r.observe(10);
        assert_eq!(r.describe(90), "rate unknown yet");
        r.start = Some((Instant::now() - Duration::from_secs(10), 10));
        r.observe(30);
        assert_eq!(r.describe(80), "2.0 jobs/s, ETA 40.0s");
    }
}
