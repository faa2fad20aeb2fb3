//! The manager cycle (SPEC 4): sync state, start jobs, publish the heartbeat.
//! It talks to a `StateStore` and a `TransferService` and never knows which.

mod cycle;
pub mod failed_objects;
pub mod failures;
mod jobs;
mod listing;
mod outcomes;
pub mod passes;
pub mod refusals;
pub mod round;
mod run;
pub mod stall;
mod starts;
mod summary;
pub mod sync;

pub use refusals::{
    classify_refusal, explain_run_refusal, foreign_pool_job, is_transient, Refusal, RunRefusal,
    StartError, Step,
};
pub use summary::{count_statuses, heartbeat_points};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::model::PrefixJob;
use crate::store::{StateStore, StoreError};
use crate::transfer::{TransferError, TransferService};
use failures::{Failure, Streak};
use stall::RunningSnapshot;

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

/// What the manager needs of the options: its buckets, its intervals, its
/// rules for starts and retries. Built once by the tool layer
/// (`crate::settings`); nothing below it reads the options themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerSettings {
    pub source_bucket: String,
    pub destination_bucket: String,
    /// Where the job table is kept, for messages (the lease's).
    pub job_table: String,
    /// What names this migration (see `settings::migration_key`): pool jobs
    /// hang on it, so two migrations between the same buckets never share one.
    pub migration: String,
    pub job_interval: f64,
    pub metrics_interval: f64,
    pub sleep_timeout: f64,
    pub reconcile_interval: f64,
    /// A running prefix whose counters have not moved for this long is
    /// stalled (`analysis::figures::stalled`, the rule sts-status applies).
    pub stall_after: f64,
    pub lease_seconds: f64,
    pub start_timeout: f64,
    pub max_concurrent_jobs: u32,
    pub max_retries: u32,
    pub no_retry_on_job_error: bool,
    pub allow_new_jobs_when_stalled: bool,
    pub overwrite_dest_objects: bool,
    pub publish_heartbeat: bool,
    pub exit_when_done: bool,
    pub no_job_reuse: bool,
    /// Jobs log failed objects to Cloud Logging (`loggingConfig`), and the
    /// sync reads them into the failed-objects table.
    pub object_logs: bool,
    /// Object metadata every transfer keeps (`--preserve`).
    pub preserve: crate::metadata::Preserve,
    /// Objects are deleted from the source once copied (`--move`).
    pub move_objects: bool,
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

impl Progress {
    /// From the figures (failed: failing now).
    pub fn of(f: &crate::figures::Figures) -> Self {
        Progress {
            objects_found: f.objects.found,
            objects_copied: f.objects.copied,
            objects_skipped: f.objects.skipped,
            objects_failed: f.objects.failed,
            bytes_found: f.bytes.found,
            bytes_copied: f.bytes.copied,
            bytes_skipped: f.bytes.skipped,
            bytes_failed: f.bytes.failed,
        }
    }
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
    /// Ended operations whose failed objects are not all read from the
    /// transfer logs yet (they hold `done`, for at most 15 min each).
    pub failed_objects_awaited: usize,
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
    settings: ManagerSettings,
    project_id: String,
    /// The rows in flight or failed (running, paused, error), by prefix;
    /// waiting and done rows stay in the store.
    rows: Vec<PrefixJob>,
    previous_running: HashMap<String, RunningSnapshot>,
    stalled: Vec<String>,
    progress: Progress,
    last_sync: Option<Instant>,
    last_job_round: Option<Instant>,
    last_reconcile: Option<Instant>,
    /// When the store's figures (`HistoryReads::figures_total`) were last
    /// asked for, read or not: a read that fails waits its turn like any
    /// other (on BigQuery each one scans the history table).
    last_figures: Option<Instant>,
    /// `progress` holds the store's figures (not the raw counters).
    has_figures: bool,
    /// The figures were asked for since the migration last ended: once
    /// at the end, not at every sync of a manager left running after it.
    figures_at_end: bool,
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
    /// Rows per status in the job table: read as one aggregate at each
    /// step's first sync, then kept by every change this manager makes.
    counts: crate::store::StatusCounts,
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
    /// Where failed objects are read from (`--no-object-logs`: nowhere).
    logs: Option<Arc<dyn crate::transfer::logs::TransferLogs>>,
    /// Ended operations whose failed objects are not all recorded yet.
    awaited_logs: BTreeMap<String, failed_objects::Awaited>,
    /// Operations whose failed objects were recorded (or given up on).
    settled_logs: HashSet<String>,
    log_patience: std::time::Duration,
    /// Where a read cut short by the page limit stopped: its operations and
    /// the next page's token.
    log_cursor: Option<(Vec<String>, String)>,
    /// The specs of the prefixes queued for a pass (`sts-cutover`).
    pass_specs: HashMap<String, passes::PassSpec>,
    /// Pending manifests by prefix (`{job_table}_manifests`), read at each
    /// start round that starts something: their next start copies only
    /// the objects listed there.
    manifests: HashMap<String, String>,
}

impl Manager {
    pub fn new(
        store: Arc<dyn StateStore>,
        transfer: Arc<dyn TransferService>,
        settings: impl Into<ManagerSettings>,
        project_id: String,
    ) -> Self {
        Manager {
            heartbeat: None,
            last_heartbeat: None,
            store,
            transfer,
            settings: settings.into(),
            project_id,
            rows: vec![],
            previous_running: HashMap::new(),
            stalled: vec![],
            progress: Progress::default(),
            last_sync: None,
            last_job_round: None,
            last_reconcile: None,
            last_figures: None,
            has_figures: false,
            figures_at_end: false,
            newest_seen: std::sync::atomic::AtomicI64::new(i64::MIN),
            failures: BTreeMap::new(),
            attempts: HashMap::new(),
            streak: Streak::default(),
            halted: None,
            service_account: None,
            checked_buckets: false,
            counts: crate::store::StatusCounts::default(),
            ramp_level: 0,
            pool_busy: HashMap::new(),
            pool_dead: std::sync::Mutex::new(HashSet::new()),
            pool_known: std::sync::Mutex::new(HashSet::new()),
            pool_verified: std::sync::Mutex::new(HashSet::new()),
            finished: crate::model::Counters::default(),
            holder: crate::store::lease_holder(),
            holding_lease: false,
            logs: None,
            awaited_logs: BTreeMap::new(),
            settled_logs: HashSet::new(),
            log_patience: failed_objects::LOG_PATIENCE,
            log_cursor: None,
            pass_specs: HashMap::new(),
            manifests: HashMap::new(),
        }
    }

    /// Reads failed objects from there into the failed-objects table (when
    /// `object_logs` is on).
    pub fn with_transfer_logs(
        mut self,
        logs: Arc<dyn crate::transfer::logs::TransferLogs>,
    ) -> Self {
        if self.settings.object_logs {
            self.logs = Some(logs);
        }
        self
    }

    /// Starts these prefixes with their pass's spec (`sts-cutover`).
    pub fn with_pass_specs(mut self, specs: HashMap<String, passes::PassSpec>) -> Self {
        self.pass_specs = specs;
        self
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

    pub fn settings(&self) -> &ManagerSettings {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
