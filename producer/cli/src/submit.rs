//! `quayside submit`: one job from flags or a spec file, optionally waited for.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use quayside_common::config::LanguageConfig;
use quayside_common::wire::decode_spec;
use quayside_common::JobSpec;
use quayside_producer::Producer;

use crate::args::*;
use crate::job_flags::{check_has_source, collect};
use crate::print::*;
use crate::terminal;
use crate::{parse_id, usage};

pub(crate) async fn submit(
    producer: &Producer,
    languages: &BTreeMap<String, LanguageConfig>,
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
        None => spec_from_flags(&a, languages)?,
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

pub(crate) fn spec_from_flags(
    a: &SubmitArgs,
    languages: &BTreeMap<String, LanguageConfig>,
) -> anyhow::Result<JobSpec> {
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
    let names: Vec<String> = a.files.iter().map(|p| p.display().to_string()).collect();
    check_has_source(&names.join(" "), &spec, languages)?;
    if let Some(id) = &a.id {
        spec.id = parse_id(id)?;
    }
    spec.batch = a.batch.clone();
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use quayside_common::config::default_languages;

    fn spec(args: &[&str]) -> anyhow::Result<JobSpec> {
        let cli = Cli::try_parse_from([&["quayside", "submit"], args].concat()).expect("parses");
        let Command::Submit(a) = cli.command else {
            panic!("not submit")
        };
        spec_from_flags(&a, &default_languages())
    }

    #[test]
    fn a_job_without_a_source_file_of_its_language_is_refused_before_enqueue() {
        let dir = std::env::temp_dir().join(format!("quayside-submit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (header, main) = (dir.join("util.h"), dir.join("main.c"));
        std::fs::write(&header, "int f(void);").expect("write");
        std::fs::write(&main, "int main(void){return 0;}").expect("write");
        let (h, m) = (header.to_string_lossy(), main.to_string_lossy());
        let e = spec(&["--language", "c", &h]).expect_err("only a header");
        assert!(e.to_string().contains("a c job needs a .c file"), "{e}");
        let ok = spec(&["--language", "c", &m, &h]).expect("a source and its header");
        assert_eq!(ok.files.len(), 2);
        // A language only the worker's table knows is left to the worker.
        assert!(spec(&["--language", "script", &h]).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
