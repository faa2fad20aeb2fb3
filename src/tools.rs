//! The three helper tools (SPEC 9) as library calls, shared by the command
//! line and the Python API.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::backends::{open_store, open_transfer, project_id};
use crate::error::{Error, Result};
use crate::manager::JOB_NAME_PATTERN;
use crate::model::{JobStatus, OperationStatus};
use crate::options::Options;
use crate::transfer::local::Mode;
use crate::transfer::{JobFilter, OperationFilter};

/// STS refuses include prefixes longer than this.
pub const MAX_PREFIX_BYTES: usize = 1024;

/// Reads a prefix file: a JSON array of distinct, non-empty strings STS
/// accepts as include prefixes. Any problem names the entry.
pub fn read_prefix_file(path: &Path) -> Result<Vec<String>> {
    let shown = path.display();
    let body = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("prefix file {shown}: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| Error::Input(format!("prefix file {shown} is not valid JSON: {e}")))?;
    let serde_json::Value::Array(items) = value else {
        return Err(Error::Input(format!(
            "prefix file {shown} must hold a JSON array of strings"
        )));
    };
    let mut seen = HashSet::new();
    let mut prefixes = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let problem =
            |what: String| Error::Input(format!("prefix file {shown}, entry {index}: {what}"));
        let serde_json::Value::String(prefix) = item else {
            return Err(problem(format!("{item} is not a string")));
        };
        if prefix.is_empty() {
            return Err(problem(
                "empty prefix (it would copy the whole bucket)".into(),
            ));
        }
        if prefix.starts_with('/') {
            return Err(problem(format!(
                "'{prefix}' starts with '/' (STS refuses it)"
            )));
        }
        if prefix.len() > MAX_PREFIX_BYTES {
            return Err(problem(format!(
                "prefix is {} bytes; STS allows at most {MAX_PREFIX_BYTES}",
                prefix.len()
            )));
        }
        if !seen.insert(prefix.clone()) {
            return Err(problem(format!("'{prefix}' appears twice")));
        }
        prefixes.push(prefix);
    }
    Ok(prefixes)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrepareReport {
    pub loaded: usize,
    pub already_present: usize,
}

/// Creates the tables if missing, then loads the prefix file if one is named.
/// The file is read and checked in full before anything is written.
pub async fn prepare_tables(options: &Options) -> Result<PrepareReport> {
    let prefixes = options
        .job_prefix_source_file
        .as_deref()
        .map(|p| read_prefix_file(Path::new(p)))
        .transpose()?;
    let store = open_store(options)?;
    store.prepare().await?;
    let mut report = PrepareReport::default();
    if let Some(prefixes) = prefixes {
        let loaded = store.load_prefixes(&prefixes).await?;
        report.loaded = loaded.inserted;
        report.already_present = loaded.already_present;
    }
    Ok(report)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolReport {
    /// Operations paused, or jobs deleted.
    pub count: usize,
    pub errors: Vec<String>,
}

/// Pauses every running (or queued) operation of the project.
pub async fn pause_all_jobs(options: &Options) -> Result<ToolReport> {
    let transfer = open_transfer(options, Mode::Control)?;
    let project_id = project_id(options)?;
    let running = transfer
        .list_operations(&OperationFilter {
            project_id,
            statuses: vec![OperationStatus::InProgress, OperationStatus::Queued],
            ..OperationFilter::default()
        })
        .await?;
    let mut report = ToolReport::default();
    for op in running {
        match transfer.pause_operation(&op.name).await {
            Ok(()) => {
                tracing::info!("paused {}", op.name);
                report.count += 1;
            }
            Err(e) => {
                tracing::warn!("could not pause {}: {e}", op.name);
                report.errors.push(format!("{}: {e}", op.name));
            }
        }
    }
    Ok(report)
}

/// Deletes every one-time job (start date == end date) of this tool whose
/// operations all succeeded; any other job is left alone.
pub async fn remove_successful_one_time_jobs(options: &Options) -> Result<ToolReport> {
    let transfer = open_transfer(options, Mode::Control)?;
    let project_id = project_id(options)?;
    let jobs = transfer
        .list_jobs(&JobFilter {
            project_id: project_id.clone(),
            statuses: vec![JobStatus::Enabled, JobStatus::Disabled],
        })
        .await?;
    let operations = transfer
        .list_operations(&OperationFilter {
            project_id: project_id.clone(),
            job_name_pattern: Some(JOB_NAME_PATTERN.into()),
            ..OperationFilter::default()
        })
        .await?;
    let mut statuses: HashMap<&str, Vec<&OperationStatus>> = HashMap::new();
    for op in &operations {
        statuses
            .entry(op.transfer_job_name.as_str())
            .or_default()
            .push(&op.status);
    }
    let mut report = ToolReport::default();
    for job in &jobs {
        let one_time = job.schedule.as_ref().is_some_and(|s| s.is_one_time());
        let all_succeeded = statuses
            .get(job.name.as_str())
            .is_some_and(|s| s.iter().all(|status| **status == OperationStatus::Success));
        if !one_time || !all_succeeded {
            continue;
        }
        match transfer.delete_job(&job.name, &project_id).await {
            Ok(()) => {
                tracing::info!("deleted {}", job.name);
                report.count += 1;
            }
            Err(e) => report.errors.push(format!("{}: {e}", job.name)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    #[test]
    fn prefix_files_are_checked_entry_by_entry() {
        assert_eq!(
            read_prefix_file(file(r#"["a/", "b/"]"#).path()).unwrap(),
            ["a/", "b/"]
        );
        let long = format!("[\"{}\"]", "x".repeat(1025));
        for (body, expected) in [
            ("{\"a\": 1}", "JSON array"),
            ("[\"a/\", 3]", "entry 1"),
            ("[\"a/\", \"\"]", "empty prefix"),
            ("[\"a/\", \"a/\"]", "appears twice"),
            ("[\"/abs\"]", "starts with '/'"),
            (long.as_str(), "at most 1024"),
            ("[\"a/\"", "not valid JSON"),
        ] {
            let err = read_prefix_file(file(body).path()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
