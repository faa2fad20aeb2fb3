//! `sts-prepare-tables`: creates the dataset and tables if missing, and
//! loads a list of prefixes as `waiting`.

use std::path::Path;

use serde::Serialize;

use super::prefix_list::{overlap_error, read_prefix_file};
use super::{Invocation, Running, Tool, PREPARE};
use crate::error::{Error, Result};
use crate::options::{Options, GENERAL, LOAD, STATE};

pub const TOOL: Tool = Tool {
    name: PREPARE,
    about: "Creates the dataset and tables if they do not exist, and loads the job table with a list of prefixes.",
    after: "",
    groups: &[&GENERAL, &STATE, &LOAD],
    own: &[],
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let options = invocation.options;
        let r = prepare_tables(&options).await?;
        crate::outln!(
            "Tables '{}' and '{}' are ready; loaded {} prefixes ({} already present).",
            options.job_table,
            options.job_history_table,
            r.loaded,
            r.already_present
        );
        Ok(0)
    })
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrepareReport {
    pub loaded: usize,
    pub already_present: usize,
}

/// Creates the tables if missing, then loads the prefix file if one is named.
/// The file is read and checked in full before anything is written.
pub async fn prepare_tables(options: &Options) -> Result<PrepareReport> {
    prepare_tables_with(options, None).await
}

/// `prepare_tables`, loading `prefixes` (checked with [`prefix_list`])
/// instead of a file. Naming both is refused before anything is written.
pub async fn prepare_tables_with(
    options: &Options,
    prefixes: Option<Vec<String>>,
) -> Result<PrepareReport> {
    let prefixes = match (prefixes, options.job_prefix_source_file.as_deref()) {
        (Some(_), Some(file)) => {
            return Err(Error::Input(format!(
                "give prefixes either in memory or as job-prefix-source-file ({file}), not both"
            )))
        }
        (Some(list), None) => Some(list),
        (None, file) => file
            .map(|p| read_prefix_file(Path::new(p), options.allow_overlapping_prefixes))
            .transpose()?,
    };
    let store = crate::settings::create_store(options)?;
    store.prepare().await?;
    let mut report = PrepareReport::default();
    if let Some(prefixes) = prefixes {
        if !options.allow_overlapping_prefixes {
            // New prefixes must not overlap those already in the table either.
            let existing = store.read_jobs().await?;
            let mut all: Vec<&str> = existing.iter().map(|r| r.prefix.as_str()).collect();
            all.extend(prefixes.iter().map(String::as_str));
            overlap_error(&all).map_err(|problem| {
                Error::Input(format!(
                    "with the prefixes already in the job table, {problem}"
                ))
            })?;
        }
        let loaded = store.load_prefixes(&prefixes).await?;
        report.loaded = loaded.inserted;
        report.already_present = loaded.already_present;
    }
    Ok(report)
}
