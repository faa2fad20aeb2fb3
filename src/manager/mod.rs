//! The manager cycle (SPEC 4): sync state, start jobs, publish the heartbeat.
//! It talks to a `StateStore` and a `TransferService` and never knows which.

mod lease;
pub mod ramp;
pub mod stall;
pub mod sync;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::model::{
    Date, GcsData, HistoryRow, JobStatus, ObjectConditions, PrefixJob, Schedule, Status,
};
use crate::model::{OperationStatus, TransferJob, TransferOptions, TransferSpec};
use crate::options::Options;
use crate::store::{StateStore, StoreError};
use crate::transfer::{
    job_name_for_prefix, JobFilter, OperationFilter, TransferError, TransferService,
};
use stall::{stalled_prefixes, RunningSnapshot};
use sync::{ChangeSet, JobUpdate};

/// Every job this tool creates is named `transferJobs/sts-jm-...`, so
/// operations are listed server-side for this tool's jobs only.
pub const JOB_NAME_PATTERN: &str = "transferJobs/sts-jm-*";

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(
        "another sts-job-manager ({holder}) is running on job table '{table}' (its lease lasts until {until}); \
         stop it, or wait for its lease to expire"
    )]
    LeaseHeld {
        holder: String,
        table: String,
        until: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
}

/// Objects and bytes over the latest operation of every prefix.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub objects_found: i64,
    pub objects_copied: i64,
    pub objects_skipped: i64,
    pub objects_failed: i64,
    pub bytes_found: i64,
    pub bytes_copied: i64,
    pub bytes_skipped: i64,
    pub bytes_failed: i64,
}

/// What one iteration did: JSON-serialisable (an Airflow XCom).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleSummary {
    /// Prefixes per status, every status present (0 included).
    pub counts: BTreeMap<String, usize>,
    pub synced: bool,
    pub started_jobs_round: bool,
    pub started: Vec<String>,
    pub resumed: Vec<String>,
    /// Started earlier, no operation seen within `start-timeout`: run again.
    pub restarted: Vec<String>,
    pub stalled: Vec<String>,
    /// Problems met on the way that did not stop the iteration.
    pub errors: Vec<String>,
    pub progress: Progress,
    /// Nothing is pending or running any more.
    pub done: bool,
}

/// Where the heartbeat goes (Cloud Monitoring in production).
#[async_trait::async_trait]
pub trait Heartbeat: Send + Sync {
    async fn publish(&self, points: &[(String, i64)]) -> Result<(), String>;
}

pub struct Manager {
    heartbeat: Option<Arc<dyn Heartbeat>>,
    store: Arc<dyn StateStore>,
    transfer: Arc<dyn TransferService>,
    options: Options,
    project_id: String,
    rows: Vec<PrefixJob>,
    previous_running: HashMap<String, RunningSnapshot>,
    stalled: Vec<String>,
    progress: Progress,
    last_sync: Option<Instant>,
    last_job_round: Option<Instant>,
    /// Who this manager is in the store's lease (`host:pid:nonce`).
    holder: String,
    /// Whether the lease may be ours now (released when dropped).
    holding_lease: bool,
}

impl Manager {
    pub fn new(
        store: Arc<dyn StateStore>,
        transfer: Arc<dyn TransferService>,
        options: Options,
        project_id: String,
    ) -> Self {
        Manager {
            heartbeat: None,
            store,
            transfer,
            options,
            project_id,
            rows: vec![],
            previous_running: HashMap::new(),
            stalled: vec![],
            progress: Progress::default(),
            last_sync: None,
            last_job_round: None,
            holder: crate::store::lease_holder(),
            holding_lease: false,
        }
    }

    /// Publishes the heartbeat there (with `--publish-heartbeat`); without a
    /// sink the points are logged.
    pub fn with_heartbeat(mut self, heartbeat: Arc<dyn Heartbeat>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// One loop iteration (SPEC 4 steps 1-3), honouring the intervals,
    /// without the lease (the callers in `lease.rs` hold it).
    async fn step(&mut self) -> Result<CycleSummary, ManagerError> {
        let due = |last: Option<Instant>, every: f64| {
            last.is_none_or(|t| t.elapsed().as_secs_f64() >= every)
        };
        let jobs_due = due(self.last_job_round, self.options.job_interval);
        let sync_due = jobs_due || due(self.last_sync, self.options.metrics_interval);
        let mut summary = CycleSummary::default();
        if sync_due {
            self.sync_state(&mut summary, true).await?;
        }
        if jobs_due {
            self.last_job_round = Some(Instant::now());
            summary.started_jobs_round = true;
            self.start_jobs(&mut summary).await?;
            // Moments after the first sync: too soon to judge stalls again.
            self.sync_state(&mut summary, false).await?;
        }
        self.finish_summary(&mut summary);
        if self.options.publish_heartbeat {
            let points = heartbeat_points(&summary.counts, summary.stalled.len());
            match &self.heartbeat {
                Some(sink) => {
                    if let Err(e) = sink.publish(&points).await {
                        tracing::warn!("could not publish the heartbeat (going on): {e}");
                        summary.errors.push(format!("heartbeat: {e}"));
                    }
                }
                None => {
                    for (metric, value) in points {
                        tracing::info!(metric, value, "heartbeat");
                    }
                }
            }
        }
        Ok(summary)
    }

    async fn sync_state(
        &mut self,
        summary: &mut CycleSummary,
        judge_stalls: bool,
    ) -> Result<(), ManagerError> {
        let rows = self.store.read_jobs().await?;
        let operations = self
            .transfer
            .list_operations(&OperationFilter {
                project_id: self.project_id.clone(),
                job_name_pattern: Some(JOB_NAME_PATTERN.into()),
                ..OperationFilter::default()
            })
            .await?;
        let deleted: HashSet<String> = self
            .transfer
            .list_jobs(&JobFilter {
                project_id: self.project_id.clone(),
                statuses: vec![JobStatus::Deleted],
            })
            .await?
            .into_iter()
            .map(|j| j.name)
            .collect();
        let now = Utc::now();
        let outcome = sync::sync(
            &rows,
            &operations,
            &deleted,
            &self.options.source_bucket,
            &self.options.destination_bucket,
            now,
        );
        for unknown in &outcome.unknown {
            tracing::warn!(
                prefix = %unknown.prefix,
                operation = %unknown.operation,
                "unknown transfer operation status '{}': keeping the prefix's status",
                unknown.status
            );
        }
        self.store.apply(&outcome.changes).await?;

        let mut rows = rows;
        apply_updates(&mut rows, &outcome.changes.updates);
        if judge_stalls {
            self.judge_stalls(&rows, &outcome.latest);
        }
        self.progress = progress_of(outcome.latest.values().map(|op| &op.counters));
        self.rows = rows;
        self.last_sync = Some(Instant::now());
        summary.synced = true;
        Ok(())
    }

    fn judge_stalls(
        &mut self,
        rows: &[PrefixJob],
        latest: &HashMap<String, &crate::model::TransferOperation>,
    ) {
        let current: HashMap<String, RunningSnapshot> = rows
            .iter()
            .filter(|r| r.status == Status::Running)
            .filter_map(|r| {
                latest.get(&r.prefix).map(|op| {
                    (
                        r.prefix.clone(),
                        RunningSnapshot {
                            operation: op.name.clone(),
                            counters: op.counters.clone(),
                        },
                    )
                })
            })
            .collect();
        self.stalled = stalled_prefixes(&self.previous_running, &current);
        for prefix in &self.stalled {
            tracing::warn!(prefix = %prefix, "transfer operation is stalled: its counters have not moved since the last sync");
        }
        self.previous_running = current;
    }

    async fn start_jobs(&mut self, summary: &mut CycleSummary) -> Result<(), ManagerError> {
        let counts = count_statuses(&self.rows);
        let mut running = counts[Status::Running.as_str()];
        if self.options.allow_new_jobs_when_stalled {
            running = running.saturating_sub(self.stalled.len());
        }
        let retry_errors = !self.options.no_retry_on_job_error;
        // Paused first (resuming keeps their progress), then new, then retries.
        let mut pending: Vec<&PrefixJob> = self
            .rows
            .iter()
            .filter(|r| {
                matches!(r.status, Status::Paused | Status::Waiting)
                    || (retry_errors && r.status == Status::Error)
            })
            .collect();
        pending.sort_by_key(|r| match r.status {
            Status::Paused => 0,
            Status::Waiting => 1,
            _ => 2,
        });
        let wanted = ramp::jobs_to_start(
            running,
            pending.len(),
            self.options.max_concurrent_jobs as usize,
        );
        let now = Utc::now();
        let mut changes = ChangeSet::default();
        self.restart_overdue_starts(now, summary, &mut changes)
            .await;
        for row in pending.into_iter().take(wanted) {
            let started = match (row.status, row.job_name.as_deref()) {
                (Status::Paused, Some(operation)) => {
                    match self.transfer.resume_operation(operation).await {
                        Ok(()) => {
                            summary.resumed.push(row.prefix.clone());
                            Ok(operation.to_string())
                        }
                        Err(e) => {
                            tracing::warn!(prefix = %row.prefix, "could not resume {operation} ({e}); starting it again");
                            self.start_job(row).await
                        }
                    }
                }
                _ => self.start_job(row).await,
            };
            match started {
                Ok(job_name) => {
                    if !summary.resumed.contains(&row.prefix) {
                        summary.started.push(row.prefix.clone());
                    }
                    changes.updates.push(JobUpdate {
                        prefix: row.prefix.clone(),
                        status: Status::Running,
                        job_name: Some(job_name.clone()),
                        last_updated: now,
                    });
                    changes.history.push(HistoryRow {
                        prefix: row.prefix.clone(),
                        status: Status::Running,
                        job_name: Some(job_name),
                        operation_results: None,
                        timestamp: now,
                    });
                }
                Err(e) => {
                    tracing::error!(prefix = %row.prefix, "could not start a transfer job: {e}");
                    summary.errors.push(format!("{}: {e}", row.prefix));
                }
            }
        }
        self.store.apply(&changes).await?;
        apply_updates(&mut self.rows, &changes.updates);
        Ok(())
    }

    /// Starts the prefix's job: the same name every time, so a repeat after a
    /// crash answers ALREADY_EXISTS; a retry runs the existing job again.
    async fn start_job(&self, row: &PrefixJob) -> Result<String, TransferError> {
        let name = job_name_for_prefix(
            &self.options.source_bucket,
            &self.options.destination_bucket,
            &row.prefix,
        );
        if row.status == Status::Error {
            tracing::info!(prefix = %row.prefix, previous = ?row.job_name, "retrying a failed prefix");
        }
        let outcome = if row.job_name.is_some() {
            // A previous attempt exists: run its job again (no create quota).
            match self.transfer.run_job(&name, &self.project_id).await {
                Err(TransferError::NotFound(_)) => {
                    self.create_job(name.clone(), &row.prefix).await.map(|_| ())
                }
                other => other,
            }
        } else {
            match self.create_job(name.clone(), &row.prefix).await {
                Err(TransferError::AlreadyExists(_)) => {
                    tracing::info!(prefix = %row.prefix, "job {name} already exists (an earlier run created it); running it");
                    self.transfer.run_job(&name, &self.project_id).await
                }
                other => other.map(|_| ()),
            }
        };
        match outcome {
            Ok(()) => Ok(name),
            // Refused: if the job's operation is already under way (a crash
            // after the start, or a list that lags), there is nothing to
            // start; the row follows that operation by its own name (the
            // job's name would make sync wait for a newer operation).
            Err(TransferError::FailedPrecondition(why)) => self.follow_active(&name, why).await,
            // The job was deleted: a new name for a new attempt.
            Err(TransferError::NotFound(_)) => {
                let fresh = format!("{name}-{}", Utc::now().timestamp());
                self.create_job(fresh.clone(), &row.prefix)
                    .await
                    .map(|_| fresh)
            }
            Err(e) => Err(e),
        }
    }

    /// STS refused to run `job_name` (`why`): the name of its operation
    /// under way, which the row then follows; the refusal if none is.
    async fn follow_active(&self, job_name: &str, why: String) -> Result<String, TransferError> {
        let active = self
            .transfer
            .list_operations(&OperationFilter {
                project_id: self.project_id.clone(),
                job_names: vec![job_name.to_string()],
                statuses: vec![
                    OperationStatus::Queued,
                    OperationStatus::InProgress,
                    OperationStatus::Paused,
                    OperationStatus::Suspending,
                ],
                ..OperationFilter::default()
            })
            .await?;
        active
            .into_iter()
            .next()
            .map(|op| op.name)
            .ok_or(TransferError::FailedPrecondition(why))
    }

    /// Rows started more than `start-timeout` ago whose operation has not
    /// appeared (STS skipped the one-time job's date, say) are run again.
    /// Never doubled: if an operation is under way after all, STS refuses
    /// the run and the row takes that operation's name. A job deleted
    /// meanwhile sends its prefix back to `waiting` for a new job.
    async fn restart_overdue_starts(
        &self,
        now: chrono::DateTime<Utc>,
        summary: &mut CycleSummary,
        changes: &mut ChangeSet,
    ) {
        let timeout = chrono::Duration::milliseconds((self.options.start_timeout * 1000.0) as i64);
        for row in &self.rows {
            let Some(job) = row.job_name.as_deref() else {
                continue;
            };
            if row.status != Status::Running
                || !job.starts_with("transferJobs/")
                || now - row.last_updated < timeout
            {
                continue;
            }
            tracing::warn!(prefix = %row.prefix, "{job} has shown no operation since {}; running it again", row.last_updated);
            let restarted = match self.transfer.run_job(job, &self.project_id).await {
                Ok(()) => Ok(Some(job.to_string())),
                Err(TransferError::FailedPrecondition(why)) => {
                    self.follow_active(job, why).await.map(Some)
                }
                Err(TransferError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            };
            let (status, job_name) = match restarted {
                Ok(Some(name)) => (Status::Running, Some(name)),
                Ok(None) => (Status::Waiting, None),
                Err(e) => {
                    tracing::error!(prefix = %row.prefix, "could not run {job} again: {e}");
                    summary.errors.push(format!("{}: {e}", row.prefix));
                    continue;
                }
            };
            summary.restarted.push(row.prefix.clone());
            changes.updates.push(JobUpdate {
                prefix: row.prefix.clone(),
                status,
                job_name: job_name.clone(),
                last_updated: now,
            });
            changes.history.push(HistoryRow {
                prefix: row.prefix.clone(),
                status,
                job_name,
                operation_results: None,
                timestamp: now,
            });
        }
    }

    async fn create_job(&self, name: String, prefix: &str) -> Result<TransferJob, TransferError> {
        self.transfer.create_job(&self.new_job(name, prefix)).await
    }

    fn new_job(&self, name: String, prefix: &str) -> TransferJob {
        let bucket = |b: &str| {
            Some(GcsData {
                bucket_name: b.to_string(),
                path: String::new(),
            })
        };
        TransferJob {
            name,
            description: format!("Created via STS Job Manager - {prefix}"),
            project_id: self.project_id.clone(),
            transfer_spec: TransferSpec {
                gcs_data_source: bucket(&self.options.source_bucket),
                gcs_data_sink: bucket(&self.options.destination_bucket),
                object_conditions: Some(ObjectConditions {
                    include_prefixes: vec![prefix.to_string()],
                }),
                transfer_options: Some(TransferOptions {
                    overwrite_objects_already_existing_in_sink: self.options.overwrite_dest_objects,
                }),
            },
            schedule: Some(Schedule::one_time(Date::today_utc())),
            status: JobStatus::Enabled,
            latest_operation_name: None,
            creation_time: None,
            deletion_time: None,
        }
    }

    fn finish_summary(&self, summary: &mut CycleSummary) {
        summary.counts = count_statuses(&self.rows);
        summary.stalled = self.stalled.clone();
        summary.progress = self.progress.clone();
        let c = &summary.counts;
        let pending = c["waiting"]
            + c["paused"]
            + if self.options.no_retry_on_job_error {
                0
            } else {
                c["error"]
            };
        summary.done = pending == 0 && c["running"] == 0;
    }
}

fn apply_updates(rows: &mut [PrefixJob], updates: &[JobUpdate]) {
    let by_prefix: HashMap<&str, &JobUpdate> =
        updates.iter().map(|u| (u.prefix.as_str(), u)).collect();
    for row in rows.iter_mut() {
        if let Some(update) = by_prefix.get(row.prefix.as_str()) {
            row.status = update.status;
            row.job_name = update.job_name.clone();
            row.last_updated = update.last_updated;
        }
    }
}

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

fn progress_of<'a>(counters: impl Iterator<Item = &'a crate::model::Counters>) -> Progress {
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

fn log_summary(summary: &CycleSummary) {
    let counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    tracing::info!(
        started = summary.started.len(),
        resumed = summary.resumed.len(),
        stalled = summary.stalled.len(),
        objects_copied = summary.progress.objects_copied,
        bytes_copied = summary.progress.bytes_copied,
        "prefixes: {}",
        counts.join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_has_every_status_and_stalled() {
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
