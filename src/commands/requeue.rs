//! `sts-requeue`: puts prefixes back to `waiting` with a fresh retry count.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::prefix_list::read_prefix_file;
use super::{Invocation, Running, Tool, REQUEUE};
use crate::error::{Error, Result};
use crate::options::{Options, GENERAL, REQUEUE_PREFIXES, STATE};
use crate::settings::open_store;

pub const TOOL: Tool = Tool {
    name: REQUEUE,
    about: "Puts prefixes back to 'waiting' with a fresh retry count: every prefix in 'error', or those listed in --job-prefix-source-file.",
    after: "",
    groups: &[&GENERAL, &STATE, &REQUEUE_PREFIXES],
    own: &[],
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let r = requeue(&invocation.options).await?;
        crate::outln!("Requeued {} prefixes.", r.requeued.len());
        for prefix in r.requeued.iter().take(20) {
            crate::outln!("  {prefix:?}");
        }
        if r.requeued.len() > 20 {
            crate::outln!("  ... and {} more", r.requeued.len() - 20);
        }
        Ok(0)
    })
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RequeueReport {
    /// Prefixes put back to `waiting`.
    pub requeued: Vec<String>,
}

/// Puts prefixes back to `waiting` with a fresh retry count: those of
/// `--job-prefix-source-file` (a JSON array of prefixes, any status but in
/// flight), else every prefix in `error`. Refused whole, naming the prefix,
/// when one is unknown or its transfer is running or paused (starting it
/// again would run two operations on it). One transaction.
pub async fn requeue(options: &Options) -> Result<RequeueReport> {
    let chosen = options
        .job_prefix_source_file
        .as_deref()
        .map(|p| read_prefix_file(Path::new(p), true))
        .transpose()?;
    requeue_prefixes(options, chosen).await
}

/// [`requeue`] of the prefixes given (every prefix in `error` without).
pub async fn requeue_prefixes(
    options: &Options,
    chosen: Option<Vec<String>>,
) -> Result<RequeueReport> {
    let store = open_store(options)?;
    let rows = store.read_jobs().await?;
    let by_prefix: HashMap<&str, &crate::model::PrefixJob> =
        rows.iter().map(|r| (r.prefix.as_str(), r)).collect();
    let targets: Vec<&crate::model::PrefixJob> = match &chosen {
        None => rows
            .iter()
            .filter(|r| r.status == crate::model::Status::Error)
            .collect(),
        Some(prefixes) => {
            let mut targets = Vec::with_capacity(prefixes.len());
            for prefix in prefixes {
                let shown = crate::prefixes::shown_prefix(prefix);
                let row = by_prefix.get(prefix.as_str()).ok_or_else(|| {
                    Error::Input(format!(
                        "{shown} is not in job table '{}'",
                        options.job_table
                    ))
                })?;
                if matches!(
                    row.status,
                    crate::model::Status::Running | crate::model::Status::Paused
                ) {
                    return Err(Error::Input(format!(
                        "{shown} is {} (its transfer {}): wait for it to end, or cancel it first",
                        row.status.as_str(),
                        row.job_name.as_deref().unwrap_or("is starting")
                    )));
                }
                targets.push(*row);
            }
            targets
        }
    };
    let now = chrono::Utc::now();
    let mut changes = crate::model::ChangeSet::default();
    for row in &targets {
        changes.requeue(&row.prefix, now);
    }
    store.apply(&changes).await?;
    Ok(RequeueReport {
        requeued: targets.iter().map(|r| r.prefix.clone()).collect(),
    })
}
