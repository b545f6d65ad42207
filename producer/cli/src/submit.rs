//! `quayside submit`: one job from flags or a spec file, optionally waited for.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use quayside_common::wire::decode_spec;
use quayside_common::JobSpec;
use quayside_producer::Producer;

use crate::args::*;
use crate::job_flags::collect;
use crate::print::*;
use crate::terminal;
use crate::{parse_id, usage};

pub(crate) async fn submit(
    producer: &Producer,
    a: SubmitArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let spec = match &a.spec {
        Some(path) => {
            let mut raw = Vec::new();
            if path == Path::new("-") {
                std::io::stdin().read_to_end(&mut raw)?;
            } else {
                raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            }
            decode_spec(&raw).map_err(|e| usage(e.to_string()))?
        }
        None => spec_from_flags(&a)?,
    };
    let enqueued = producer.enqueue(&spec).await?;
    if !a.wait {
        if json {
            println!("{}", terminal::json(&enqueued)?);
        } else if enqueued.created {
            println!("{}", enqueued.id);
        } else {
            let state = enqueued
                .state
                .map_or("ended, record expired", |s| s.as_str());
            println!("{} (already exists: {state})", enqueued.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = producer
        .wait(&spec.id, a.timeout.map(Duration::from_secs_f64))
        .await?;
    Ok(report(&r, json))
}

pub(crate) fn spec_from_flags(a: &SubmitArgs) -> anyhow::Result<JobSpec> {
    if a.job.language.is_none() {
        return Err(usage("--language is required (or use --spec)"));
    }
    if a.files.is_empty() {
        return Err(usage("give at least one source file or folder"));
    }
    let mut spec = a.job.template()?;
    for path in &a.files {
        collect(path, path, &mut spec.files)?;
    }
    if let Some(id) = &a.id {
        spec.id = parse_id(id)?;
    }
    spec.batch = a.batch.clone();
    Ok(spec)
}
