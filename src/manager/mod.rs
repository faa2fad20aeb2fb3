//! The manager cycle (SPEC 4): sync state, start jobs, publish the heartbeat.
//! It talks to a `StateStore` and a `TransferService` and never knows which.

pub mod failures;
mod lease;
pub mod plan;
pub mod stall;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{
    Date, GcsData, HistoryRow, JobStatus, ObjectConditions, PrefixJob, Schedule, Status,
};
use crate::model::{TransferJob, TransferOptions, TransferSpec};
use crate::options::Options;
use crate::store::{StateStore, StoreError};
use crate::transfer::{
    self, job_name_for_prefix, JobFilter, OperationFilter, TransferError, TransferService,
};
use failures::{permanent_cause, retry_state, Failure, Retry, Streak};
use plan::Planned;
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
    /// The same permanent cause stopped new starts, and nothing is running.
    #[error("the migration stopped: {0}")]
    Halted(String),
    /// Something the migration needs is missing (a bucket, the STS service
    /// account): found before the first start.
    #[error("{0}")]
    Preflight(String),
    /// Nothing is left to do, but prefixes ended in `error`.
    #[error(
        "the migration finished with {count} prefixes in error (e.g. {sample}); see the \
         history table, fix the cause, then requeue them with sts-requeue"
    )]
    FinishedWithErrors { count: usize, sample: String },
}

/// What names one migration: its job table where it is kept (the SQLite
/// file's absolute path, or BigQuery's project and dataset). Pool jobs hang
/// on it, so two migrations between the same buckets use disjoint pools.
pub fn migration_key(options: &Options) -> String {
    match options.state_location() {
        Ok(crate::options::StateLocation::Sqlite(path)) => format!(
            "sqlite:{}:{}",
            // Absolute whether the file exists yet or not (sts-doctor may
            // look before sts-prepare-tables makes it).
            std::path::absolute(&path).unwrap_or(path).display(),
            options.job_table
        ),
        _ => format!(
            "bigquery:{}:{}:{}",
            options.project_id().unwrap_or_default(),
            options.dataset,
            options.job_table
        ),
    }
}

/// TransferJob.description: "Its max length is 1024 bytes when
/// Unicode-encoded" (discovery document).
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// The original tool's description of a prefix's job, cut (on a character
/// boundary, marked with an ellipsis) to fit STS's limit: a prefix may be up
/// to 1,024 bytes itself. Nothing reads the prefix back from it.
pub fn job_description(prefix: &str) -> String {
    let full = format!("Created via STS Job Manager - {prefix}");
    if full.len() <= MAX_DESCRIPTION_BYTES {
        return full;
    }
    let mut end = MAX_DESCRIPTION_BYTES - '…'.len_utf8();
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &full[..end])
}

/// Operations and jobs are asked for by name in chunks this large, so a
/// filter stays well under URL length limits.
pub const NAME_CHUNK: usize = 100;
/// Operations created this long before the newest operation seen (STS's
/// clock, not this host's) are listed again: listing lag. Small, as the
/// operations this manager starts are followed by name whatever it is.
const CREATION_MARGIN_SECONDS: i64 = 30;
/// At most one heartbeat point per series this often.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Prefixes written per transaction when a sync changes many at once.
const WRITE_CHUNK: usize = 20_000;
/// A sync's operations this many or more are freed on another thread.
const BACKGROUND_DROP: usize = 10_000;
/// Starts of one round in flight at once.
const START_CONCURRENCY: usize = 8;
/// At most this many failed prefixes are listed in a summary.
pub const MAX_LISTED_FAILURES: usize = 100;

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
    /// Prefixes in `error`, with their codes (at most MAX_LISTED_FAILURES).
    pub failed: Vec<Failure>,
    /// How many prefixes are in `error` in all.
    pub failed_count: usize,
    /// Of those, how many will not be retried (out of retries, or retries off).
    pub failed_final: usize,
    /// Set when the same permanent cause stopped new starts: what to fix.
    pub halted: Option<String>,
    /// The store was read in full and every operation of the project listed.
    pub reconciled: bool,
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
    last_heartbeat: Option<Instant>,
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
    last_reconcile: Option<Instant>,
    /// When the previous sync began (server-side lower bound for new operations).
    /// The newest start time of any operation listed so far (microseconds,
    /// STS's clock; `i64::MIN`: none yet): a steady sync lists operations
    /// created since then, whatever this host's clock says.
    newest_seen: std::sync::atomic::AtomicI64,
    /// Failures of the prefixes in `error` (from their operation or refusal).
    failures: BTreeMap<String, Failure>,
    /// Failed attempts of prefixes in `error` since they were last queued.
    attempts: HashMap<String, u32>,
    streak: Streak,
    halted: Option<String>,
    service_account: Option<String>,
    checked_buckets: bool,
    /// Rows `done` (not kept in memory).
    done_count: usize,
    /// Planned bytes of the prefixes not started yet (from `sts-plan
    /// --load`): larger ones start first. Read at each full reconcile.
    planned_bytes: HashMap<String, u64>,
    /// Slots open now: grows 1, 3, 9, ... at each job interval.
    ramp_level: usize,
    /// Reusable jobs in use: job name -> the prefix its operation copies.
    pool_busy: HashMap<String, String>,
    /// Reusable jobs that can be neither patched nor created (deleted by
    /// someone: their name stays taken); skipped from then on.
    pool_dead: std::sync::Mutex<HashSet<String>>,
    /// Pool jobs known to exist (seen in a reconcile, or made or patched by
    /// this manager): patched on use; any other is created on first use.
    pool_known: std::sync::Mutex<HashSet<String>>,
    /// Pool jobs read once by this process and found as this manager left
    /// them.
    pool_verified: std::sync::Mutex<HashSet<String>>,
    /// Counters of the latest operations of finished prefixes.
    finished: crate::model::Counters,
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
            last_heartbeat: None,
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
            last_reconcile: None,
            newest_seen: std::sync::atomic::AtomicI64::new(i64::MIN),
            failures: BTreeMap::new(),
            attempts: HashMap::new(),
            streak: Streak::default(),
            halted: None,
            service_account: None,
            checked_buckets: false,
            done_count: 0,
            planned_bytes: HashMap::new(),
            ramp_level: 0,
            pool_busy: HashMap::new(),
            pool_dead: std::sync::Mutex::new(HashSet::new()),
            pool_known: std::sync::Mutex::new(HashSet::new()),
            pool_verified: std::sync::Mutex::new(HashSet::new()),
            finished: crate::model::Counters::default(),
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

    /// The project's STS service account, named in messages about access.
    pub fn with_service_account(mut self, account: String) -> Self {
        self.service_account = Some(account);
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
            // The ramp grows at job intervals only, and never falls.
            self.last_job_round = Some(Instant::now());
            self.ramp_level =
                plan::next_level(self.ramp_level, self.options.max_concurrent_jobs as usize);
            summary.started_jobs_round = true;
        }
        if sync_due {
            // Slots freed since the last sync are taken at once, up to the level.
            self.start_jobs(&mut summary).await?;
        }
        if jobs_due {
            // Moments after the first sync: too soon to judge stalls again.
            self.sync_state(&mut summary, false).await?;
        }
        self.finish_summary(&mut summary);
        // Cloud Monitoring takes one point per time series every 5 s at
        // most: one every 10 s, whatever the intervals.
        let heartbeat_due = self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY);
        if self.options.publish_heartbeat && heartbeat_due {
            self.last_heartbeat = Some(Instant::now());
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
        let clock = Instant::now();
        // Finished prefixes cost nothing per cycle: only the rest is read.
        let (rows, total) = self.store.read_unfinished().await?;
        let read_s = clock.elapsed().as_secs_f64();
        let full = self
            .last_reconcile
            .is_none_or(|t| t.elapsed().as_secs_f64() >= self.options.reconcile_interval);
        let (latest, finished_elsewhere) = if full {
            self.list_everything(&rows).await?
        } else {
            (self.list_in_flight(&rows).await?, None)
        };
        let list_s = clock.elapsed().as_secs_f64() - read_s;
        let now = Utc::now();
        let mut outcome = sync::sync(&rows, latest);
        for unknown in &outcome.unknown {
            tracing::warn!(
                prefix = %unknown.prefix,
                operation = %unknown.operation,
                "unknown transfer operation status '{}': keeping the prefix's status",
                unknown.status
            );
        }
        let mut adopted = ChangeSet::default();
        if full {
            // Jobs created for a prefix whose operation has not appeared yet
            // (another tool's start, or ours before a crash): follow them
            // instead of starting a second one.
            adopted = self
                .adopt_started_jobs(&rows, &outcome.decisions, now)
                .await?;
        }
        if self.last_reconcile.is_none() {
            // Before this sync's own failures are written and counted.
            self.load_failures(&rows, &outcome.latest).await?;
        }
        let decide_s = clock.elapsed().as_secs_f64() - read_s - list_s;
        self.write_in_chunks(&rows, &outcome, &adopted, now).await?;
        let write_s = clock.elapsed().as_secs_f64() - read_s - list_s - decide_s;
        let updates = outcome.decisions.iter().filter(|d| d.update).count() + adopted.updates.len();
        let recorded =
            outcome.decisions.iter().filter(|d| d.record).count() + adopted.history.len();

        // The rows take their new status; each transition is noted in order.
        let mut rows = rows;
        let mut became: Vec<(usize, Status, Status)> = Vec::new();
        for decision in outcome.decisions.iter().filter(|d| d.update) {
            let Some(row) = rows.get_mut(decision.row) else {
                continue;
            };
            became.push((decision.row, decision.status, row.status));
            row.status = decision.status;
            row.job_name = outcome.latest.get(&row.prefix).map(|op| op.name.clone());
            row.last_updated = now;
        }
        if !adopted.updates.is_empty() {
            let index: HashMap<&str, usize> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.prefix.as_str(), i))
                .collect();
            for update in &adopted.updates {
                if let Some((&i, row)) = index
                    .get(update.prefix.as_str())
                    .and_then(|i| Some((i, rows.get(*i)?)))
                {
                    became.push((i, update.status, row.status));
                }
            }
        }
        apply_updates(&mut rows, &adopted.updates);
        for (index, status, previous) in became {
            if let Some(prefix) = rows.get(index).map(|r| r.prefix.clone()) {
                self.note_transition(&prefix, status, Some(previous), &outcome.latest, now);
            }
        }
        // A requeued prefix (waiting again) starts its retry count afresh.
        for row in rows
            .iter()
            .filter(|r| r.status == Status::Waiting && r.job_name.is_none())
        {
            if self.attempts.remove(&row.prefix).is_some() {
                self.failures.remove(&row.prefix);
            }
        }
        self.pool_busy = rows
            .iter()
            .filter(|r| matches!(r.status, Status::Running | Status::Paused))
            .filter_map(|r| {
                let job = match outcome.latest.get(&r.prefix) {
                    Some(op) => op.transfer_job_name.clone(),
                    None => r
                        .job_name
                        .clone()
                        .filter(|n| n.starts_with("transferJobs/"))?,
                };
                Some((job, r.prefix.clone()))
            })
            .collect();
        if judge_stalls {
            self.judge_stalls(&rows, &outcome.latest);
        }
        // Progress: what finished prefixes copied (counted in full at a
        // reconcile, then as each finishes) plus what is in flight.
        if let Some(elsewhere) = finished_elsewhere {
            // A full reconcile counts the prefixes finished before afresh.
            self.finished = elsewhere;
        }
        for row in rows.iter().filter(|r| r.status == Status::Done) {
            if let Some(op) = outcome.latest.get(&row.prefix) {
                self.finished += &op.counters;
            }
        }
        let mut counters = self.finished.clone();
        for row in rows.iter().filter(|r| r.status != Status::Done) {
            if let Some(op) = outcome.latest.get(&row.prefix) {
                counters += &op.counters;
            }
        }
        self.progress = progress_of(std::iter::once(&counters));
        // Prefixes done now leave memory; the count remembers them.
        rows.retain(|r| r.status != Status::Done);
        self.done_count = total.saturating_sub(rows.len());
        self.rows = rows;
        self.last_sync = Some(Instant::now());
        if full {
            self.last_reconcile = Some(Instant::now());
            summary.reconciled = true;
            // Only the sizes of prefixes still to start are kept.
            let waiting: HashSet<&str> = self
                .rows
                .iter()
                .filter(|r| r.status == Status::Waiting)
                .map(|r| r.prefix.as_str())
                .collect();
            self.planned_bytes = match self.store.read_plan().await {
                Ok(plan) => plan
                    .into_iter()
                    .filter(|p| waiting.contains(p.prefix.as_str()))
                    .map(|p| (p.prefix, p.bytes))
                    .collect(),
                Err(e) => {
                    tracing::warn!("could not read the plan table (starting in table order): {e}");
                    HashMap::new()
                }
            };
        }
        summary.synced = true;
        // Where a slow sync spends its time, for whoever tunes a big run.
        tracing::debug!(
            full,
            unfinished = self.rows.len(),
            updates,
            history = recorded,
            "sync took {:.3} s: read {read_s:.3} s, list {list_s:.3} s, decide {decide_s:.3} s, \
             write {write_s:.3} s, rest {:.3} s",
            clock.elapsed().as_secs_f64(),
            clock.elapsed().as_secs_f64() - read_s - list_s - decide_s - write_s,
        );
        if outcome.latest.len() >= BACKGROUND_DROP {
            // A hundred thousand boxed operations take a tenth of a second
            // to free: done on a thread of their own, off the cycle.
            let latest = std::mem::take(&mut outcome.latest);
            std::thread::spawn(move || drop(latest));
        }
        Ok(())
    }

    /// Writes a sync's changes in chunks of [`WRITE_CHUNK`] decided
    /// prefixes (rows are in prefix order): each chunk's status updates and
    /// history rows, their operations' JSON made just before, in one
    /// transaction. Memory stays bounded by two chunks, and a crash between
    /// chunks loses nothing: the next sync finds the prefixes not yet
    /// written changed still. Adopted jobs go with the last chunk. While
    /// one chunk is written (a task of its own), the next is made: the
    /// JSON of 20,000 operations on one core, the store's work on another.
    async fn write_in_chunks(
        &self,
        rows: &[PrefixJob],
        outcome: &sync::SyncOutcome,
        adopted: &ChangeSet,
        now: DateTime<Utc>,
    ) -> Result<(), ManagerError> {
        let buckets = (
            self.options.source_bucket.as_str(),
            self.options.destination_bucket.as_str(),
        );
        let mut chunks = outcome.decisions.chunks(WRITE_CHUNK).peekable();
        if chunks.peek().is_none() {
            return Ok(self.store.apply(adopted).await?);
        }
        let mut writing: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
        while let Some(decisions) = chunks.next() {
            let mut chunk = sync::changes_of(rows, &outcome.latest, buckets, decisions, now);
            if chunks.peek().is_none() {
                // One update per prefix (the adoption wins): by a set, as
                // a chunk holds 20,000.
                let adopted_prefixes: HashSet<&str> =
                    adopted.updates.iter().map(|u| u.prefix.as_str()).collect();
                chunk
                    .updates
                    .retain(|u| !adopted_prefixes.contains(u.prefix.as_str()));
                chunk.updates.extend(adopted.updates.iter().cloned());
                chunk.history.extend(adopted.history.iter().cloned());
            }
            if let Some(previous) = writing.take() {
                finish_write(previous).await?;
            }
            let store = self.store.clone();
            writing = Some(tokio::spawn(async move { store.apply(&chunk).await }));
        }
        if let Some(last) = writing {
            finish_write(last).await?;
        }
        Ok(())
    }

    /// The full reconcile: every operation of the project (whoever created
    /// its job), folded a page at a time into the latest operation of each
    /// row, and the counters of every other prefix's latest operation (what
    /// finished prefixes copied). Costs what ever ran in requests, not in
    /// memory; it runs at start-up and every `reconcile-interval`.
    async fn list_everything(
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
            &self.options.source_bucket,
            &self.options.destination_bucket,
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
    fn saw(&self, operations: &[crate::model::TransferOperation]) {
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
    async fn list_in_flight(&self, rows: &[PrefixJob]) -> Result<sync::LatestOps, ManagerError> {
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
        // Only operations of prefixes still unfinished can change a row:
        // the rest (and their jobs' deletion checks) cost nothing more.
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
            &self.options.source_bucket,
            &self.options.destination_bucket,
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
    async fn adopt_started_jobs(
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
                source_bucket: Some(self.options.source_bucket.clone()),
                sink_bucket: Some(self.options.destination_bucket.clone()),
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
            &self.options.source_bucket,
            &self.options.destination_bucket,
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
                adopted.push_update(JobUpdate {
                    prefix: prefix.clone(),
                    status: Status::Running,
                    job_name: Some(job.name.clone()),
                    last_updated: since,
                });
                adopted.history.push(HistoryRow {
                    prefix: prefix.clone(),
                    status: Status::Running,
                    job_name: Some(job.name.clone()),
                    operation_results: None,
                    timestamp: now,
                });
            }
        }
        Ok(adopted)
    }

    /// At start-up: the failures of prefixes already in `error`, and how many
    /// times each has failed since it was queued.
    async fn load_failures(
        &mut self,
        rows: &[PrefixJob],
        latest: &sync::LatestOps,
    ) -> Result<(), ManagerError> {
        let counts = self.store.failure_counts().await?;
        for row in rows.iter().filter(|r| r.status == Status::Error) {
            let attempts = counts.get(&row.prefix).copied().unwrap_or(0).max(1);
            self.attempts.insert(row.prefix.clone(), attempts);
            if let Some(op) = latest.get(&row.prefix) {
                let mut failure = Failure::of_operation(&row.prefix, op);
                failure.attempts = attempts;
                failure.exhausted =
                    self.retry_of(&row.prefix, row.last_updated, Utc::now()) == Retry::Exhausted;
                self.failures.insert(row.prefix.clone(), failure);
            }
        }
        Ok(())
    }

    /// Reacts to a prefix's new status: a failure is logged once, counted,
    /// and fed to the streak; a success ends the streak.
    fn note_transition(
        &mut self,
        prefix: &str,
        status: Status,
        previous: Option<Status>,
        latest: &sync::LatestOps,
        now: DateTime<Utc>,
    ) {
        match status {
            Status::Error => {
                // Only a new failure: a row already in error that takes
                // another name is the same failure seen again.
                let Some(op) = latest
                    .get(prefix)
                    .filter(|_| previous != Some(Status::Error))
                else {
                    return;
                };
                let failure = Failure::of_operation(prefix, op);
                self.record_failure(failure, now);
            }
            Status::Done => {
                self.failures.remove(prefix);
                self.attempts.remove(prefix);
                self.streak.record(prefix, None);
            }
            _ => {}
        }
    }

    /// Counts a failure, logs it once at ERROR, and stops new starts when
    /// the same permanent cause has failed several prefixes in a row.
    fn record_failure(&mut self, mut failure: Failure, now: DateTime<Utc>) {
        let attempts = self.attempts.get(&failure.prefix).copied().unwrap_or(0) + 1;
        self.attempts.insert(failure.prefix.clone(), attempts);
        failure.attempts = attempts;
        let retry = self.retry_of(&failure.prefix, now, now);
        failure.exhausted = retry == Retry::Exhausted;
        let next = match retry {
            Retry::Exhausted if self.options.no_retry_on_job_error => {
                "not retried (--no-retry-on-job-error); requeue it with sts-requeue".to_string()
            }
            Retry::Exhausted => format!(
                "out of retries (--max-retries {}); it stays in error until requeued with sts-requeue",
                self.options.max_retries
            ),
            Retry::Due => "retried at the next job round".to_string(),
            Retry::Later(at) => format!("retried after {}", at.to_rfc3339()),
        };
        tracing::error!(
            prefix = %failure.prefix,
            operation = failure.operation.as_deref().unwrap_or(""),
            attempt = attempts,
            "transfer of prefix {:?} failed (attempt {attempts}): {}; {next}",
            failure.prefix,
            failure.describe(),
        );
        let cause = permanent_cause(&failure);
        let prefix = failure.prefix.clone();
        self.failures.insert(prefix.clone(), failure);
        if let Some((cause, count)) = self.streak.record(&prefix, cause) {
            if self.halted.is_none() {
                let line = failures::halt_message(
                    &cause,
                    count,
                    self.service_account.as_deref(),
                    &self.options.source_bucket,
                    &self.options.destination_bucket,
                );
                tracing::error!("{line}");
                self.halted = Some(line);
            }
        }
    }

    /// Whether the prefix in `error` since `failed_at` is started again.
    fn retry_of(&self, prefix: &str, failed_at: DateTime<Utc>, now: DateTime<Utc>) -> Retry {
        retry_state(
            self.attempts.get(prefix).copied().unwrap_or(1),
            self.options.max_retries,
            !self.options.no_retry_on_job_error,
            failed_at,
            now,
            self.options.job_interval,
        )
    }

    fn judge_stalls(&mut self, rows: &[PrefixJob], latest: &sync::LatestOps) {
        let now = Utc::now();
        let mut current: HashMap<String, RunningSnapshot> = rows
            .iter()
            .filter(|r| r.status == Status::Running)
            .filter_map(|r| {
                latest.get(&r.prefix).map(|op| {
                    (
                        r.prefix.clone(),
                        RunningSnapshot {
                            operation: op.name.clone(),
                            counters: op.counters.clone(),
                            changed_at: now,
                        },
                    )
                })
            })
            .collect();
        self.stalled = stalled_prefixes(
            &self.previous_running,
            &mut current,
            now,
            stall::STALL_AFTER,
        );
        for prefix in &self.stalled {
            tracing::warn!(prefix = %prefix, "transfer operation is stalled: no counter moved for {} s", stall::STALL_AFTER.num_seconds());
        }
        self.previous_running = current;
    }

    async fn start_jobs(&mut self, summary: &mut CycleSummary) -> Result<(), ManagerError> {
        let now = Utc::now();
        let mut changes = ChangeSet::default();
        self.restart_overdue_starts(now, summary, &mut changes)
            .await;
        apply_updates(&mut self.rows, &changes.updates);
        if let Some(line) = self.halted.as_ref().filter(|_| summary.started_jobs_round) {
            // Starting more would fail the same way: say it once per round.
            tracing::error!("{line}");
        }
        let retry_due: HashSet<String> = self
            .rows
            .iter()
            .filter(|r| r.status == Status::Error)
            .filter(|r| self.retry_of(&r.prefix, r.last_updated, now) == Retry::Due)
            .map(|r| r.prefix.clone())
            .collect();
        let stalled: HashSet<String> = self.stalled.iter().cloned().collect();
        let sizes = &self.planned_bytes;
        let planned = plan::plan_round(&plan::RoundInput {
            rows: &self.rows,
            stalled: &stalled,
            level: self.ramp_level,
            max: self.options.max_concurrent_jobs as usize,
            allow_new_jobs_when_stalled: self.options.allow_new_jobs_when_stalled,
            retry_due: &retry_due,
            sizes,
            halted: self.halted.is_some(),
        });
        if !planned.is_empty() && !self.checked_buckets {
            self.check_buckets().await?;
        }
        let by_prefix: HashMap<&str, &PrefixJob> =
            self.rows.iter().map(|r| (r.prefix.as_str(), r)).collect();
        let mut free_pool = self.free_pool_jobs();
        let work: Vec<(usize, Planned, PrefixJob, Option<String>)> = planned
            .into_iter()
            .enumerate()
            .filter_map(|(index, step)| {
                let row = by_prefix.get(step.prefix.as_str()).map(|r| (*r).clone())?;
                // Each start of the round gets its own reusable job.
                let pooled = match step.action {
                    plan::Action::Resume(_) => None,
                    _ => free_pool.as_mut().and_then(Iterator::next),
                };
                Some((index, step, row, pooled))
            })
            .collect();
        drop(by_prefix);
        drop(free_pool);
        // The round's starts go out together (bounded; the client paces
        // them under STS's quotas), not one round-trip after another. While
        // starts are being refused, one at a time: a permanent cause stops
        // the round at the refusal that proves it.
        use futures_util::StreamExt;
        let mut work = work.into_iter().peekable();
        while work.peek().is_some() {
            if self.halted.is_some() {
                break;
            }
            let batch = if self.streak.active() {
                1
            } else {
                START_CONCURRENCY
            };
            let chunk: Vec<_> = work.by_ref().take(batch).collect();
            let this = &*self;
            let mut outcomes: Vec<(usize, Planned, bool, Result<String, StartError>)> =
                futures_util::stream::iter(chunk)
                    .map(|(index, step, row, pooled)| async move {
                        let (resumed, outcome) = this.execute(&step, &row, pooled.as_deref()).await;
                        (index, step, resumed, outcome)
                    })
                    .buffer_unordered(batch)
                    .collect()
                    .await;
            outcomes.sort_by_key(|(index, ..)| *index);
            for (_, step, resumed, started) in outcomes {
                self.record_start(step.prefix, resumed, started, now, summary, &mut changes);
            }
        }
        self.store.apply(&changes).await?;
        apply_updates(&mut self.rows, &changes.updates);
        Ok(())
    }

    /// Records one start's outcome in the change set (and the summary).
    fn record_start(
        &mut self,
        prefix: String,
        resumed: bool,
        started: Result<String, StartError>,
        now: DateTime<Utc>,
        summary: &mut CycleSummary,
        changes: &mut ChangeSet,
    ) {
        let (status, job_name, results) = match started {
            Ok(job_name) => {
                if resumed {
                    summary.resumed.push(prefix.clone());
                } else {
                    summary.started.push(prefix.clone());
                }
                (Status::Running, Some(job_name), None)
            }
            Err(StartError::Refused { job, error }) => {
                // STS will refuse this again until a person acts: the
                // prefix goes to error with the reason in its history.
                let failure = Failure::of_refusal(&prefix, &job, error.code(), &error.detail());
                let results = failure.refusal_json();
                self.record_failure(failure, now);
                summary.errors.push(format!("{prefix}: {error}"));
                (Status::Error, Some(job), Some(results))
            }
            Err(StartError::Transient(e)) => {
                tracing::error!(prefix = %prefix, code = e.code(), "could not start a transfer job (will try again at the next round): {e}");
                summary.errors.push(format!("{prefix}: {e}"));
                return;
            }
        };
        changes.push_update(JobUpdate {
            prefix: prefix.clone(),
            status,
            job_name: job_name.clone(),
            last_updated: now,
        });
        changes.history.push(HistoryRow {
            prefix,
            status,
            job_name,
            operation_results: results,
            timestamp: now,
        });
    }

    /// Carries out one planned step; whether it was a resume, and the name
    /// the row then follows.
    async fn execute(
        &self,
        step: &Planned,
        row: &PrefixJob,
        pooled: Option<&str>,
    ) -> (bool, Result<String, StartError>) {
        if let plan::Action::Resume(operation) = &step.action {
            match self.transfer.resume_operation(operation).await {
                Ok(()) => return (true, Ok(operation.clone())),
                Err(e) => {
                    tracing::warn!(prefix = %row.prefix, "could not resume {operation} ({e}); starting it again");
                }
            }
        }
        let started = match pooled {
            Some(job) => self.start_pooled(row, job).await,
            None => self.start_job(row).await,
        };
        (false, started)
    }

    /// Reusable job names not in use, in order (`None` with job reuse off).
    fn free_pool_jobs(&self) -> Option<impl Iterator<Item = String> + '_> {
        if self.options.no_job_reuse {
            return None;
        }
        let dead = self
            .pool_dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (source, sink) = (
            self.options.source_bucket.clone(),
            self.options.destination_bucket.clone(),
        );
        let migration = migration_key(&self.options);
        Some(
            (0..)
                .map(move |k| transfer::pool_job_name(&source, &sink, &migration, k))
                .filter(move |name| !self.pool_busy.contains_key(name) && !dead.contains(name)),
        )
    }

    /// Starts `row` on the reusable job `job`: its include prefix patched to
    /// the row's (`transferJobs.patch`: no create quota), then run. Made on
    /// first use, with no schedule, so it runs only when asked. A crash
    /// between patch and run leaves a free job; between run and the state
    /// write, an operation the next sync adopts for the prefix.
    async fn start_pooled(&self, row: &PrefixJob, job: &str) -> Result<String, StartError> {
        let spec = self.transfer_spec(&row.prefix);
        let project = &self.project_id;
        let refused = |step: Step, error: TransferError| match classify_refusal(step, job, error) {
            Refusal::Permanent(error) | Refusal::LookAtJob(error) => StartError::Refused {
                job: job.to_string(),
                error,
            },
            Refusal::Transient(e) => StartError::Transient(e),
        };
        let dead = |why: &str| {
            tracing::warn!(job, "reusable job {why}: another one is used from now on");
            self.pool_dead
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.to_string());
            StartError::Transient(TransferError::NotFound(format!(
                "reusable job {job} {why}; another one is used from now on"
            )))
        };
        if row.status == Status::Error {
            tracing::info!(prefix = %row.prefix, previous = ?row.job_name, attempt = self.attempts.get(&row.prefix).copied().unwrap_or(0) + 1, "retrying a failed prefix");
        }
        let reusable_description = format!(
            "Reusable job of STS Job Manager (gs://{} -> gs://{})",
            self.options.source_bucket, self.options.destination_bucket
        );
        let create = || async {
            let mut created = self.new_job(job.to_string(), &row.prefix);
            created.schedule = None;
            created.description = reusable_description.clone();
            self.transfer.create_job(&created).await
        };
        // A patch refused: the job is read to tell a job someone deleted or
        // disabled (whatever code STS answers that with) from a refusal.
        let patch_refused = |error: TransferError| async move {
            if is_transient(&error) {
                return StartError::Transient(error);
            }
            match self.job_status(job).await {
                Ok(None | Some(JobStatus::Deleted)) => dead("was deleted"),
                Ok(Some(JobStatus::Disabled)) => dead("was disabled"),
                Ok(Some(_)) => refused(Step::Create, error),
                Err(e) => StartError::Transient(e),
            }
        };
        let known = self
            .pool_known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(job);
        // Known to exist: patched. Not seen yet: created with this prefix's
        // spec at once (one call, not a patch answered 404 then a create).
        // A create answered ALREADY_EXISTS (ours from before, or a create
        // whose reply was lost and was retried) is patched instead.
        let mut patch = known;
        if !known {
            match create().await {
                Ok(_) => {}
                Err(TransferError::AlreadyExists(_)) => patch = true,
                Err(e) => return Err(refused(Step::Create, e)),
            }
        }
        if patch
            && !self
                .pool_verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(job)
        {
            // Once per job and process, before this manager patches it: a
            // job someone else changed (a schedule, other buckets, another
            // description) or disabled is left alone, and another is used.
            match self.transfer.get_job(job, project).await {
                Ok(found) => {
                    if let Some(why) =
                        foreign_pool_job(&found, &self.options, &reusable_description)
                    {
                        return Err(dead(&why));
                    }
                }
                Err(TransferError::Unsupported(_)) => {}
                Err(TransferError::NotFound(_)) => {}
                Err(e) if is_transient(&e) => return Err(StartError::Transient(e)),
                Err(e) => return Err(refused(Step::Create, e)),
            }
            self.pool_verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.to_string());
        }
        if patch {
            match self.transfer.patch_transfer_spec(job, project, &spec).await {
                Ok(()) => {}
                // A service that cannot patch: one job per prefix, as before.
                Err(TransferError::Unsupported(_)) => return self.start_job(row).await,
                Err(TransferError::NotFound(_)) if known => match create().await {
                    Ok(_) => {}
                    Err(TransferError::AlreadyExists(_)) => return Err(dead("was deleted")),
                    Err(e) => return Err(refused(Step::Create, e)),
                },
                Err(e) => return Err(patch_refused(e).await),
            }
        }
        self.pool_known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.to_string());
        let error = match self.transfer.run_job_for_operation(job, project).await {
            Ok(Some(operation)) => return Ok(operation),
            Ok(None) => return Ok(job.to_string()),
            Err(e) => match classify_refusal(Step::Run, job, e) {
                Refusal::LookAtJob(e) => e,
                Refusal::Permanent(e) => return Err(refused(Step::Run, e)),
                Refusal::Transient(e) => return Err(StartError::Transient(e)),
            },
        };
        match self
            .look_at_refusal(job, &row.prefix, error)
            .await
            .map_err(StartError::Transient)?
        {
            RunRefusal::Follow(operation) => Ok(operation),
            RunRefusal::Busy(why) => Err(StartError::Transient(TransferError::FailedPrecondition(
                format!("reusable job {job} is busy: {why}"),
            ))),
            RunRefusal::Gone(why) => Err(dead(why)),
            RunRefusal::Refused(error) => Err(StartError::Refused {
                job: job.to_string(),
                error,
            }),
        }
    }

    /// Before the first start: both buckets exist, where the backend can
    /// tell. A missing one is named, with the option that sets it.
    async fn check_buckets(&mut self) -> Result<(), ManagerError> {
        for (option, bucket) in [
            ("--source-bucket", &self.options.source_bucket),
            ("--destination-bucket", &self.options.destination_bucket),
        ] {
            match self.transfer.bucket_exists(bucket).await {
                Ok(Some(false)) => {
                    return Err(ManagerError::Preflight(format!(
                        "bucket gs://{bucket} ({option}) does not exist: check its name, or create it; \
                         nothing was started"
                    )))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("could not check whether gs://{bucket} exists: {e}"),
            }
        }
        self.checked_buckets = true;
        Ok(())
    }

    /// Starts the prefix's job: the same name every time, so a repeat after a
    /// crash answers ALREADY_EXISTS; a retry runs the existing job again.
    async fn start_job(&self, row: &PrefixJob) -> Result<String, StartError> {
        let name = job_name_for_prefix(
            &self.options.source_bucket,
            &self.options.destination_bucket,
            &row.prefix,
        );
        if row.status == Status::Error {
            tracing::info!(prefix = %row.prefix, previous = ?row.job_name, attempt = self.attempts.get(&row.prefix).copied().unwrap_or(0) + 1, "retrying a failed prefix");
        }
        let refused = |step: Step, error: TransferError| classify_refusal(step, &name, error);
        let outcome = if row.job_name.is_some() {
            // A previous attempt exists: run its job again (no create quota).
            match self.transfer.run_job(&name, &self.project_id).await {
                Err(TransferError::NotFound(_)) => self
                    .create_job(name.clone(), &row.prefix)
                    .await
                    .map(|_| ())
                    .map_err(|e| refused(Step::Create, e)),
                other => other.map_err(|e| refused(Step::Run, e)),
            }
        } else {
            match self.create_job(name.clone(), &row.prefix).await {
                Err(TransferError::AlreadyExists(_)) => {
                    // Ours: a create whose reply was lost (its one-time
                    // start is coming or came), or a job of this prefix's
                    // earlier life (run again). Told apart by its newest
                    // operation, never by running it blind.
                    match self.newest_operation(&name).await {
                        Ok(Some(op))
                            if op.status.is_active()
                                || op.start_time.is_some_and(|t| t >= row.last_updated) =>
                        {
                            tracing::info!(prefix = %row.prefix, "job {name} already exists and ran for this start; following {}", op.name);
                            return Ok(op.name);
                        }
                        Ok(None) => {
                            tracing::info!(prefix = %row.prefix, "job {name} already exists with no operation yet (a create whose reply was lost); following it");
                            return Ok(name);
                        }
                        Ok(Some(_)) => {
                            tracing::info!(prefix = %row.prefix, "job {name} already exists (an earlier run created it); running it");
                            self.transfer
                                .run_job(&name, &self.project_id)
                                .await
                                .map_err(|e| refused(Step::Run, e))
                        }
                        Err(e) => Err(Refusal::Transient(e)),
                    }
                }
                other => other.map(|_| ()).map_err(|e| refused(Step::Create, e)),
            }
        };
        let explained = match outcome {
            Ok(()) => return Ok(name),
            Err(Refusal::Permanent(error)) => return Err(StartError::Refused { job: name, error }),
            Err(Refusal::Transient(error)) => return Err(StartError::Transient(error)),
            Err(Refusal::LookAtJob(error)) => self
                .look_at_refusal(&name, &row.prefix, error)
                .await
                .map_err(StartError::Transient)?,
        };
        match explained {
            // A crash after the start, or a list that lags: the row follows
            // that operation by its own name.
            RunRefusal::Follow(operation) => Ok(operation),
            RunRefusal::Busy(why) => Err(StartError::Transient(TransferError::FailedPrecondition(
                why,
            ))),
            RunRefusal::Refused(error) => Err(StartError::Refused { job: name, error }),
            // Deleted or disabled by someone else: a new name for a new attempt.
            RunRefusal::Gone(why) => {
                tracing::warn!(prefix = %row.prefix, "{name} {why}; starting the prefix on a new job");
                let fresh = format!("{name}-{}", Utc::now().timestamp());
                match self.create_job(fresh.clone(), &row.prefix).await {
                    Ok(_) => Ok(fresh),
                    Err(e) => Err(match classify_refusal(Step::Create, &fresh, e) {
                        Refusal::Permanent(e) | Refusal::LookAtJob(e) => StartError::Refused {
                            job: fresh,
                            error: e,
                        },
                        Refusal::Transient(e) => StartError::Transient(e),
                    }),
                }
            }
        }
    }

    /// The job's newest operation: its one operation that has not ended,
    /// if it has one. One small list request, whatever the job ran before
    /// (QUEUED and SUSPENDING are not filter values: checked here).
    async fn newest_operation(
        &self,
        job_name: &str,
    ) -> Result<Option<crate::model::TransferOperation>, TransferError> {
        Ok(self
            .transfer
            .list_operations(&OperationFilter {
                project_id: self.project_id.clone(),
                job_names: vec![job_name.to_string()],
                limit: Some(1),
                ..OperationFilter::default()
            })
            .await?
            .into_iter()
            .next())
    }

    /// The job's status as STS has it now (`None`: not found); a service
    /// that cannot read jobs answers "enabled".
    async fn job_status(&self, job_name: &str) -> Result<Option<JobStatus>, TransferError> {
        match self.transfer.get_job(job_name, &self.project_id).await {
            Ok(job) => Ok(Some(job.status)),
            Err(TransferError::NotFound(_)) => Ok(None),
            Err(TransferError::Unsupported(_)) => Ok(Some(JobStatus::Enabled)),
            Err(e) => Err(e),
        }
    }

    /// STS refused to run `job_name` for `prefix`: looks at the job and its
    /// newest operation to tell what that meant ([`explain_run_refusal`]).
    async fn look_at_refusal(
        &self,
        job_name: &str,
        prefix: &str,
        error: TransferError,
    ) -> Result<RunRefusal, TransferError> {
        let newest = self.newest_operation(job_name).await?;
        let status = if newest.as_ref().is_some_and(|op| op.status.is_active()) {
            Some(JobStatus::Enabled)
        } else {
            self.job_status(job_name).await?
        };
        let explained = explain_run_refusal(prefix, newest.as_ref(), status, error);
        if let RunRefusal::Refused(e) = &explained {
            tracing::warn!(
                prefix,
                job = job_name,
                "run refused with no operation under way and the job enabled: {e}"
            );
        }
        Ok(explained)
    }

    /// Runs an overdue one-time job again, looking first: whether STS
    /// refuses a run while an operation is under way is undocumented, so an
    /// operation found under way is followed rather than doubled. `None`:
    /// the job is gone (the prefix is queued for a new one).
    async fn run_again(&self, job: &str, prefix: &str) -> Result<Option<String>, TransferError> {
        if let Some(op) = self.newest_operation(job).await? {
            if op.status.is_active() {
                return Ok(Some(op.name));
            }
        }
        let error = match self.transfer.run_job(job, &self.project_id).await {
            Ok(()) => return Ok(Some(job.to_string())),
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => e,
        };
        match self.look_at_refusal(job, prefix, error).await? {
            RunRefusal::Follow(operation) => Ok(Some(operation)),
            RunRefusal::Gone(_) => Ok(None),
            RunRefusal::Busy(why) => Err(TransferError::FailedPrecondition(why)),
            RunRefusal::Refused(error) => Err(error),
        }
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
            // A reusable job may carry another prefix by now: never run it
            // again for this one; the prefix is queued for a new start.
            let reusable = transfer::is_pool_job(job);
            if reusable {
                tracing::warn!(prefix = %row.prefix, "{job} has shown no operation for this prefix since {}; queueing it again", row.last_updated);
            } else {
                tracing::warn!(prefix = %row.prefix, "{job} has shown no operation since {}; running it again", row.last_updated);
            }
            let restarted = if reusable {
                Ok(None)
            } else {
                self.run_again(job, &row.prefix).await
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
            changes.push_update(JobUpdate {
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

    fn transfer_spec(&self, prefix: &str) -> TransferSpec {
        let bucket = |b: &str| {
            Some(GcsData {
                bucket_name: b.to_string(),
                path: String::new(),
            })
        };
        TransferSpec {
            gcs_data_source: bucket(&self.options.source_bucket),
            gcs_data_sink: bucket(&self.options.destination_bucket),
            object_conditions: Some(ObjectConditions {
                include_prefixes: vec![prefix.to_string()],
            }),
            transfer_options: Some(TransferOptions {
                overwrite_objects_already_existing_in_sink: self.options.overwrite_dest_objects,
            }),
        }
    }

    fn new_job(&self, name: String, prefix: &str) -> TransferJob {
        TransferJob {
            name,
            description: job_description(prefix),
            project_id: self.project_id.clone(),
            transfer_spec: self.transfer_spec(prefix),
            schedule: Some(Schedule::one_time(Date::today_utc())),
            status: JobStatus::Enabled,
            latest_operation_name: None,
            creation_time: None,
            deletion_time: None,
        }
    }

    fn finish_summary(&self, summary: &mut CycleSummary) {
        summary.counts = count_statuses(&self.rows);
        if let Some(done) = summary.counts.get_mut(Status::Done.as_str()) {
            *done += self.done_count;
        }
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
        summary.done = pending == 0 && c["running"] == 0;
    }
}

/// Which call of a start STS answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Run,
}

/// What a refusal from STS means for a start.
#[derive(Debug)]
pub enum Refusal {
    /// `run` refused for a reason STS does not document (an operation under
    /// way, a job deleted or disabled by someone else, a permission): the
    /// job and its newest operation are looked at to decide
    /// ([`explain_run_refusal`]).
    LookAtJob(TransferError),
    /// STS will answer the same until a person acts (a grant, a bucket
    /// name, the request): the prefix goes to `error`.
    Permanent(TransferError),
    /// Worth trying again later (429/5xx after retries, network).
    Transient(TransferError),
}

/// Why a reusable job is not as this manager leaves it (someone else's
/// schedule, buckets or description, or not enabled), if it is not. Pure.
pub fn foreign_pool_job(job: &TransferJob, options: &Options, description: &str) -> Option<String> {
    if job.status != JobStatus::Enabled {
        return Some(format!("is {}", job.status.name().to_lowercase()));
    }
    if job
        .schedule
        .as_ref()
        .is_some_and(|s| s.schedule_start_date.is_some())
    {
        return Some("carries a schedule someone else set; it is left alone".into());
    }
    if job.transfer_spec.source_bucket() != Some(options.source_bucket.as_str())
        || job.transfer_spec.sink_bucket() != Some(options.destination_bucket.as_str())
    {
        return Some("copies between other buckets now; it is left alone".into());
    }
    if job.description != description {
        return Some(format!(
            "has someone else's description ({:?}); it is left alone",
            job.description
        ));
    }
    None
}

/// Worth trying again later: 429, 5xx, the network (after the client's own
/// retries); every other refusal is an answer.
pub fn is_transient(error: &TransferError) -> bool {
    match error {
        TransferError::PermissionDenied(_)
        | TransferError::InvalidArgument(_)
        | TransferError::FailedPrecondition(_)
        | TransferError::NotFound(_)
        | TransferError::AlreadyExists(_) => false,
        TransferError::Api { http, .. } => !(400..=499).contains(http) || *http == 429,
        _ => true,
    }
}

/// What a refused `run` meant, once the job was looked at.
#[derive(Debug)]
pub enum RunRefusal {
    /// The job's operation for this prefix is under way: follow it.
    Follow(String),
    /// The job runs another prefix's operation: try later (or elsewhere).
    Busy(String),
    /// Someone deleted or disabled the job: a new job is needed.
    Gone(&'static str),
    /// Nothing explains it: the refusal stands, named, and counts.
    Refused(TransferError),
}

/// Decides what a refused `run` of a job for `prefix` means from the job's
/// newest operation and its status (`None`: the job is not found). Pure.
pub fn explain_run_refusal(
    prefix: &str,
    newest: Option<&crate::model::TransferOperation>,
    job: Option<JobStatus>,
    error: TransferError,
) -> RunRefusal {
    if let Some(op) = newest.filter(|op| op.status.is_active()) {
        return if op
            .transfer_spec
            .include_prefixes()
            .iter()
            .any(|p| p == prefix)
        {
            RunRefusal::Follow(op.name.clone())
        } else {
            RunRefusal::Busy(format!(
                "{} is running {} for other prefixes",
                op.transfer_job_name, op.name
            ))
        };
    }
    match job {
        None | Some(JobStatus::Deleted) => RunRefusal::Gone("was deleted"),
        Some(JobStatus::Disabled) => RunRefusal::Gone("was disabled"),
        Some(_) => RunRefusal::Refused(error),
    }
}

/// How a start failed.
#[derive(Debug)]
pub enum StartError {
    Refused { job: String, error: TransferError },
    Transient(TransferError),
}

/// Maps STS's answer to one step of a start to what comes next. Pure.
pub fn classify_refusal(step: Step, job: &str, error: TransferError) -> Refusal {
    let _ = job;
    match (step, error) {
        // Which code STS answers a run of a busy, deleted or disabled job
        // is undocumented: never guessed from the code.
        (Step::Run, e) if !is_transient(&e) => Refusal::LookAtJob(e),
        // A name in use on create is decided by its caller; here it is
        // only worth another try.
        (_, e @ TransferError::AlreadyExists(_)) => Refusal::Transient(e),
        // On create, STS answers FAILED_PRECONDITION when it cannot see a
        // bucket, NOT_FOUND for a missing one.
        (_, e) if !is_transient(&e) => Refusal::Permanent(e),
        (_, e) => Refusal::Transient(e),
    }
}

/// The outcome of one chunk's write; a write task that panicked or was
/// cancelled is a store error, not a crash of the manager.
async fn finish_write(
    write: tokio::task::JoinHandle<Result<(), StoreError>>,
) -> Result<(), ManagerError> {
    match write.await {
        Ok(result) => Ok(result?),
        Err(e) => Err(StoreError::WriteTask(e.to_string()).into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(prefix: &str, status: &str) -> crate::model::TransferOperation {
        crate::model::TransferOperation {
            name: "transferOperations/op".into(),
            transfer_job_name: "transferJobs/j".into(),
            status: crate::model::OperationStatus::from_name(status),
            transfer_spec: TransferSpec {
                object_conditions: Some(crate::model::ObjectConditions {
                    include_prefixes: vec![prefix.into()],
                }),
                ..TransferSpec::default()
            },
            project_id: "p".into(),
            start_time: None,
            end_time: None,
            counters: Default::default(),
            error_breakdowns: vec![],
        }
    }

    #[test]
    fn a_refused_run_is_explained_by_looking_not_by_its_code() {
        let refusal = || TransferError::FailedPrecondition("no".into());
        let explain = |newest: Option<&crate::model::TransferOperation>, job| {
            explain_run_refusal("a/", newest, job, refusal())
        };
        // Under way for this prefix (any of the four active statuses): followed.
        for status in ["QUEUED", "IN_PROGRESS", "PAUSED", "SUSPENDING"] {
            let op = operation("a/", status);
            assert!(
                matches!(explain(Some(&op), Some(JobStatus::Enabled)), RunRefusal::Follow(n) if n == "transferOperations/op")
            );
        }
        // Under way for another prefix: busy, not an error of this prefix.
        let other = operation("b/", "IN_PROGRESS");
        assert!(matches!(
            explain(Some(&other), Some(JobStatus::Enabled)),
            RunRefusal::Busy(_)
        ));
        // Nothing under way: the job's state decides.
        let ended = operation("a/", "SUCCESS");
        assert!(matches!(explain(Some(&ended), None), RunRefusal::Gone(_)));
        assert!(matches!(
            explain(None, Some(JobStatus::Deleted)),
            RunRefusal::Gone("was deleted")
        ));
        assert!(matches!(
            explain(None, Some(JobStatus::Disabled)),
            RunRefusal::Gone("was disabled")
        ));
        // An enabled job, nothing under way: the refusal stands (named, counted).
        assert!(matches!(
            explain(Some(&ended), Some(JobStatus::Enabled)),
            RunRefusal::Refused(TransferError::FailedPrecondition(_))
        ));
        assert!(is_transient(&TransferError::Api {
            http: 429,
            status: "RESOURCE_EXHAUSTED".into(),
            message: String::new()
        }));
        assert!(!is_transient(&refusal()));
    }

    #[test]
    fn a_pool_job_someone_else_changed_is_left_alone() {
        let options = Options {
            source_bucket: "src".into(),
            destination_bucket: "dst".into(),
            ..Options::default()
        };
        let bucket = |b: &str| {
            Some(crate::model::GcsData {
                bucket_name: b.into(),
                path: String::new(),
            })
        };
        let ours = TransferJob {
            name: "transferJobs/sts-jm-pool-x-0000".into(),
            description: "mine".into(),
            project_id: "p".into(),
            transfer_spec: TransferSpec {
                gcs_data_source: bucket("src"),
                gcs_data_sink: bucket("dst"),
                ..TransferSpec::default()
            },
            schedule: Some(crate::model::Schedule {
                schedule_start_date: None,
                schedule_end_date: None,
            }),
            status: JobStatus::Enabled,
            latest_operation_name: None,
            creation_time: None,
            deletion_time: None,
        };
        assert_eq!(foreign_pool_job(&ours, &options, "mine"), None);
        let mut scheduled = ours.clone();
        scheduled.schedule = Some(crate::model::Schedule::one_time(
            crate::model::Date::today_utc(),
        ));
        assert!(foreign_pool_job(&scheduled, &options, "mine")
            .unwrap()
            .contains("schedule"));
        let mut moved = ours.clone();
        moved.transfer_spec.gcs_data_sink = bucket("elsewhere");
        assert!(foreign_pool_job(&moved, &options, "mine")
            .unwrap()
            .contains("other buckets"));
        assert!(foreign_pool_job(&ours, &options, "theirs")
            .unwrap()
            .contains("description"));
        let mut disabled = ours;
        disabled.status = JobStatus::Disabled;
        assert_eq!(
            foreign_pool_job(&disabled, &options, "mine").as_deref(),
            Some("is disabled")
        );
    }

    #[test]
    fn job_descriptions_fit_sts_limit_for_any_prefix() {
        assert_eq!(job_description("a/"), "Created via STS Job Manager - a/");
        for prefix in ["x".repeat(1024), "é".repeat(512), "日".repeat(341)] {
            let description = job_description(&prefix);
            assert!(
                description.len() <= MAX_DESCRIPTION_BYTES,
                "{}",
                description.len()
            );
            assert!(description.ends_with('…'));
        }
    }

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
