//! What one iteration reports: counts per status, progress, failures with
//! their retry state, whether the migration is done; the heartbeat's
//! points and the cycle's log line.

use std::collections::BTreeMap;

use chrono::Utc;

use super::failures::{Failure, Retry};
use super::{CycleSummary, Manager, Progress, MAX_LISTED_FAILURES};
use crate::model::{PrefixJob, Status};

pub fn count_statuses(rows: &[PrefixJob]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for row in rows {
        *counts.entry(row.status.as_str().to_string()).or_default() += 1;
    }
    counts
}

pub(super) fn progress_of<'a>(
    counters: impl Iterator<Item = &'a crate::model::Counters>,
) -> Progress {
    let mut c = crate::model::Counters::default();
    for each in counters {
        c += each;
    }
    Progress {
        objects_found: c.objects_found_from_source,
        objects_copied: c.objects_copied_to_sink,
        objects_skipped: c.objects_from_source_skipped_by_sync,
        objects_failed: c.objects_from_source_failed,
        bytes_found: c.bytes_found_from_source,
        bytes_copied: c.bytes_copied_to_sink,
        bytes_skipped: c.bytes_from_source_skipped_by_sync,
        bytes_failed: c.bytes_from_source_failed,
    }
}

/// SPEC 8: one point per status (0 included) plus the stalled count.
pub fn heartbeat_points(counts: &BTreeMap<String, usize>, stalled: usize) -> Vec<(String, i64)> {
    let mut points: Vec<(String, i64)> = counts
        .iter()
        .map(|(status, n)| {
            (
                format!("custom.googleapis.com/sts_job_manager/status/{status}"),
                *n as i64,
            )
        })
        .collect();
    points.push((
        "custom.googleapis.com/sts_job_manager/metrics/stalled".into(),
        stalled as i64,
    ));
    points
}

pub(super) fn log_summary(summary: &CycleSummary) {
    let counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    // The failed prefixes with their codes (the first few; all are in the
    // history table and the Python summary's `failed`).
    let mut failed: Vec<String> = summary.failed.iter().take(5).map(Failure::brief).collect();
    if summary.failed_count > failed.len() {
        failed.push(format!("and {} more", summary.failed_count - failed.len()));
    }
    tracing::info!(
        started = summary.started.len(),
        resumed = summary.resumed.len(),
        stalled = summary.stalled.len(),
        objects_copied = summary.progress.objects_copied,
        bytes_copied = summary.progress.bytes_copied,
        "prefixes: {}{}",
        counts.join(" "),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(", "))
        }
    );
}

impl Manager {
    pub(super) fn finish_summary(&self, summary: &mut CycleSummary) {
        summary.counts = self.counts.by_name();
        summary.stalled = self.stalled.clone();
        summary.progress = self.progress.clone();
        let now = Utc::now();
        let mut retryable = 0;
        let mut failed = Vec::new();
        for row in self.rows.iter().filter(|r| r.status == Status::Error) {
            let retry = self.retry_of(&row.prefix, row.last_updated, now);
            if retry == Retry::Exhausted {
                summary.failed_final += 1;
            } else {
                retryable += 1;
            }
            if failed.len() < MAX_LISTED_FAILURES {
                let mut failure =
                    self.failures
                        .get(&row.prefix)
                        .cloned()
                        .unwrap_or_else(|| Failure {
                            prefix: row.prefix.clone(),
                            operation: row.job_name.clone(),
                            codes: vec![],
                            attempts: 0,
                            exhausted: false,
                        });
                failure.attempts = self.attempts.get(&row.prefix).copied().unwrap_or(1);
                failure.exhausted = retry == Retry::Exhausted;
                failed.push(failure);
            }
        }
        summary.failed = failed;
        summary.failed_count = summary.counts["error"];
        summary.halted = self.halted.clone();
        let c = &summary.counts;
        let pending = c["waiting"] + c["paused"] + retryable;
        // Failed objects still awaited from Cloud Logging hold the end
        // (for at most failed_objects::LOG_PATIENCE).
        summary.failed_objects_awaited = self.awaiting_failed_objects();
        summary.done = pending == 0 && c["running"] == 0 && summary.failed_objects_awaited == 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn heartbeat_has_every_status_and_stalled() {
        let counts = count_statuses(&[]);
        let points = heartbeat_points(&counts, 2);
        assert_eq!(points.len(), 6);
        assert!(points.contains(&(
            "custom.googleapis.com/sts_job_manager/status/waiting".into(),
            0
        )));
        assert_eq!(
            points.last().unwrap(),
            &(
                "custom.googleapis.com/sts_job_manager/metrics/stalled".to_string(),
                2
            )
        );
    }
}
