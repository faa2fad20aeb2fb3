//! SPEC 5: from the job table and the listed operations, decide what changes.
//! Pure: no I/O, so every rule is unit-tested here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::model::{HistoryRow, PrefixJob, Status, TransferOperation};

pub use crate::model::{ChangeSet, JobUpdate};

/// An operation whose status this build does not know (SPEC 3: kept, logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus {
    pub prefix: String,
    pub operation: String,
    pub status: String,
}

#[derive(Debug, Default)]
pub struct SyncOutcome<'a> {
    pub changes: ChangeSet,
    /// The latest operation of every prefix of the table that has one.
    pub latest: HashMap<String, &'a TransferOperation>,
    /// The operation of each history row of `changes` (same order).
    pub history_ops: Vec<&'a TransferOperation>,
    pub unknown: Vec<UnknownStatus>,
}

/// Is `candidate` later than `current`? Compare end times; when either has
/// none, compare start times (SPEC 5.2). Ties go to the larger name so the
/// choice does not depend on listing order.
fn is_later(candidate: &TransferOperation, current: &TransferOperation) -> bool {
    let by_time = match (candidate.end_time, current.end_time) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => candidate.start_time.cmp(&current.start_time),
    };
    by_time
        .then_with(|| candidate.name.cmp(&current.name))
        .is_gt()
}

/// The latest operation per include prefix among this migration's operations
/// (matching buckets, job not deleted).
pub fn latest_operations<'a>(
    operations: &'a [TransferOperation],
    deleted_jobs: &HashSet<String>,
    source_bucket: &str,
    destination_bucket: &str,
) -> HashMap<String, &'a TransferOperation> {
    let mut latest: HashMap<String, &TransferOperation> = HashMap::new();
    let ours = operations.iter().filter(|op| {
        op.transfer_spec.source_bucket() == Some(source_bucket)
            && op.transfer_spec.sink_bucket() == Some(destination_bucket)
            && !deleted_jobs.contains(&op.transfer_job_name)
    });
    for op in ours {
        for prefix in op.transfer_spec.include_prefixes() {
            match latest.get(prefix) {
                Some(current) if !is_later(op, current) => {}
                _ => {
                    latest.insert(prefix.clone(), op);
                }
            }
        }
    }
    latest
}

/// A row the manager just started holds the job's name until the new
/// operation is listed; operations that began before that must not
/// overwrite it (they are the previous attempt).
/// Likewise a prefix queued again (`waiting` with no job name: requeued,
/// or loaded) takes no operation that began before it was queued: those are
/// of its earlier life.
fn predates_pending_start(row: &PrefixJob, op: &TransferOperation) -> bool {
    let awaiting_operation = row.status == Status::Running
        && row
            .job_name
            .as_deref()
            .is_some_and(|n| n.starts_with("transferJobs/"));
    let queued = row.status == Status::Waiting && row.job_name.is_none();
    (awaiting_operation || queued) && op.start_time.is_none_or(|start| start < row.last_updated)
}

pub fn sync<'a>(
    rows: &[PrefixJob],
    operations: &'a [TransferOperation],
    deleted_jobs: &HashSet<String>,
    source_bucket: &str,
    destination_bucket: &str,
    now: DateTime<Utc>,
) -> SyncOutcome<'a> {
    let mut latest = latest_operations(operations, deleted_jobs, source_bucket, destination_bucket);
    let mut outcome = SyncOutcome::default();
    let known: HashSet<&str> = rows.iter().map(|r| r.prefix.as_str()).collect();
    latest.retain(|prefix, _| known.contains(prefix.as_str()));

    for row in rows {
        let Some(op) = latest.get(&row.prefix).copied() else {
            continue;
        };
        if predates_pending_start(row, op) {
            latest.remove(&row.prefix);
            continue;
        }
        let mapped = op.status.table_status();
        if mapped.is_none() {
            outcome.unknown.push(UnknownStatus {
                prefix: row.prefix.clone(),
                operation: op.name.clone(),
                status: op.status.name().to_string(),
            });
        }
        let status = mapped.unwrap_or(row.status);
        let status_changed = status != row.status;
        let name_changed = row.job_name.as_deref() != Some(op.name.as_str());
        if status_changed || name_changed {
            outcome.changes.updates.push(JobUpdate {
                prefix: row.prefix.clone(),
                status,
                job_name: Some(op.name.clone()),
                last_updated: now,
            });
        }
        if status_changed || status == Status::Running {
            outcome.history_ops.push(op);
            outcome.changes.history.push(HistoryRow {
                prefix: row.prefix.clone(),
                status,
                job_name: Some(op.name.clone()),
                // Filled by `fill_results` when the row is written, so a
                // big change set holds the operations' JSON a chunk at a time.
                operation_results: None,
                timestamp: now,
            });
        }
    }
    outcome.latest = latest;
    outcome
}

/// The full TransferOperation JSON of each history row (SPEC 2), for the
/// rows `history[range]` whose operations are `ops[range]`.
pub fn fill_results(history: &mut [HistoryRow], ops: &[&TransferOperation]) {
    for (row, op) in history.iter_mut().zip(ops) {
        row.operation_results = serde_json::to_string(op).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GcsData, ObjectConditions, OperationStatus, TransferSpec};
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn op(
        name: &str,
        prefix: &str,
        status: &str,
        start: i64,
        end: Option<i64>,
    ) -> TransferOperation {
        TransferOperation {
            name: name.into(),
            project_id: "p".into(),
            transfer_spec: TransferSpec {
                gcs_data_source: Some(GcsData {
                    bucket_name: "src".into(),
                    path: String::new(),
                }),
                gcs_data_sink: Some(GcsData {
                    bucket_name: "dst".into(),
                    path: String::new(),
                }),
                object_conditions: Some(ObjectConditions {
                    include_prefixes: vec![prefix.into()],
                }),
                transfer_options: None,
            },
            start_time: Some(at(start)),
            end_time: end.map(at),
            status: OperationStatus::from_name(status),
            counters: Default::default(),
            error_breakdowns: vec![],
            transfer_job_name: format!("transferJobs/{name}"),
        }
    }

    fn row(prefix: &str, status: Status, job_name: Option<&str>) -> PrefixJob {
        PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: job_name.map(Into::into),
            last_updated: at(0),
        }
    }

    fn run<'a>(rows: &[PrefixJob], ops: &'a [TransferOperation]) -> SyncOutcome<'a> {
        sync(rows, ops, &HashSet::new(), "src", "dst", at(1000))
    }

    #[test]
    fn latest_by_end_time_then_start_time() {
        let ops = [
            op("old", "a/", "FAILED", 10, Some(100)),
            op("new", "a/", "SUCCESS", 5, Some(200)),
            op("running", "b/", "IN_PROGRESS", 300, None),
            op("finished", "b/", "SUCCESS", 100, Some(400)),
        ];
        let latest = latest_operations(&ops, &HashSet::new(), "src", "dst");
        assert_eq!(latest["a/"].name, "new", "both ended: later end wins");
        assert_eq!(
            latest["b/"].name, "running",
            "one has no end: later start wins"
        );
    }

    #[test]
    fn other_buckets_and_deleted_jobs_are_ignored() {
        let mut foreign = op("foreign", "a/", "FAILED", 50, None);
        foreign.transfer_spec.gcs_data_sink = Some(GcsData {
            bucket_name: "elsewhere".into(),
            path: String::new(),
        });
        let deleted = op("deleted", "a/", "FAILED", 60, None);
        let ops = [op("mine", "a/", "SUCCESS", 10, Some(20)), foreign, deleted];
        let gone = HashSet::from(["transferJobs/deleted".to_string()]);
        let latest = latest_operations(&ops, &gone, "src", "dst");
        assert_eq!(latest["a/"].name, "mine");
    }

    #[test]
    fn status_change_updates_and_records_history() {
        let rows = [row("a/", Status::Running, Some("op-a"))];
        let ops = [op("op-a", "a/", "SUCCESS", 10, Some(20))];
        let out = run(&rows, &ops);
        assert_eq!(out.changes.updates.len(), 1);
        assert_eq!(out.changes.updates[0].status, Status::Done);
        assert_eq!(out.changes.history.len(), 1);
        let results: serde_json::Value = {
            let mut history = out.changes.history.clone();
            fill_results(&mut history, &out.history_ops);
            serde_json::from_str::<serde_json::Value>(
                history[0].operation_results.as_deref().unwrap(),
            )
        }
        .unwrap();
        assert_eq!(results["name"], "op-a");
    }

    #[test]
    fn running_prefixes_get_progress_history_without_update() {
        let rows = [row("a/", Status::Running, Some("op-a"))];
        let ops = [op("op-a", "a/", "IN_PROGRESS", 10, None)];
        let out = run(&rows, &ops);
        assert!(out.changes.updates.is_empty());
        assert_eq!(out.changes.history.len(), 1);
        assert_eq!(out.changes.history[0].status, Status::Running);
    }

    #[test]
    fn unchanged_finished_prefix_writes_nothing() {
        let rows = [row("a/", Status::Done, Some("op-a"))];
        let ops = [op("op-a", "a/", "SUCCESS", 10, Some(20))];
        assert!(run(&rows, &ops).changes.is_empty());
    }

    #[test]
    fn new_operation_name_is_recorded() {
        let rows = [row("a/", Status::Done, Some("old"))];
        let ops = [op("op-a", "a/", "SUCCESS", 10, Some(20))];
        let out = run(&rows, &ops);
        assert_eq!(out.changes.updates[0].job_name.as_deref(), Some("op-a"));
        assert!(out.changes.history.is_empty(), "status did not change");
    }

    #[test]
    fn aborted_goes_back_to_waiting_and_queued_counts_as_running() {
        let rows = [
            row("a/", Status::Running, Some("x")),
            row("b/", Status::Waiting, None),
        ];
        let ops = [
            op("x", "a/", "ABORTED", 10, Some(20)),
            op("y", "b/", "QUEUED", 10, None),
        ];
        let out = run(&rows, &ops);
        let status_of = |p: &str| {
            out.changes
                .updates
                .iter()
                .find(|u| u.prefix == p)
                .unwrap()
                .status
        };
        assert_eq!(status_of("a/"), Status::Waiting);
        assert_eq!(status_of("b/"), Status::Running);
    }

    #[test]
    fn unknown_status_keeps_the_prefix_status_and_is_reported() {
        let rows = [row("a/", Status::Running, Some("x"))];
        let ops = [op("x", "a/", "TELEPORTING", 10, None)];
        let out = run(&rows, &ops);
        assert!(out.changes.updates.is_empty());
        assert_eq!(out.unknown[0].status, "TELEPORTING");
        assert_eq!(out.changes.history[0].status, Status::Running);
    }

    #[test]
    fn a_pending_start_ignores_the_previous_attempt() {
        let mut pending = row("a/", Status::Running, Some("transferJobs/job-a"));
        pending.last_updated = at(500);
        let ops = [op("failed-before", "a/", "FAILED", 100, Some(200))];
        let out = run(&[pending.clone()], &ops);
        assert!(out.changes.is_empty());
        assert!(out.latest.is_empty());
        let ops = [op("fresh", "a/", "IN_PROGRESS", 600, None)];
        let out = run(&[pending], &ops);
        assert_eq!(out.changes.updates[0].job_name.as_deref(), Some("fresh"));
    }

    #[test]
    fn prefixes_not_in_the_table_are_left_alone() {
        let ops = [op("x", "zzz/", "SUCCESS", 10, Some(20))];
        let out = run(&[row("a/", Status::Waiting, None)], &ops);
        assert!(out.changes.is_empty() && out.latest.is_empty());
    }
}
