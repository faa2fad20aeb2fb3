//! Where the job and history tables live. The manager sees only this trait.

pub mod bigquery;
pub mod crash;
pub mod sqlite;

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use crate::model::ChangeSet;
use crate::model::{HistoryRow, PrefixJob, Status};
use crate::records::{
    FailedObject, Pass, PassPrefix, PendingManifest, PlannedPrefix, Verification,
};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "'{0}' is not a plain table name or dataset name (letters, digits and '_', starting with a letter or '_')"
    )]
    InvalidIdentifier(String),
    #[error("table '{0}' does not exist: run sts-prepare-tables first")]
    MissingTable(String),
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "the state database is corrupt ({0}): nothing was read from it or written to it; \
         restore the file from a backup (or recreate the tables with sts-prepare-tables and \
         take the migration over from STS's own record)"
    )]
    Corrupt(String),
    #[error("the state database's disk is full ({0}): nothing of this step was written; free space, then start again")]
    DiskFull(String),
    #[error("the state database cannot be written ({0}): it or its directory is read-only; make it writable, then start again")]
    ReadOnly(String),
    #[error("state file {0} does not exist (nothing was created): check the path, or create it with sts-prepare-tables")]
    Missing(String),
    #[error(
        "state database {0} was deleted or replaced while in use; stopping so that no state is \
         written where nobody will read it (restore the file, then start again)"
    )]
    FileGone(String),
    #[error("state table holds an invalid row: {0}")]
    CorruptRow(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "'{0}' is not a valid Google Cloud project id (6-30 lowercase letters, digits and '-', \
         starting with a letter)"
    )]
    InvalidProject(String),
    #[error(
        "no Google Cloud project for BigQuery: pass --project, set GOOGLE_CLOUD_PROJECT, \
         or use credentials that name one"
    )]
    NoProject,
    #[error("BigQuery credentials: {0}")]
    Auth(String),
    /// The task writing a chunk of changes ended without an answer.
    #[error("writing a chunk of changes failed: {0}")]
    WriteTask(String),
    /// BigQuery answered with an HTTP error.
    #[error("BigQuery answered HTTP {code} ({reason}): {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// A statement BigQuery accepted but could not run.
    #[error("BigQuery statement failed ({reason}): {message}")]
    Statement { reason: String, message: String },
    #[error("BigQuery at {endpoint} could not be reached: {message}")]
    Unreachable { endpoint: String, message: String },
    /// A transient error that outlasted the retry policy.
    #[error("BigQuery still failing after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<StoreError>,
    },
}

/// SQLite's answers that mean something to a person are named: a corrupt
/// file, a full disk, a read-only file.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(error.to_string())
            }
            Some(ErrorCode::DiskFull) => StoreError::DiskFull(error.to_string()),
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(error.to_string()),
            _ => StoreError::Sqlite(error),
        }
    }
}

impl StoreError {
    /// The HTTP status BigQuery answered, when it answered one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            StoreError::Api { code, .. } => Some(*code),
            StoreError::RetriesExhausted { last, .. } => last.http_status(),
            _ => None,
        }
    }
}

/// What loading prefixes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub inserted: usize,
    pub already_present: usize,
}

/// The job table: every prefix and its status, the queue a manager starts
/// from, and the one-transaction writes of each step.
#[async_trait]
pub trait JobTable: Send + Sync {
    /// Creates the tables when missing; leaves existing ones alone.
    async fn prepare(&self) -> Result<(), StoreError>;
    /// Adds prefixes as `waiting`, all or none; prefixes already present stay.
    async fn load_prefixes(&self, prefixes: &[String]) -> Result<LoadReport, StoreError>;
    async fn read_jobs(&self) -> Result<Vec<PrefixJob>, StoreError>;
    /// The rows not `done` (sorted by prefix) and the number of rows in all:
    /// what a manager cycle needs, at a cost that follows the work left.
    async fn read_unfinished(&self) -> Result<(Vec<PrefixJob>, usize), StoreError>;
    /// Rows per status, every status present (0 included): one aggregate,
    /// never the rows themselves.
    async fn count_by_status(&self) -> Result<StatusCounts, StoreError> {
        let mut counts = StatusCounts::default();
        for job in self.read_jobs().await? {
            counts.add(job.status, 1);
        }
        Ok(counts)
    }
    /// The rows in flight or failed (`running`, `paused`, `error`), sorted
    /// by prefix: what a steady manager cycle follows. Waiting rows are
    /// asked for a few at a time ([`StateStore::next_waiting`]), so a
    /// cycle's cost follows the work under way, not the work queued.
    async fn read_active(&self) -> Result<Vec<PrefixJob>, StoreError> {
        let (mut rows, _) = self.read_unfinished().await?;
        rows.retain(|r| r.status != Status::Waiting);
        Ok(rows)
    }
    /// Up to `limit` waiting rows in start order, each with its planned
    /// bytes (0 when not planned): the largest planned first, then table
    /// (prefix) order.
    async fn next_waiting(&self, limit: usize) -> Result<Vec<(PrefixJob, u64)>, StoreError>;
    /// The rows of these prefixes that exist, sorted by prefix.
    async fn read_prefixes(&self, prefixes: &[String]) -> Result<Vec<PrefixJob>, StoreError> {
        let wanted: std::collections::HashSet<&str> = prefixes.iter().map(String::as_str).collect();
        let mut rows = self.read_jobs().await?;
        rows.retain(|r| wanted.contains(r.prefix.as_str()));
        Ok(rows)
    }
    /// For every prefix now in `error`: its failures (history rows in
    /// `error`) since it was last queued (its latest history row in
    /// `waiting` with no job name: a load or a requeue). One aggregate query.
    async fn failure_counts(&self) -> Result<std::collections::HashMap<String, u32>, StoreError>;
    /// Writes one step's changes atomically, in a constant number of statements.
    async fn apply(&self, changes: &ChangeSet) -> Result<(), StoreError>;
    /// Statements sent to the backend so far (for benchmarks and tests).
    fn statements_issued(&self) -> u64;
}

/// The history table as analysis reads it: whole, scanned a row at a time,
/// or one snapshot per prefix or operation.
#[async_trait]
pub trait HistoryReads: JobTable {
    async fn read_history(&self) -> Result<Vec<HistoryRow>, StoreError>;
    /// The latest history row holding operation results of every prefix of
    /// the job table (its current operation's last snapshot), in any order.
    /// Stores override this to read one row per prefix instead of the whole
    /// history (`sts-status` at a million prefixes).
    async fn latest_snapshots(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let jobs = self.read_jobs().await?;
        let history = self.read_history().await?;
        Ok(latest_snapshots_in(&jobs, &history))
    }
    /// For each `(prefix, t)`, the latest history row of that prefix holding
    /// operation results with a timestamp before `t`, when there is one.
    async fn snapshots_before(
        &self,
        requests: &[(String, DateTime<Utc>)],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        Ok(snapshots_before_in(&self.read_history().await?, requests))
    }
    /// What `sts-status` reads, from a store that folds its history as it
    /// writes it (`crate::figures::Fold`): the done prefixes whose latest
    /// attempt reports no failures and ended at or before `quiet_before`,
    /// summed, and every other prefix with its fold. None: this store does
    /// not fold (or has not yet), so the caller reads snapshots instead.
    async fn status_view(
        &self,
        quiet_before: DateTime<Utc>,
    ) -> Result<Option<crate::figures::StatusView>, StoreError> {
        let _ = quiet_before;
        Ok(None)
    }
    /// The figures summed over every prefix with history, from a store that
    /// folds its history (as `status_view`), in one read whatever the
    /// migration's size: the manager's progress. None: this store does not.
    async fn figures_total(&self) -> Result<Option<crate::figures::Figures>, StoreError> {
        Ok(None)
    }
    /// How often the manager may read `figures_total`: every sync from a
    /// store that keeps the sum (SQLite), less often from one that
    /// aggregates its history for it (BigQuery: each read scans the table).
    fn figures_every(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Hands every history row to `visit`, one at a time, in no particular
    /// order, so a caller that keeps only a digest of each row never holds
    /// the whole history (notebooks' timelines at a million rows).
    async fn scan_history(
        &self,
        visit: &mut (dyn FnMut(HistoryRow) + Send),
    ) -> Result<(), StoreError> {
        for row in self.read_history().await? {
            visit(row);
        }
        Ok(())
    }
    /// The latest history row of every operation whose results list
    /// failures (errorBreakdowns), in any order.
    ///
    /// By default folded over [`StateStore::scan_history`]: per operation,
    /// its latest row's time, and the row itself only while it lists
    /// failures; never the whole history at once.
    async fn failure_snapshots(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let mut latest: std::collections::HashMap<String, (DateTime<Utc>, Option<HistoryRow>)> =
            Default::default();
        self.scan_history(&mut |row| {
            if row.operation_results.is_none() {
                return;
            }
            let key = row.job_name.clone().unwrap_or_else(|| row.prefix.clone());
            // Equal times: the row scanned later (inserted later) wins.
            if latest.get(&key).is_some_and(|(t, _)| row.timestamp < *t) {
                return;
            }
            let failing = row
                .operation_results
                .as_deref()
                .is_some_and(|r| r.contains("\"errorBreakdowns\""));
            latest.insert(key, (row.timestamp, failing.then_some(row)));
        })
        .await?;
        Ok(latest.into_values().filter_map(|(_, row)| row).collect())
    }
}

/// The job table's lease: one manager at a time. Stores without leases
/// always grant it.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes or renews the job table's lease for `holder` until
    /// `now + ttl`, unless another live holder has it. Stores without
    /// leases always grant it.
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError> {
        let _ = (holder, ttl);
        Ok(Lease::Acquired)
    }
    /// Gives the lease up (a clean stop), if `holder` has it.
    async fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        let _ = holder;
        Ok(())
    }
}

/// The tables beside the job table, created on first use: the plan
/// (`{job_table}_plan`), the verification results
/// (`{job_table}_verification`) and the passes (`{job_table}_passes`,
/// `{job_table}_pass_prefixes`).
#[async_trait]
pub trait SideTables: Send + Sync {
    /// Records each prefix's planned objects and bytes in the plan table
    /// (`{job_table}_plan`, created on first use); a prefix planned again
    /// gets its new figures.
    async fn save_plan(&self, planned: &[PlannedPrefix]) -> Result<(), StoreError> {
        let _ = planned;
        Err(StoreError::Unsupported(
            "this state store keeps no plan table".into(),
        ))
    }
    /// The plan table (planned objects and bytes per prefix); empty when
    /// nothing was planned.
    async fn read_plan(&self) -> Result<Vec<PlannedPrefix>, StoreError> {
        Ok(Vec::new())
    }
    /// Records verification results (`{job_table}_verification`, created on
    /// first use), one row per prefix: the latest check replaces the last.
    async fn save_verifications(&self, rows: &[Verification]) -> Result<(), StoreError> {
        let _ = rows;
        Err(StoreError::Unsupported(
            "this state store keeps no verification table".into(),
        ))
    }
    /// The verification table; empty when nothing was verified.
    async fn read_verifications(&self) -> Result<Vec<Verification>, StoreError> {
        Ok(Vec::new())
    }
    /// Records failed objects (`{job_table}_failed_objects`, created on
    /// first use): one row per operation, object and action; a row already
    /// there is kept (transfer logs are read more than once).
    async fn save_failed_objects(&self, rows: &[FailedObject]) -> Result<(), StoreError> {
        let _ = rows;
        Err(StoreError::Unsupported(
            "this state store keeps no failed-objects table".into(),
        ))
    }
    /// The failed-objects table, by prefix, operation and object; empty
    /// when none was recorded.
    async fn read_failed_objects(&self) -> Result<Vec<FailedObject>, StoreError> {
        Ok(Vec::new())
    }
    /// Rows of the failed-objects table in all (0 without the table).
    async fn count_all_failed_objects(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Rows of the failed-objects table per operation, for these
    /// operations (those with none are absent).
    async fn count_failed_objects(
        &self,
        operations: &[String],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let _ = operations;
        Ok(HashMap::new())
    }

    /// Records a pass (`{job_table}_passes`, created on first use): a pass
    /// recorded again gets its new times and figures.
    async fn save_pass(&self, pass: &Pass) -> Result<(), StoreError> {
        let _ = pass;
        Err(StoreError::Unsupported(
            "this state store keeps no pass table".into(),
        ))
    }
    /// The passes, by number; empty when no pass was recorded.
    async fn read_passes(&self) -> Result<Vec<Pass>, StoreError> {
        Ok(Vec::new())
    }
    /// Records each prefix's pass (`{job_table}_pass_prefixes`, created on
    /// first use): one row per prefix, the latest pass replacing the last.
    async fn save_pass_prefixes(&self, rows: &[PassPrefix]) -> Result<(), StoreError> {
        let _ = rows;
        Err(StoreError::Unsupported(
            "this state store keeps no pass table".into(),
        ))
    }
    /// Every prefix's pass; empty when no pass was recorded.
    async fn read_pass_prefixes(&self) -> Result<Vec<PassPrefix>, StoreError> {
        Ok(Vec::new())
    }

    /// Requeues (`changes`: the prefixes back to `waiting`, with their
    /// history rows) and records each prefix's pending manifest
    /// (`{job_table}_manifests`, created on first use), replacing one it
    /// had. All or nothing where the store has transactions; where it has
    /// none the manifests are written last, so a crash between leaves a
    /// plain requeue (the whole prefix runs again), never a manifest on a
    /// prefix that was not requeued.
    async fn requeue_with_manifests(
        &self,
        changes: &ChangeSet,
        manifests: &[PendingManifest],
    ) -> Result<(), StoreError> {
        let _ = (changes, manifests);
        Err(StoreError::Unsupported(
            "this state store keeps no manifest table".into(),
        ))
    }
    /// Drops pending manifests: of these prefixes, whatever their location
    /// (`None`: a plain requeue), or only the one at that location (a
    /// manifest run that succeeded). Nothing to do without the table.
    async fn clear_manifests(&self, which: &[(String, Option<String>)]) -> Result<(), StoreError> {
        let _ = which;
        Ok(())
    }
    /// The pending manifests, by prefix; empty without the table.
    async fn read_manifests(&self) -> Result<Vec<PendingManifest>, StoreError> {
        Ok(Vec::new())
    }
}

/// Everything a state store is: what the manager, the tools and the
/// analysis hold (`Arc<dyn StateStore>`). Implemented by any type that is
/// all four.
pub trait StateStore: JobTable + HistoryReads + LeaseStore + SideTables {}

impl<T: JobTable + HistoryReads + LeaseStore + SideTables> StateStore for T {}

/// Rows per status: every status present, 0 included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts([usize; Status::ALL.len()]);

impl StatusCounts {
    fn slot(status: Status) -> usize {
        Status::ALL.iter().position(|s| *s == status).unwrap_or(0)
    }
    pub fn get(&self, status: Status) -> usize {
        self.0[Self::slot(status)]
    }
    pub fn add(&mut self, status: Status, n: usize) {
        let slot = &mut self.0[Self::slot(status)];
        *slot = slot.saturating_add(n);
    }
    /// One row moved from `from` to `to`.
    pub fn moved(&mut self, from: Status, to: Status) {
        let slot = &mut self.0[Self::slot(from)];
        *slot = slot.saturating_sub(1);
        self.add(to, 1);
    }
    pub fn total(&self) -> usize {
        self.0.iter().fold(0usize, |a, b| a.saturating_add(*b))
    }
    /// By status name, every status present: what summaries show.
    pub fn by_name(&self) -> std::collections::BTreeMap<String, usize> {
        Status::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), self.get(*s)))
            .collect()
    }
}

/// `latest_snapshots` over rows already read (history oldest first).
pub fn latest_snapshots_in(jobs: &[PrefixJob], history: &[HistoryRow]) -> Vec<HistoryRow> {
    let known: std::collections::HashSet<&str> = jobs.iter().map(|j| j.prefix.as_str()).collect();
    let mut latest: std::collections::HashMap<&str, &HistoryRow> = Default::default();
    for row in history {
        if row.operation_results.is_some() && known.contains(row.prefix.as_str()) {
            latest.insert(&row.prefix, row);
        }
    }
    latest.into_values().cloned().collect()
}

/// `failure_snapshots` over rows already read (history oldest first): the
/// latest snapshot of each operation, kept when it lists failures.
pub fn failure_snapshots_in(history: &[HistoryRow]) -> Vec<HistoryRow> {
    let mut latest: std::collections::HashMap<&str, &HistoryRow> = Default::default();
    for row in history {
        if row.operation_results.is_some() {
            latest.insert(row.job_name.as_deref().unwrap_or(&row.prefix), row);
        }
    }
    latest
        .into_values()
        .filter(|row| {
            row.operation_results
                .as_deref()
                .is_some_and(|r| r.contains("\"errorBreakdowns\""))
        })
        .cloned()
        .collect()
}

/// `snapshots_before` over rows already read (history oldest first).
pub fn snapshots_before_in(
    history: &[HistoryRow],
    requests: &[(String, DateTime<Utc>)],
) -> Vec<HistoryRow> {
    let before: std::collections::HashMap<&str, DateTime<Utc>> =
        requests.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    let mut found: std::collections::HashMap<&str, &HistoryRow> = Default::default();
    for row in history {
        if row.operation_results.is_some()
            && before
                .get(row.prefix.as_str())
                .is_some_and(|t| row.timestamp < *t)
        {
            found.insert(&row.prefix, row);
        }
    }
    found.into_values().cloned().collect()
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    Acquired,
    HeldBy {
        holder: String,
        until: DateTime<Utc>,
    },
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// `host:pid:nonce`, unique per manager process.
pub fn lease_holder() -> String {
    let nonce = Utc::now().timestamp_nanos_opt().unwrap_or_default() % 1_000_000;
    format!("{}:{}:{nonce}", host_name(), std::process::id())
}

/// A holder on this machine whose process is gone (killed) can be taken
/// over at once instead of waiting its lease out. Only Linux tells (/proc);
/// elsewhere a holder is presumed alive until its lease expires.
pub fn holder_is_dead_here(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    host == host_name()
        && pid != std::process::id().to_string()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Table names are formatted into SQL, so only plain identifiers pass (a
/// subset of what SQLite and BigQuery accept for tables and datasets).
pub fn check_identifier(name: &str) -> Result<&str, StoreError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && name.len() <= 1024 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(name)
    } else {
        Err(StoreError::InvalidIdentifier(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::check_identifier;

    #[test]
    fn only_plain_identifiers_pass() {
        for good in ["sts_job", "_x", "T1"] {
            assert!(check_identifier(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "sts_job; DROP TABLE x",
            "a-b",
            "a.b",
            "`x`",
            "ta ble",
        ] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }
}
