//! `quayside dlq`: list, replay and purge dead letters.

use std::process::ExitCode;

use quayside_producer::Producer;

use crate::args::*;
use crate::terminal;
use crate::usage;

pub(crate) async fn dlq(
    producer: &Producer,
    action: DlqAction,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match action {
        DlqAction::List { count } => {
            let letters = producer.dlq_list(count).await?;
            if json {
                println!("{}", terminal::json(&letters)?);
            } else {
                for l in letters {
                    let shown = format!(
                        "{} job={} reason={} attempts={} error={}",
                        l.entry, l.job_id, l.reason, l.attempts, l.error
                    );
                    println!("{}", terminal::line(&shown));
                }
            }
        }
        DlqAction::Replay { entries, all } => {
            let entries = if all {
                producer
                    .dlq_list(usize::MAX >> 1)
                    .await?
                    .into_iter()
                    .map(|l| l.entry)
                    .collect()
            } else if entries.is_empty() {
                return Err(usage("name dead-letter entries to replay, or --all"));
            } else {
                entries
            };
            for e in entries {
                let outcome = producer.dlq_replay(&e).await?;
                if json {
                    println!(
                        "{}",
                        terminal::json(&serde_json::json!({ "entry": e, "result": outcome }))?
                    );
                } else {
                    println!("{}", terminal::line(&format!("{e}: {outcome:?}")));
                }
            }
        }
        DlqAction::Purge => {
            let n = producer.dlq_purge().await?;
            if json {
                println!("{}", terminal::json(&serde_json::json!({ "purged": n }))?);
            } else {
                println!("purged {n} dead letters");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
