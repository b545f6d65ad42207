//! A runner for queue tests, in test code only: it interprets a tiny script instead of starting
//! a sandbox, so tests can make a job sleep, print, fail, crash its worker or hit an
//! infrastructure error on demand, and record every execution to a file.
//!
//! The job's first file holds one command per line:
//! `sleep MS` · `print TEXT` · `eprint TEXT` (stderr) · `cprint TEXT` (compiler output) ·
//! `exit CODE` · `status NAME` · `infra MESSAGE` ·
//! `infra_unless_file PATH` · `permanent MESSAGE` · `crash` · `crash_on_attempt N` ·
//! `record PATH` (append `<job id> <attempt> start|end <ms>` lines around the run).

use std::io::Write as _;
use std::time::Duration;

use quayside_common::{now_ms, Captured, Status};
use quayside_worker::runner::{LogSource, Output, RunOutput, RunRequest, Runner, RunnerError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct ScriptRunner;

fn record(path: &str, req: &RunRequest, what: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: O_APPEND keeps lines from concurrent workers whole.
        let line = format!("{} {} {what} {}\n", req.job_id, req.attempt, now_ms());
        let _ = f.write_all(line.as_bytes());
    }
}

/// An infrastructure failure: an API call that failed (`transient`) or was refused.
fn infra(msg: &str, transient: bool) -> RunnerError {
    let call = msg.to_owned();
    if transient {
        RunnerError::Api { call, source: None }
    } else {
        RunnerError::ApiRejected { call, source: None }
    }
}

#[async_trait::async_trait]
impl Runner for ScriptRunner {
    fn name(&self) -> &'static str {
        "script"
    }

    async fn check(&self) -> Result<(), RunnerError> {
        Ok(())
    }

    async fn run(
        &self,
        req: &RunRequest,
        output: &Output,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let script = req.files.values().next().cloned().unwrap_or_default();
        let mut out = RunOutput::with_status(Status::Succeeded);
        out.exit_code = Some(0);
        let (mut stdout, mut stderr, mut compile) = (String::new(), String::new(), String::new());
        let mut recording: Option<String> = None;
        let result = async {
            for line in script.lines() {
                let (cmd, arg) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                match cmd {
                    "record" => {
                        record(arg, req, "start");
                        recording = Some(arg.to_owned());
                    }
                    "sleep" => {
                        let ms = arg.parse().unwrap_or(0);
                        tokio::select! {
                            _ = cancel.cancelled() => return Err(RunnerError::Cancelled),
                            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        }
                    }
                    "print" | "eprint" | "cprint" => {
                        let (text, source) = match cmd {
                            "print" => (&mut stdout, LogSource::Stdout),
                            "eprint" => (&mut stderr, LogSource::Stderr),
                            _ => (&mut compile, LogSource::Compile),
                        };
                        text.push_str(arg);
                        text.push('\n');
                        output.send(source, format!("{arg}\n").as_bytes());
                    }
                    "exit" => {
                        let code: i64 = arg.parse().unwrap_or(1);
                        out.exit_code = Some(code);
                        out.status = if code == 0 {
                            Status::Succeeded
                        } else {
                            Status::Failed
                        };
                    }
                    "status" => out.status = arg.parse().map_err(|e: String| infra(&e, false))?,
                    "infra" => return Err(infra(arg, true)),
                    "infra_unless_file" if !std::path::Path::new(arg).exists() => {
                        return Err(infra(&format!("{arg} does not exist"), true))
                    }
                    "permanent" => return Err(infra(arg, false)),
                    "crash" => std::process::abort(),
                    "crash_on_attempt" if arg.parse() == Ok(req.attempt) => std::process::abort(),
                    _ => {}
                }
            }
            Ok(())
        }
        .await;
        if let Some(path) = &recording {
            record(path, req, if result.is_ok() { "end" } else { "stopped" });
        }
        result?;
        out.stdout = Captured::from_bytes(stdout.into_bytes(), false);
        out.stderr = Captured::from_bytes(stderr.into_bytes(), false);
        out.compile_output = Captured::from_bytes(compile.into_bytes(), false);
        Ok(out)
    }
}
