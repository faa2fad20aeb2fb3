//! What a sync lists from the transfer service: everything at a full
//! reconcile (folded a page at a time), only what can have changed in a
//! steady sync, and jobs started before this manager for waiting prefixes.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};

use super::sync::{self, ChangeSet};
use super::{Manager, ManagerError, CREATION_MARGIN_SECONDS, JOB_NAME_PATTERN, NAME_CHUNK};
use crate::model::{JobStatus, PrefixJob, Status};
use crate::transfer::{self, JobFilter, OperationFilter};

impl Manager {
    /// The full reconcile: every operation of the project (whoever created
    /// its job), folded a page at a time into the latest operation of each
    /// row, and the counters of every other prefix's latest operation (what
    /// finished prefixes copied). Costs what ever ran in requests, not in
    /// memory; it runs at start-up and every `reconcile-interval`.
    pub(super) async fn list_everything(
        &self,
        rows: &[PrefixJob],
    ) -> Result<(sync::LatestOps, Option<crate::model::Counters>), ManagerError> {
        // Deleted jobs first: the fold drops their operations as they come.
        let deleted: HashSet<String> = self
            .transfer
            .list_jobs(&JobFilter {
                project_id: self.project_id.clone(),
                statuses: vec![JobStatus::Deleted],
                ..JobFilter::default()
            })
            .await?
            .into_iter()
            .map(|j| j.name)
            .collect();
        let mut latest = sync::Latest::new(
            rows,
            &deleted,
            &self.settings.source_bucket,
            &self.settings.destination_bucket,
        )
        .counting_others();
        self.transfer
            .scan_operations(
                &OperationFilter {
                    project_id: self.project_id.clone(),
                    ..OperationFilter::default()
                },
                &mut |page| {
                    self.saw(&page);
                    let mut known = self.pool_known.lock().unwrap_or_else(|p| p.into_inner());
                    for op in &page {
                        if transfer::is_pool_job(&op.transfer_job_name)
                            && !deleted.contains(&op.transfer_job_name)
                        {
                            known.insert(op.transfer_job_name.clone());
                        }
                    }
                    drop(known);
                    for op in page {
                        latest.add(op);
                    }
                },
            )
            .await?;
        let (latest, others) = latest.finish();
        Ok((latest, Some(others)))
    }

    /// Remembers the newest start time among `operations` (STS's clock).
    pub(super) fn saw(&self, operations: &[crate::model::TransferOperation]) {
        if let Some(newest) = operations
            .iter()
            .filter_map(|op| op.start_time)
            .map(|t| t.timestamp_micros())
            .max()
        {
            self.newest_seen
                .fetch_max(newest, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A steady-state sync: only what can have changed. The operations the
    /// rows in flight name, those of jobs awaiting their first operation,
    /// this tool's operations created since the last sync, and whether the
    /// jobs of those operations were deleted. Its cost follows the prefixes
    /// in flight, not the migration's history.
    pub(super) async fn list_in_flight(
        &self,
        rows: &mut Vec<PrefixJob>,
    ) -> Result<sync::LatestOps, ManagerError> {
        let in_flight = rows
            .iter()
            .filter(|r| matches!(r.status, Status::Running | Status::Paused));
        let mut operation_names = BTreeSet::new();
        let mut job_names = BTreeSet::new();
        for row in in_flight {
            match row.job_name.as_deref() {
                Some(name) if name.starts_with("transferJobs/") => {
                    job_names.insert(name.to_string());
                }
                Some(name) => {
                    operation_names.insert(name.to_string());
                }
                None => {}
            }
        }
        let mut operations = Vec::new();
        let operation_names: Vec<String> = operation_names.into_iter().collect();
        for chunk in operation_names.chunks(NAME_CHUNK) {
            operations.extend(
                self.transfer
                    .list_operations(&OperationFilter {
                        project_id: self.project_id.clone(),
                        operation_names: chunk.to_vec(),
                        ..OperationFilter::default()
                    })
                    .await?,
            );
        }
        let job_names: Vec<String> = job_names.into_iter().collect();
        for chunk in job_names.chunks(NAME_CHUNK) {
            operations.extend(
                self.transfer
                    .list_operations(&OperationFilter {
                        project_id: self.project_id.clone(),
                        job_names: chunk.to_vec(),
                        ..OperationFilter::default()
                    })
                    .await?,
            );
        }
        self.saw(&operations);
        let newest = self.newest_seen.load(std::sync::atomic::Ordering::Relaxed);
        let since = (newest != i64::MIN)
            .then(|| DateTime::<Utc>::from_timestamp_micros(newest))
            .flatten()
            .map(|t| t - chrono::Duration::seconds(CREATION_MARGIN_SECONDS));
        operations.extend(
            self.transfer
                .list_operations(&OperationFilter {
                    project_id: self.project_id.clone(),
                    job_name_pattern: Some(JOB_NAME_PATTERN.into()),
                    min_creation_time: since,
                    ..OperationFilter::default()
                })
                .await?,
        );
        // Operations of prefixes not in flight (a start of ours whose write
        // a crash lost, say): their rows are read, the unfinished kept.
        let known: HashSet<&str> = rows.iter().map(|r| r.prefix.as_str()).collect();
        let others: Vec<String> = operations
            .iter()
            .flat_map(|op| op.transfer_spec.include_prefixes())
            .filter(|p| !known.contains(p.as_str()))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        drop(known);
        if !others.is_empty() {
            let found = self.store.read_prefixes(&others).await?;
            rows.extend(found.into_iter().filter(|r| r.status != Status::Done));
            rows.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        }
        // Only operations of prefixes still unfinished can change a row:
        // the rest (and their jobs' deletion checks) cost nothing more.
        let rows: &[PrefixJob] = rows;
        let unfinished: HashSet<&str> = rows.iter().map(|r| r.prefix.as_str()).collect();
        let mut seen = HashSet::new();
        operations.retain(|op| {
            op.transfer_spec
                .include_prefixes()
                .iter()
                .any(|p| unfinished.contains(p.as_str()))
                && seen.insert(op.name.clone())
        });
        let jobs: Vec<String> = operations
            .iter()
            .map(|op| op.transfer_job_name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut deleted = HashSet::new();
        for chunk in jobs.chunks(NAME_CHUNK) {
            deleted.extend(
                self.transfer
                    .list_jobs(&JobFilter {
                        project_id: self.project_id.clone(),
                        statuses: vec![JobStatus::Deleted],
                        job_names: chunk.to_vec(),
                        ..JobFilter::default()
                    })
                    .await?
                    .into_iter()
                    .map(|j| j.name),
            );
        }
        let mut latest = sync::Latest::new(
            rows,
            &deleted,
            &self.settings.source_bucket,
            &self.settings.destination_bucket,
        );
        for op in operations {
            latest.add(op);
        }
        Ok(latest.finish().0)
    }

    /// Waiting prefixes (never started by this manager) for which an enabled
    /// job on the same buckets exists with no operation yet: the original
    /// tool (or this one, before a crash) created it moments ago. The row
    /// follows that job, as after one of our own starts.
    pub(super) async fn adopt_started_jobs(
        &self,
        rows: &[PrefixJob],
        decisions: &[sync::Decision],
        now: DateTime<Utc>,
    ) -> Result<ChangeSet, ManagerError> {
        let changed: HashSet<usize> = decisions
            .iter()
            .filter(|d| d.update && rows.get(d.row).is_some_and(|r| r.status == Status::Waiting))
            .map(|d| d.row)
            .collect();
        let waiting: HashSet<&str> = rows
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                r.status == Status::Waiting && r.job_name.is_none() && !changed.contains(i)
            })
            .map(|(_, r)| r.prefix.as_str())
            .collect();
        let mut adopted = ChangeSet::default();
        if waiting.is_empty() {
            return Ok(adopted);
        }
        let jobs = self
            .transfer
            .list_jobs(&JobFilter {
                project_id: self.project_id.clone(),
                statuses: vec![JobStatus::Enabled],
                source_bucket: Some(self.settings.source_bucket.clone()),
                sink_bucket: Some(self.settings.destination_bucket.clone()),
                ..JobFilter::default()
            })
            .await?;
        let mut taken = HashSet::new();
        // Reusable jobs have no schedule: one that never ran is not a start.
        // STS may answer a job made without a schedule with `"schedule": {}`:
        // only a start date makes a scheduled (one-time) start. The buckets
        // are checked here too: the list filter's bucket keys are not
        // relied on to narrow the listing (STS_API.md).
        let (source, sink) = (
            &self.settings.source_bucket,
            &self.settings.destination_bucket,
        );
        for job in jobs.iter().filter(|j| {
            j.latest_operation_name.is_none()
                && j.schedule
                    .as_ref()
                    .is_some_and(|s| s.schedule_start_date.is_some())
                && !transfer::is_pool_job(&j.name)
                && j.transfer_spec
                    .gcs_data_source
                    .as_ref()
                    .map(|g| &g.bucket_name)
                    == Some(source)
                && j.transfer_spec
                    .gcs_data_sink
                    .as_ref()
                    .map(|g| &g.bucket_name)
                    == Some(sink)
        }) {
            for prefix in job.transfer_spec.include_prefixes() {
                if !waiting.contains(prefix.as_str()) || !taken.insert(prefix.clone()) {
                    continue;
                }
                tracing::info!(prefix = %prefix, job = %job.name, "a job for this prefix was created before this manager started and has no operation yet: following it instead of starting another");
                // Its operation starts after the job was created: anything
                // older is not this start's.
                let since = job.creation_time.unwrap_or(now).min(now);
                adopted.change(
                    prefix,
                    Status::Running,
                    Some(job.name.clone()),
                    None,
                    since,
                    now,
                );
            }
        }
        Ok(adopted)
    }
}
