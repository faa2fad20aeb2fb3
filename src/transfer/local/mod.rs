//! The local transfer engine: bucket `B` is the directory `ROOT/B`, an object
//! is a file named by its path relative to it. Jobs and operations have STS's
//! fields and live in `ROOT/.sts-engine/engine.db`, so every process on the
//! same ROOT (manager, pause-all, cleanup) sees and changes the same
//! operations. An engine opened to execute runs operations on background
//! threads and takes over operations whose executor stopped heartbeating
//! (a killed manager).

mod faults;
pub mod logs;
pub mod metadata;
mod service;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};

pub use faults::Faults;
pub(crate) use worker::TEMP_MARKER;

use super::{
    glob_match, validate_job_name, JobFilter, OperationFilter, TransferError, TransferService,
};
use crate::model::{Date, JobStatus, OperationStatus, TransferJob, TransferOperation};

/// Whether this process runs operations or only reads and controls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Control,
    Execute,
}

pub const ENGINE_DIR: &str = ".sts-engine";

pub struct LocalEngine {
    root: PathBuf,
    conn: Mutex<Connection>,
    executor: Option<Executor>,
}

struct Executor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // A panicked scheduler has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

fn engine_error(root: &Path, problem: impl ToString) -> TransferError {
    TransferError::Engine {
        root: root.display().to_string(),
        problem: problem.to_string(),
    }
}

pub(crate) fn open_db(root: &Path) -> Result<Connection, TransferError> {
    let dir = root.join(ENGINE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| engine_error(root, e))?;
    let conn = Connection::open(dir.join("engine.db")).map_err(|e| engine_error(root, e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| engine_error(root, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| engine_error(root, e))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS jobs (
            name TEXT PRIMARY KEY, project_id TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS operations (
            name TEXT PRIMARY KEY, job_name TEXT NOT NULL, project_id TEXT NOT NULL,
            status TEXT NOT NULL, end_time TEXT, body TEXT NOT NULL,
            owner TEXT, heartbeat REAL);
         CREATE INDEX IF NOT EXISTS operations_status ON operations (status);
         CREATE INDEX IF NOT EXISTS operations_job ON operations (job_name);
         CREATE TABLE IF NOT EXISTS log_entries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,
            operation TEXT NOT NULL, visible_at REAL NOT NULL, body TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS log_entries_operation ON log_entries (operation, seq);",
    )
    .map_err(|e| engine_error(root, e))?;
    conn.execute_batch(metadata::TABLE)
        .map_err(|e| engine_error(root, e))?;
    Ok(conn)
}

/// Decodes a stored operation: the status and end-time columns are the truth
/// (other processes change them), the body holds everything else.
pub(crate) fn decode_operation(
    status: &str,
    end_time: Option<String>,
    body: &str,
) -> Result<TransferOperation, String> {
    let mut op: TransferOperation = serde_json::from_str(body).map_err(|e| e.to_string())?;
    op.status = OperationStatus::from_name(status);
    op.end_time = end_time
        .map(|t| chrono::DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(op)
}

impl LocalEngine {
    pub fn open(root: &Path, mode: Mode) -> Result<Self, TransferError> {
        if !root.is_dir() {
            return Err(engine_error(
                root,
                "is not a directory (it should hold one directory per bucket)",
            ));
        }
        let conn = open_db(root)?;
        let executor = (mode == Mode::Execute).then(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let thread = worker::spawn_scheduler(root.to_path_buf(), stop.clone());
            Executor {
                stop,
                thread: Some(thread),
            }
        });
        Ok(LocalEngine {
            root: root.to_path_buf(),
            conn: Mutex::new(conn),
            executor,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_executing(&self) -> bool {
        self.executor.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn err(&self, problem: impl ToString) -> TransferError {
        engine_error(&self.root, problem)
    }

    /// What STS checks when a job is created: a source and a sink, include
    /// prefixes it accepts, and buckets its service account can see.
    fn check_spec(&self, spec: &crate::model::TransferSpec) -> Result<(), TransferError> {
        let (Some(source), Some(sink)) = (spec.source_bucket(), spec.sink_bucket()) else {
            return Err(TransferError::InvalidArgument(
                "transferSpec needs gcsDataSource and gcsDataSink".into(),
            ));
        };
        if let Some(problem) = crate::prefixes::include_prefixes_problem(spec.include_prefixes()) {
            return Err(TransferError::InvalidArgument(problem));
        }
        if let Some(problem) = spec.options_problem() {
            return Err(TransferError::InvalidArgument(problem));
        }
        // Whether STS checks the location's form at create is not
        // documented; one that is no `gs://bucket/object` can never be read.
        if let Some(location) = spec.manifest() {
            crate::manifest::GcsLocation::parse(location, false).map_err(|e| {
                TransferError::InvalidArgument(format!("transferManifest.location: {e}"))
            })?;
        }
        for (role, bucket) in [("source", source), ("destination", sink)] {
            // Bucket names never hold a path; one that does cannot exist.
            let usable = !bucket.is_empty() && !bucket.contains(['/', '\\']) && bucket != "..";
            if !usable || !self.root.join(bucket).is_dir() {
                // STS's own wording for a bucket it cannot see.
                return Err(TransferError::FailedPrecondition(format!(
                    "Failed to obtain the location of the {role} Google Cloud Storage (GCS) bucket \
                     '{bucket}': it does not exist or the Storage Transfer service account has no \
                     storage.buckets.get permission on it"
                )));
            }
        }
        Ok(())
    }

    fn insert_operation(
        &self,
        conn: &Connection,
        job: &TransferJob,
    ) -> Result<String, TransferError> {
        let id = job.name.trim_start_matches("transferJobs/");
        let count: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM operations WHERE job_name = ?1",
                params![job.name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let name = format!("transferOperations/transferJobs-{id}-{}", count + 1);
        let op = TransferOperation {
            name: name.clone(),
            project_id: job.project_id.clone(),
            transfer_spec: job.transfer_spec.clone(),
            start_time: Some(faults::service_now(&self.root)),
            end_time: None,
            status: OperationStatus::Queued,
            counters: Default::default(),
            error_breakdowns: vec![],
            transfer_job_name: job.name.clone(),
            logging_config: job.logging_config.clone(),
        };
        let body = serde_json::to_string(&op).map_err(|e| self.err(e))?;
        conn.execute(
            "INSERT INTO operations (name, job_name, project_id, status, body) VALUES (?1, ?2, ?3, 'QUEUED', ?4)",
            params![name, job.name, job.project_id, body],
        )
        .map_err(|e| self.err(e))?;
        conn.execute(
            "UPDATE jobs SET body = json_set(body, '$.latestOperationName', ?2) WHERE name = ?1",
            params![job.name, name],
        )
        .map_err(|e| self.err(e))?;
        Ok(name)
    }

    /// One job, as `transferJobs.get` answers it.
    pub fn get_job(&self, name: &str, project_id: &str) -> Result<TransferJob, TransferError> {
        let conn = self.lock();
        let job = self.load_job(&conn, name)?;
        if job.project_id != project_id {
            return Err(TransferError::NotFound(name.to_string()));
        }
        Ok(job)
    }

    /// One operation, as `transferOperations.get` answers it.
    pub fn get_operation(&self, name: &str) -> Result<TransferOperation, TransferError> {
        let conn = self.lock();
        let row: Option<(String, Option<String>, String)> = conn
            .query_row(
                "SELECT status, end_time, body FROM operations WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let (status, end_time, body) =
            row.ok_or_else(|| TransferError::NotFound(name.to_string()))?;
        decode_operation(&status, end_time, &body).map_err(|e| self.err(e))
    }

    /// `transferJobs.patch` for the fields a job manager changes: status and
    /// description (a status of DELETED deletes the job).
    pub fn patch_job(
        &self,
        name: &str,
        project_id: &str,
        status: Option<JobStatus>,
        description: Option<&str>,
    ) -> Result<TransferJob, TransferError> {
        let mut job = self.get_job(name, project_id)?;
        if job.status == JobStatus::Deleted {
            return Err(self.gone(name, JobStatus::Deleted));
        }
        if let Some(status) = status {
            job.status = status;
            if status == JobStatus::Deleted {
                job.deletion_time = Some(faults::service_now(&self.root));
            }
        }
        if let Some(description) = description {
            job.description = description.to_string();
        }
        let body = serde_json::to_string(&job).map_err(|e| self.err(e))?;
        self.lock()
            .execute(
                "UPDATE jobs SET status = ?2, body = ?3 WHERE name = ?1",
                params![name, job.status.name(), body],
            )
            .map_err(|e| self.err(e))?;
        Ok(job)
    }

    /// `transferJobs.patch` of `transferSpec`, checked as a create checks it.
    pub fn patch_job_spec(
        &self,
        name: &str,
        project_id: &str,
        spec: &crate::model::TransferSpec,
        logging: Option<Option<crate::model::LoggingConfig>>,
    ) -> Result<TransferJob, TransferError> {
        let mut job = self.get_job(name, project_id)?;
        if job.status == JobStatus::Deleted {
            return Err(self.gone(name, JobStatus::Deleted));
        }
        self.check_spec(spec)?;
        job.transfer_spec = spec.clone();
        if let Some(logging) = logging {
            job.logging_config = logging;
        }
        let body = serde_json::to_string(&job).map_err(|e| self.err(e))?;
        self.lock()
            .execute(
                "UPDATE jobs SET body = json_set(?2, '$.latestOperationName',
                    json_extract(body, '$.latestOperationName')) WHERE name = ?1",
                params![name, body],
            )
            .map_err(|e| self.err(e))?;
        Ok(job)
    }

    /// `transferJobs.patch` of `logging_config` alone.
    pub fn patch_job_logging(
        &self,
        name: &str,
        project_id: &str,
        logging: Option<crate::model::LoggingConfig>,
    ) -> Result<TransferJob, TransferError> {
        let job = self.get_job(name, project_id)?;
        self.patch_job_spec(name, project_id, &job.transfer_spec, Some(logging))
    }

    /// `transferJobs.run`: a new operation of the job; its name.
    pub fn run_job_operation(
        &self,
        job_name: &str,
        project_id: &str,
    ) -> Result<String, TransferError> {
        let conn = self.lock();
        let job = self.load_job(&conn, job_name)?;
        if job.project_id != project_id {
            return Err(TransferError::NotFound(job_name.to_string()));
        }
        if matches!(job.status, JobStatus::Deleted | JobStatus::Disabled) {
            return Err(self.gone(job_name, job.status));
        }
        let active: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM operations WHERE job_name = ?1 AND status IN ('QUEUED','IN_PROGRESS','PAUSED','SUSPENDING')",
                params![job_name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let faults = Faults::load(&self.root.join(ENGINE_DIR));
        if let Some(code) = faults.refuse_runs.as_deref().filter(|_| active == 0) {
            let message = format!("refused by the engine's refuse_runs fault ({code})");
            return Err(faults::code_error(code, message));
        }
        if active > 0 {
            let code = faults
                .run_while_active
                .unwrap_or_else(|| "FAILED_PRECONDITION".into());
            if code != "ALLOW" {
                let message = format!("job {job_name} already has an operation running");
                return Err(faults::code_error(&code, message));
            }
        }
        self.insert_operation(&conn, &job)
    }

    /// Operations matching `filter`, newest first, at most `take` of them,
    /// from the operation after `cursor` (the `next` of the previous page).
    /// Returns them and the cursor of the next page, if there is one. The
    /// cursor is a row id: a page costs what it holds plus the rows its
    /// filters pass over, not every earlier page again (an offset made a
    /// reconcile of a million operations quadratic).
    pub fn list_operations_page(
        &self,
        filter: &OperationFilter,
        cursor: Option<i64>,
        take: usize,
    ) -> Result<(Vec<TransferOperation>, Option<i64>), TransferError> {
        let conn = self.lock();
        let job_names = serde_json::to_string(&filter.job_names).map_err(|e| self.err(e))?;
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.name()).collect();
        let statuses = serde_json::to_string(&statuses).map_err(|e| self.err(e))?;
        // Asked by operation name: look those rows up, not every row.
        let by_name = serde_json::to_string(&filter.operation_names).map_err(|e| self.err(e))?;
        let mut statement = conn
            .prepare(
                "SELECT rowid, status, end_time, body, job_name FROM operations
                 WHERE project_id = ?1
                   AND (?4 = '[]' OR name IN (SELECT value FROM json_each(?4)))
                   AND (?2 = '[]' OR job_name IN (SELECT value FROM json_each(?2)))
                   AND (?3 = '[]' OR status IN (SELECT value FROM json_each(?3)))
                   AND (?5 IS NULL OR rowid < ?5)
                 ORDER BY rowid DESC",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = statement
            .query(params![
                filter.project_id,
                job_names,
                statuses,
                by_name,
                cursor
            ])
            .map_err(|e| self.err(e))?;
        let mut operations = Vec::new();
        let mut last = None;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let read = |i| row.get_ref(i).map_err(|e| self.err(e));
            let job_name = read(4)?.as_str().map_err(|e| self.err(e))?;
            if filter
                .job_name_pattern
                .as_deref()
                .is_some_and(|p| !glob_match(p, job_name))
            {
                continue;
            }
            let status = read(1)?.as_str().map_err(|e| self.err(e))?;
            let end_time = read(2)?.as_str_or_null().map_err(|e| self.err(e))?;
            let body = read(3)?.as_str().map_err(|e| self.err(e))?;
            let refined = !filter.operation_names.is_empty() || filter.min_creation_time.is_some();
            // Names and creation times live in the body: decode to judge.
            let op = if refined {
                let op = decode_operation(status, end_time.map(str::to_owned), body)
                    .map_err(|e| self.err(e))?;
                if !filter.admits(&op) {
                    continue;
                }
                Some(op)
            } else {
                None
            };
            if operations.len() == take {
                // One more match: there is a next page, after the last kept.
                return Ok((operations, last));
            }
            let op = match op {
                Some(op) => op,
                None => decode_operation(status, end_time.map(str::to_owned), body)
                    .map_err(|e| self.err(e))?,
            };
            operations.push(op);
            last = Some(read(0)?.as_i64().map_err(|e| self.err(e))?);
        }
        Ok((operations, None))
    }

    /// The refusal of a patch or run of a deleted or disabled job (its code
    /// is undocumented: the `gone_job_code` fault picks one).
    fn gone(&self, name: &str, status: JobStatus) -> TransferError {
        let code = Faults::load(&self.root.join(ENGINE_DIR))
            .gone_job_code
            .unwrap_or_else(|| match status {
                JobStatus::Deleted => "NOT_FOUND".into(),
                _ => "FAILED_PRECONDITION".into(),
            });
        faults::code_error(&code, format!("{name} is {}", status.name().to_lowercase()))
    }

    fn load_job(&self, conn: &Connection, name: &str) -> Result<TransferJob, TransferError> {
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM jobs WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let body = body.ok_or_else(|| TransferError::NotFound(name.to_string()))?;
        serde_json::from_str(&body).map_err(|e| self.err(e))
    }

    fn operation_status(
        &self,
        conn: &Connection,
        name: &str,
    ) -> Result<OperationStatus, TransferError> {
        let status: Option<String> = conn
            .query_row(
                "SELECT status FROM operations WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        status
            .map(|s| OperationStatus::from_name(&s))
            .ok_or_else(|| TransferError::NotFound(name.to_string()))
    }

    /// Moves an operation from one of `from` to `to`, or explains why not.
    fn transition(
        &self,
        name: &str,
        from: &[OperationStatus],
        to: OperationStatus,
    ) -> Result<(), TransferError> {
        let conn = self.lock();
        // Another process (an executor promoting QUEUED, finishing) may move
        // the operation between our read and our write: the write is
        // conditional on what we read, and we read again if it lost.
        for _ in 0..10 {
            let current = self.operation_status(&conn, name)?;
            if !from.contains(&current) {
                return Err(TransferError::FailedPrecondition(format!(
                    "operation {name} is {}, cannot become {}",
                    current.name(),
                    to.name()
                )));
            }
            let end_time = (!to.is_active())
                .then(|| crate::store::sqlite::timestamp_text(faults::service_now(&self.root)));
            let changed = conn
                .execute(
                    "UPDATE operations SET status = ?2, end_time = COALESCE(?3, end_time) WHERE name = ?1 AND status = ?4",
                    params![name, to.name(), end_time, current.name()],
                )
                .map_err(|e| self.err(e))?;
            if changed == 1 {
                return Ok(());
            }
        }
        Err(self.err(format!("operation {name} kept changing; try again")))
    }
}
