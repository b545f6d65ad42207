//! The live log of one attempt: the chunks a runner streams ([`Output`]) forwarded to the job's
//! log stream as they arrive, in entries that hold whole lines where possible.
//!
//! A chunk is cut after its last newline; the partial line after it is held until its newline
//! arrives, the program writes to another stream, the held bytes reach the entry cap, or
//! [`HOLD`] passes (a prompt or a progress bar still shows promptly). Queued chunks of one
//! stream are joined into fewer, larger entries. `docs/protocol.md` says what clients can rely on.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::queue::LogWriter;
use crate::runner::{Chunk, LogSource, Output};
/// Largest entry the live log writes.
pub const ENTRY_BYTES: usize = 64 << 10;
/// Longest a partial line waits for the rest of it.
pub const HOLD: Duration = Duration::from_millis(200);

/// Cuts chunks into line-aligned entries. Pure: the task around it does the waiting.
#[derive(Debug, Default)]
struct Lines {
    /// Entries ready to write, in order; consecutive ones of a stream are joined.
    ready: Vec<(LogSource, Vec<u8>)>,
    /// The partial line held back, and since when.
    held: Option<(LogSource, Vec<u8>, Instant)>,
}

impl Lines {
    fn push(&mut self, source: LogSource, data: &[u8], now: Instant) {
        if self.held.as_ref().is_some_and(|(s, _, _)| *s != source) {
            self.release(false);
        }
        let (_, buf, _) = self.held.get_or_insert_with(|| (source, Vec::new(), now));
        buf.extend_from_slice(data);
        if let Some(nl) = buf.iter().rposition(|&b| b == b'\n') {
            let rest = buf.split_off(nl + 1);
            let whole = std::mem::replace(buf, rest);
            self.emit(source, whole);
            if let Some((_, buf, since)) = &mut self.held {
                if buf.is_empty() {
                    self.held = None;
                } else {
                    *since = now;
                }
            }
        }
        // A line longer than an entry goes out in entry-sized pieces, cut between characters.
        while let Some((_, buf, since)) = self
            .held
            .as_mut()
            .filter(|(_, b, _)| b.len() >= ENTRY_BYTES)
        {
            let cut = ENTRY_BYTES - incomplete_utf8_tail(&buf[..ENTRY_BYTES]);
            let rest = buf.split_off(cut);
            let piece = std::mem::replace(buf, rest);
            *since = now;
            self.emit(source, piece);
        }
        if self.held.as_ref().is_some_and(|(_, b, _)| b.is_empty()) {
            self.held = None;
        }
    }

    /// When the held partial line is due, if one is held.
    fn due(&self) -> Option<Instant> {
        self.held.as_ref().map(|(_, _, since)| *since + HOLD)
    }

    /// Moves the held bytes to `ready`. Unless `all`, an incomplete UTF-8 character at their
    /// end stays held, so a forced cut does not split one.
    fn release(&mut self, all: bool) {
        let Some((source, mut buf, since)) = self.held.take() else {
            return;
        };
        let keep = if all { 0 } else { incomplete_utf8_tail(&buf) };
        let tail = buf.split_off(buf.len() - keep);
        if !tail.is_empty() {
            self.held = Some((source, tail, since));
        }
        self.emit(source, buf);
    }

    fn emit(&mut self, source: LogSource, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        // Joined only if the entry stays line-aligned: a partial line released early (a stream
        // switch, a cap) never rides on the end of whole lines before it.
        let partial = !data.ends_with(b"\n");
        match self.ready.last_mut() {
            Some((s, last))
                if *s == source
                    && last.len() + data.len() <= ENTRY_BYTES
                    && !(partial && last.ends_with(b"\n")) =>
            {
                last.extend_from_slice(&data);
            }
            _ => self.ready.push((source, data)),
        }
    }

    fn take_ready(&mut self) -> Vec<(LogSource, Vec<u8>)> {
        std::mem::take(&mut self.ready)
    }
}

/// How many bytes at the end of `buf` start a UTF-8 character that is not complete yet.
fn incomplete_utf8_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead
        }
        let len = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if len > back { back } else { 0 };
    }
    0
}

/// Forwards an attempt's output to its log from a task of its own, so a slow Redis never
/// stalls the program's pipes or its wall time. Best effort: when the writer falls behind, the
/// runner's [`Output`] drops chunks from the live log (the result still has them).
#[derive(Debug)]
pub struct LiveLog {
    task: AbortOnDropHandle<()>,
}

impl LiveLog {
    /// Starts forwarding the chunks of `chunks` to `writer` until every sender is gone.
    pub fn start(mut chunks: mpsc::Receiver<Chunk>, writer: impl LogWriter) -> Self {
        let task = tokio::spawn(async move {
            let mut lines = Lines::default();
            loop {
                let next = match lines.due() {
                    Some(due) => match tokio::time::timeout_at(due, chunks.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            lines.release(false);
                            for (source, data) in lines.take_ready() {
                                writer.write(source, &data).await;
                            }
                            continue;
                        }
                    },
                    None => chunks.recv().await,
                };
                let Some(chunk) = next else { break };
                lines.push(chunk.source, &chunk.data, Instant::now());
                // Join what is already queued: fewer, larger entries.
                while let Ok(chunk) = chunks.try_recv() {
                    lines.push(chunk.source, &chunk.data, Instant::now());
                }
                for (source, data) in lines.take_ready() {
                    writer.write(source, &data).await;
                }
            }
            lines.release(true);
            for (source, data) in lines.take_ready() {
                writer.write(source, &data).await;
            }
        });
        Self {
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Closes `output` (the attempt's last sender) and writes what is queued or held, waiting
    /// at most `grace`; what is left then is dropped.
    pub async fn finish(self, output: Output, grace: Duration) {
        let dropped = output.dropped();
        drop(output);
        if dropped > 0 {
            tracing::warn!(dropped, "live log fell behind; chunks dropped from it");
        }
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!("live log not flushed in time; rest dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LogSource::{Stderr, Stdout};

    type Entries = Vec<(LogSource, Vec<u8>)>;

    /// Collects entries in memory.
    #[derive(Clone, Debug, Default)]
    struct Collect(std::sync::Arc<std::sync::Mutex<Entries>>);

    #[async_trait::async_trait]
    impl LogWriter for Collect {
        async fn write(&self, source: LogSource, data: &[u8]) {
            self.0.lock().expect("lock").push((source, data.to_vec()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_reach_the_writer_line_aligned_and_all_of_them_by_the_finish() {
        let (output, chunks) = Output::channel();
        let collect = Collect::default();
        let live = LiveLog::start(chunks, collect.clone());
        output.send(Stdout, b"hel");
        output.send(Stdout, b"lo\nwor");
        output.clone().send(Stderr, b"oops\n");
        output.send(Stdout, b"ld");
        live.finish(output, Duration::from_secs(2)).await;
        let entries = collect.0.lock().expect("lock").clone();
        assert_eq!(
            text(&entries),
            [
                (Stdout, "hello\n".into()),
                (Stdout, "wor".into()),
                (Stderr, "oops\n".into()),
                (Stdout, "ld".into())
            ]
        );
    }

    fn text(entries: &[(LogSource, Vec<u8>)]) -> Vec<(LogSource, String)> {
        entries
            .iter()
            .map(|(s, d)| (*s, String::from_utf8_lossy(d).into_owned()))
            .collect()
    }

    #[test]
    fn chunks_are_cut_at_their_last_newline() {
        let now = Instant::now();
        let mut l = Lines::default();
        l.push(Stdout, b"hello wor", now);
        assert!(l.take_ready().is_empty(), "a partial line waits");
        l.push(Stdout, b"ld\nsecond li", now);
        assert_eq!(text(&l.take_ready()), [(Stdout, "hello world\n".into())]);
        l.push(Stdout, b"ne\nthird\nfour", now);
        assert_eq!(
            text(&l.take_ready()),
            [(Stdout, "second line\nthird\n".into())]
        );
        assert_eq!(l.due(), Some(now + HOLD));
    }

    #[test]
    fn a_switch_of_stream_releases_the_partial_line() {
        let now = Instant::now();
        let mut l = Lines::default();
        l.push(Stdout, b"prompt: ", now);
        l.push(Stderr, b"warning\n", now);
        l.push(Stdout, b"a\nb\n", now);
        assert_eq!(
            text(&l.take_ready()),
            [
                (Stdout, "prompt: ".into()),
                (Stderr, "warning\n".into()),
                (Stdout, "a\nb\n".into())
            ]
        );
        assert_eq!(l.due(), None);
    }

    #[test]
    fn a_partial_line_released_by_a_switch_is_not_joined_onto_whole_lines() {
        // One batch: whole lines and a partial one, then the other stream.
        let now = Instant::now();
        let mut l = Lines::default();
        l.push(Stdout, b"bob\nhalf", now);
        l.push(Stderr, b"warn\n", now);
        l.push(Stdout, b" done\n", now);
        assert_eq!(
            text(&l.take_ready()),
            [
                (Stdout, "bob\n".into()),
                (Stdout, "half".into()),
                (Stderr, "warn\n".into()),
                (Stdout, " done\n".into())
            ]
        );
    }

    #[test]
    fn a_long_line_is_cut_at_the_cap_and_never_inside_a_character() {
        let now = Instant::now();
        let mut l = Lines::default();
        let mut long = vec![b'x'; ENTRY_BYTES - 1];
        long.extend_from_slice("é".as_bytes());
        l.push(Stdout, &long, now);
        let ready = l.take_ready();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].1.len(), ENTRY_BYTES - 1, "the split é stays held");
        l.push(Stdout, b"\n", now);
        assert_eq!(text(&l.take_ready()), [(Stdout, "é\n".into())]);
    }

    #[test]
    fn held_bytes_go_out_when_due_or_at_the_end() {
        let now = Instant::now();
        let mut l = Lines::default();
        l.push(Stdout, "progress 50% \u{2588}".as_bytes(), now);
        let due = l.due().expect("held");
        assert_eq!(due, now + HOLD);
        l.release(false);
        assert_eq!(
            text(&l.take_ready()),
            [(Stdout, "progress 50% \u{2588}".into())]
        );
        l.push(Stdout, &[0xE2, 0x96], now);
        l.release(false);
        assert!(
            l.take_ready().is_empty(),
            "half a character waits for the rest"
        );
        l.release(true);
        assert_eq!(
            l.take_ready(),
            [(Stdout, vec![0xE2, 0x96])],
            "all of it at the end"
        );
    }

    #[test]
    fn incomplete_tails() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&[b'a', 0xC3]), 1);
        assert_eq!(incomplete_utf8_tail(&[0xF0, 0x9F, 0x98]), 3);
        assert_eq!(incomplete_utf8_tail(&[0xF0, 0x9F, 0x98, 0x80]), 0);
        assert_eq!(
            incomplete_utf8_tail(&[0xFF]),
            0,
            "not UTF-8: nothing to wait for"
        );
    }
}
