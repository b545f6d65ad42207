//! `--manifest FILE`: one full job spec per line, checked before anything is enqueued.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use quayside_common::job::PROTOCOL_VERSION;
use quayside_common::wire::decode_spec;
use quayside_common::JobId;
use quayside_producer::batch_member_id as job_id;

use super::{Planned, NAME_LABEL};
use crate::usage;

/// One full job spec per non-blank line (`v`, `id` and `batch` may be left out). Every line is
/// checked before anything is enqueued.
///
/// # Errors
/// The first bad line, by number; two lines with one id.
pub fn from_manifest(path: &Path, batch: &str) -> anyhow::Result<Vec<Planned>> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
    }
    let source = path.display();
    let mut planned = Vec::new();
    let mut lines_of: HashMap<JobId, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| usage(format!("{source}:{n}: {what} (nothing was enqueued)"));
        let mut value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| bad("expected a JSON object (one job spec)".into()))?;
        obj.entry("v").or_insert(PROTOCOL_VERSION.into());
        match obj.get("batch").and_then(|b| b.as_str()) {
            Some(b) if b != batch => {
                return Err(bad(format!(
                    "batch {b:?} differs from the batch id {batch}"
                )))
            }
            _ => {
                obj.insert("batch".into(), batch.into());
            }
        }
        let label = obj
            .get("labels")
            .and_then(|l| l.get(NAME_LABEL))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        // Without an id, the job's id comes from its name and content, once it is decoded.
        let derived = (!obj.contains_key("id")).then(|| {
            obj.insert("id".into(), JobId::generate().as_str().into());
            label.clone().unwrap_or_else(|| format!("line {n}"))
        });
        let mut spec = decode_spec(value.to_string().as_bytes()).map_err(|e| bad(e.to_string()))?;
        if let Some(key) = derived {
            spec.id = job_id(batch, &key, &spec);
        }
        if let Some(first) = lines_of.insert(spec.id.clone(), n) {
            return Err(bad(format!("job id {} is also on line {first}", spec.id)));
        }
        let name = label.unwrap_or_else(|| spec.id.to_string());
        planned.push(Planned { name, spec });
    }
    if planned.is_empty() {
        return Err(usage(format!("manifest {source} has no jobs")));
    }
    Ok(planned)
}
