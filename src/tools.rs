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

pub use crate::prefixes::MAX_PREFIX_BYTES;

/// Reads a prefix file: a JSON array of distinct, non-empty strings STS
/// accepts as include prefixes. Any problem names the entry.
pub fn read_prefix_file(path: &Path, allow_overlapping: bool) -> Result<Vec<String>> {
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
    prefix_list(items, &format!("prefix file {shown}"), allow_overlapping)
}

/// A list of prefixes (from a file or handed over in memory, called
/// `origin` in errors) as strings, checked with [`check_prefixes`]. A
/// problem with one entry is an [`Error::BadEntry`] naming its index.
pub fn prefix_list(
    items: Vec<serde_json::Value>,
    origin: &str,
    allow_overlapping: bool,
) -> Result<Vec<String>> {
    let mut prefixes = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let serde_json::Value::String(prefix) = item else {
            return Err(Error::BadEntry {
                origin: origin.to_string(),
                entry: index,
                problem: format!("{item} is not a string"),
            });
        };
        prefixes.push(prefix);
    }
    check_prefixes(&prefixes, allow_overlapping).map_err(|p| p.into_error(origin))?;
    Ok(prefixes)
}

/// What is wrong with a list of prefixes; `entry` when one entry is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListProblem {
    pub entry: Option<usize>,
    pub problem: String,
}

impl std::fmt::Display for ListProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entry {
            Some(index) => write!(f, "entry {index}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl ListProblem {
    fn into_error(self, origin: &str) -> Error {
        match self.entry {
            Some(entry) => Error::BadEntry {
                origin: origin.to_string(),
                entry,
                problem: self.problem,
            },
            None => Error::Input(format!("{origin}, {}", self.problem)),
        }
    }
}

/// Every prefix usable by STS, none repeated, and (unless allowed) none a
/// prefix of another: their common objects would be copied twice. The
/// problem names the entry by its position.
pub fn check_prefixes(prefixes: &[String], allow_overlapping: bool) -> Result<(), ListProblem> {
    let mut seen = HashSet::with_capacity(prefixes.len());
    for (index, prefix) in prefixes.iter().enumerate() {
        if let Some(problem) = crate::prefixes::prefix_problem(prefix) {
            return Err(ListProblem {
                entry: Some(index),
                problem: problem.to_string(),
            });
        }
        if !seen.insert(prefix.as_str()) {
            return Err(ListProblem {
                entry: Some(index),
                problem: format!("{} appears twice", crate::prefixes::shown_prefix(prefix)),
            });
        }
    }
    if !allow_overlapping {
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        overlap_error(&refs).map_err(|problem| ListProblem {
            entry: None,
            problem,
        })?;
    }
    Ok(())
}

fn overlap_error(prefixes: &[&str]) -> std::result::Result<(), String> {
    let pairs = crate::prefixes::overlapping_pairs(prefixes);
    let Some((shorter, longer)) = pairs.first() else {
        return Ok(());
    };
    Err(format!(
        "{} is a prefix of {} ({} overlapping pairs in all): the objects under {} would be \
         copied by both jobs. Remove one, or pass --allow-overlapping-prefixes",
        crate::prefixes::shown_prefix(shorter),
        crate::prefixes::shown_prefix(longer),
        pairs.len(),
        crate::prefixes::shown_prefix(longer),
    ))
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
    let store = crate::backends::create_store(options)?;
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
            ..JobFilter::default()
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
            read_prefix_file(file(r#"["a/", "b/"]"#).path(), false).unwrap(),
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
            (
                "[\"ok/\", \"a\\u0000x/\"]",
                "entry 1: \"a\\0x/\" contains a NUL byte",
            ),
            ("[\"a\\rb/\"]", "carriage return"),
            ("[\"a\\nb/\"]", "line feed"),
            ("[\"a/b/\", \"c/\", \"a/\"]", "'a/' is a prefix of 'a/b/'"),
        ] {
            let err = read_prefix_file(file(body).path(), false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
        // Overlaps are a choice the user may make.
        assert_eq!(
            read_prefix_file(file(r#"["a/", "a/b/"]"#).path(), true).unwrap(),
            ["a/", "a/b/"]
        );
    }

    proptest::proptest! {
        /// Any JSON array of any strings is loaded or refused, never a
        /// panic; what is loaded meets every rule.
        #[test]
        fn the_prefix_loader_never_panics(
            entries in proptest::collection::vec("\\PC{0,6}|[a\r\n\u{0}/]{0,4}", 0..8),
            allow in proptest::bool::ANY,
        ) {
            let body = serde_json::to_string(&entries).unwrap();
            if let Ok(loaded) = read_prefix_file(file(&body).path(), allow) {
                proptest::prop_assert_eq!(&loaded, &entries);
                for p in &loaded {
                    proptest::prop_assert!(crate::prefixes::prefix_problem(p).is_none());
                }
                if !allow {
                    let refs: Vec<&str> = loaded.iter().map(String::as_str).collect();
                    proptest::prop_assert!(crate::prefixes::overlapping_pairs(&refs).is_empty());
                }
            }
        }
    }
}
