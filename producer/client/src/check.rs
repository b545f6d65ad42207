//! The record check behind `quayside check [--repair]`: finds jobs that can no longer reach
//! their next step (a queued job whose stream entry was trimmed, a running one whose entry was
//! deleted or whose group was lost, a retry missing from the delayed set) and ended jobs whose
//! keys would never expire, and with `repair` puts each right. Every record is checked and
//! repaired inside one script call (`repair.lua`), so it is safe to run against a live fleet.

use std::collections::BTreeMap;

use quayside_common::protocol::repair::{Problem, Repair};
use serde::Serialize;

use crate::{Error, Producer};

/// Record keys read per `SCAN` round trip, and checked per script call.
const PAGE: usize = 500;
/// Findings listed one by one in a report (all are counted).
const LISTED: usize = 1_000;

/// One record with a problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: String,
    pub problem: Problem,
}

/// What a check found (and, with repair, put right).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Job records examined.
    pub records: u64,
    /// Whether the problems found were repaired.
    pub repaired: bool,
    /// How many records had each problem.
    pub counts: BTreeMap<String, u64>,
    /// The first records with a problem, in the order found.
    pub findings: Vec<Finding>,
}

impl Producer {
    /// Checks every job record of the queue (see [`CheckReport`]); with `repair`, queues again
    /// the jobs that could not reach their next step, reschedules lost retries, creates
    /// missing consumer groups (from the start of the stream) and sets missing TTLs.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn check(&self, repair: bool) -> Result<CheckReport, Error> {
        let mut report = CheckReport {
            repaired: repair,
            ..CheckReport::default()
        };
        let pattern = self.keys.job_pattern();
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(PAGE)
                .clone();
            // SCAN names no key: on a cluster it must go to the node of the queue's slot.
            let (next, keys): (u64, Vec<String>) = self
                .conn()
                .await?
                .query_at(&pattern, &scan)
                .await
                .map_err(|e| self.redis_error("SCAN", e))?;
            let ids: Vec<&str> = keys.iter().filter_map(|k| self.keys.job_id_of(k)).collect();
            report.records += ids.len() as u64;
            if !ids.is_empty() {
                self.check_records(&ids, repair, &mut report).await?;
            }
            if next == 0 {
                return Ok(report);
            }
            cursor = next;
        }
    }

    async fn check_records(
        &self,
        ids: &[&str],
        repair: bool,
        report: &mut CheckReport,
    ) -> Result<(), Error> {
        let call = Repair {
            repair,
            default_ttl_s: self.queue.default_result_ttl_s,
            ids,
        }
        .call(&self.keys);
        for (id, problem) in self.run(&call).await? {
            *report
                .counts
                .entry(problem.as_str().to_owned())
                .or_default() += 1;
            if report.findings.len() < LISTED {
                report.findings.push(Finding { id, problem });
            }
        }
        Ok(())
    }
}
