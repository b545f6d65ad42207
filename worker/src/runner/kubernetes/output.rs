//! Splits the pod's single log stream back into compiler output, stdout and stderr.
//!
//! The pod log interleaves nothing: the wrapper sends the build step's output, then
//! `<nonce>:<status>`, then the program's stdout, then `<end>:<status>`, then the program's
//! stderr (kept in a file until the program ends). Each part is capped like the Docker
//! runner's streams.

use quayside_common::Captured;

use crate::logs::LogSource;
use crate::runner::sandbox::protocol::{PhaseMarker, Scan};
use crate::runner::sandbox::{CappedOutput, LiveLog};

#[derive(Debug)]
enum Phase {
    Build(PhaseMarker),
    Program(PhaseMarker),
    Stderr,
}

/// What one chunk of log changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing that changes timing.
    Nothing,
    /// The build step ended: the run's wall time starts now.
    BuildEnded,
    /// A stream passed its cap: stop the pod.
    OutputExceeded,
}

/// The three capped streams of one attempt and where in the log the parser is.
#[derive(Debug)]
pub struct Parsed {
    phase: Phase,
    end_nonce: String,
    pub compile: CappedOutput,
    pub stdout: CappedOutput,
    pub stderr: CappedOutput,
    /// The build step's status from the first marker.
    pub build_status: Option<i64>,
    /// The program's status from the end marker.
    pub run_status: Option<i64>,
    /// Wall time of the build step, from the log's start to the first marker.
    pub compile_ms: u64,
    /// Wall time of the program, from the first marker to the end (so far).
    pub run_ms: u64,
}

impl Parsed {
    pub fn new(nonce: &str, end_nonce: &str, cap: u64) -> Self {
        Self {
            phase: Phase::Build(PhaseMarker::new(nonce)),
            end_nonce: end_nonce.to_owned(),
            compile: CappedOutput::new(cap),
            stdout: CappedOutput::new(cap),
            stderr: CappedOutput::new(cap),
            build_status: None,
            run_status: None,
            compile_ms: 0,
            run_ms: 0,
        }
    }

    /// Feeds one chunk of the log, forwarding what is kept to the live log.
    pub fn feed(&mut self, chunk: &[u8], live: &mut LiveLog) -> Progress {
        let mut progress = Progress::Nothing;
        let mut rest = chunk.to_vec();
        loop {
            match &mut self.phase {
                Phase::Build(marker) => match marker.feed(&rest) {
                    Scan::Build(bytes) => {
                        live.send(LogSource::Compile, self.compile.push(&bytes));
                        break;
                    }
                    Scan::Ended {
                        build,
                        status,
                        program,
                    } => {
                        live.send(LogSource::Compile, self.compile.push(&build));
                        self.build_status = Some(status);
                        self.phase = Phase::Program(PhaseMarker::new(&self.end_nonce));
                        progress = Progress::BuildEnded;
                        rest = program;
                    }
                },
                Phase::Program(marker) => match marker.feed(&rest) {
                    Scan::Build(bytes) => {
                        live.send(LogSource::Stdout, self.stdout.push(&bytes));
                        break;
                    }
                    Scan::Ended {
                        build,
                        status,
                        program,
                    } => {
                        live.send(LogSource::Stdout, self.stdout.push(&build));
                        self.run_status = Some(status);
                        self.phase = Phase::Stderr;
                        rest = program;
                    }
                },
                Phase::Stderr => {
                    live.send(LogSource::Stderr, self.stderr.push(&rest));
                    break;
                }
            }
        }
        if self.compile.exceeded() || self.stdout.exceeded() || self.stderr.exceeded() {
            return Progress::OutputExceeded;
        }
        progress
    }

    /// Ends the stream: what a marker parser held back is output after all.
    pub fn flush(&mut self, live: &mut LiveLog) {
        match &mut self.phase {
            Phase::Build(marker) => {
                let held = marker.take_held();
                live.send(LogSource::Compile, self.compile.push(&held));
            }
            Phase::Program(marker) => {
                let held = marker.take_held();
                live.send(LogSource::Stdout, self.stdout.push(&held));
            }
            Phase::Stderr => {}
        }
    }

    /// The three streams, for the result.
    pub fn into_captured(self) -> (Captured, Captured, Captured) {
        (
            self.compile.into_captured(),
            self.stdout.into_captured(),
            self.stderr.into_captured(),
        )
    }
}
