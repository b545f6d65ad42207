//! What a runner streams while the program runs: chunks of output with their source, through a
//! bounded channel that never makes the program wait. The receiving side (the worker's live
//! log, a test's collector) decides what becomes of them; a runner knows nothing of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Most chunks waiting for the receiver before more are dropped from the stream.
pub const QUEUE: usize = 256;

/// Which output a chunk came from: the `s` field of a job's log stream, a plain value the
/// runner shares with the log protocol.
pub use quayside_common::protocol::log::LogSource;

/// One piece of output as the sandbox delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub source: LogSource,
    pub data: Vec<u8>,
}

/// The sending end a runner writes to. Best effort: when the receiver falls behind, chunks are
/// dropped from the stream (the result still has them) and counted.
#[derive(Clone, Debug)]
pub struct Output {
    tx: mpsc::Sender<Chunk>,
    dropped: Arc<AtomicU64>,
    started: Arc<AtomicBool>,
}

impl Output {
    /// A stream holding up to [`QUEUE`] chunks, and its receiving end.
    pub fn channel() -> (Self, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let output = Self {
            tx,
            dropped: Arc::default(),
            started: Arc::default(),
        };
        (output, rx)
    }

    /// A stream nobody reads (tools, and tests that look only at the result).
    pub fn discard() -> Self {
        Self::channel().0
    }

    /// Queues `data` from `source`; never waits.
    pub fn send(&self, source: LogSource, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let chunk = Chunk {
            source,
            data: data.to_vec(),
        };
        if self.tx.try_send(chunk).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many chunks the receiver missed (it fell behind, or nobody reads).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Called by a runner once its sandbox runs: from then on a cancel is the program's
    /// (`Ok` with status `cancelled` and the output so far), before it nothing ran.
    pub fn sandbox_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Whether the runner said its sandbox runs.
    pub fn has_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_stream_drops_and_counts_instead_of_waiting() {
        let (out, mut rx) = Output::channel();
        for _ in 0..QUEUE + 3 {
            out.send(LogSource::Stdout, b"x");
        }
        out.send(LogSource::Stderr, b"");
        assert_eq!(out.dropped(), 3);
        assert_eq!(
            rx.try_recv().expect("first chunk"),
            Chunk {
                source: LogSource::Stdout,
                data: b"x".to_vec()
            }
        );
        assert!(!out.has_started());
        out.clone().sandbox_started();
        assert!(out.has_started(), "clones share the flag");
    }
}
