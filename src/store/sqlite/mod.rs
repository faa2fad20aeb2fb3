//! The embedded state store: the two tables of SPEC 2 in one SQLite file.
//! Timestamps are RFC 3339 text in UTC, so they sort and read as in SQL.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

mod figures;
mod history;
mod jobs;
mod lease;
mod queue;
mod side;

use super::{check_identifier, holder_is_dead_here, Lease, LoadReport, StoreError};
use crate::model::ChangeSet;
use crate::model::{HistoryRow, PrefixJob, Status};
use crate::records::{
    FailedObject, Pass, PassPrefix, PendingManifest, PlannedPrefix, Verification, VerifyResult,
};
use crate::store::HistoryReads;
use crate::store::JobTable;
use crate::store::LeaseStore;
use crate::store::SideTables;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    job_table: String,
    history_table: String,
    statements: AtomicU64,
    path: std::path::PathBuf,
    /// The file's device and inode when opened: a connection to a file that
    /// was deleted or replaced keeps working on the old inode, so the store
    /// checks before each read and write that its file is still the one.
    identity: Option<(u64, u64)>,
    /// Wakes the checkpoint thread after a write (see [`spawn_checkpointer`]).
    checkpointer: Option<SyncSender<()>>,
}

/// A thread with its own connection that copies the WAL into the database
/// after each write, on another core, while the manager goes on writing: a
/// sync changing 100,000 prefixes spent a tenth of its write doing that
/// itself. PASSIVE never blocks a writer or a reader. The connection opens
/// the file without creating it, so a state file deleted meanwhile is not
/// made again here. `None` when the thread or connection cannot be had:
/// SQLite's own checkpoints after each commit then remain.
fn spawn_checkpointer(path: &Path) -> Option<SyncSender<()>> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    // One pending wake-up is enough: writes made meanwhile are copied too.
    let (wake, woken) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sts-sqlite-checkpoint".into())
        .spawn(move || {
            // Ends when the store (the sender) is dropped.
            while woken.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!("WAL checkpoint (the next write retries it): {e}");
                }
            }
        })
        .ok()?;
    Some(wake)
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Failures per errored prefix since its last queueing (see
/// `StateStore::failure_counts`); the same SQL runs on BigQuery.
pub fn failure_counts_sql(jobs: &str, history: &str) -> String {
    format!(
        "WITH queued AS (
           SELECT prefix, MAX(timestamp) AS at FROM {history}
           WHERE status = 'waiting' AND job_name IS NULL GROUP BY prefix)
         SELECT h.prefix, COUNT(*) FROM {history} h
         JOIN {jobs} j ON j.prefix = h.prefix AND j.status = 'error'
         LEFT JOIN queued q ON q.prefix = h.prefix
         WHERE h.status = 'error' AND (q.at IS NULL OR h.timestamp > q.at)
         GROUP BY h.prefix"
    )
}

pub fn timestamp_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// RFC 3339 as this project writes it, or SQLite's own `CURRENT_TIMESTAMP`
/// form (`2026-12-04 19:39:06`, UTC) that a row edited by hand may hold.
fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|e| {
            chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f")
                .map(|t| t.and_utc())
                .map_err(|_| e)
        })
        .map_err(|e| StoreError::CorruptRow(format!("timestamp '{text}': {e}")))
}

fn parse_status(text: &str) -> Result<Status, StoreError> {
    Status::parse(text).ok_or_else(|| StoreError::CorruptRow(format!("status '{text}'")))
}

impl SqliteStore {
    /// Opens a state file that must exist: a wrong path creates nothing.
    pub fn open_existing(
        path: &Path,
        job_table: &str,
        history_table: &str,
    ) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        Self::open(path, job_table, history_table)
    }

    /// Opens the state file, creating it (and its directory) if needed.
    pub fn open(path: &Path, job_table: &str, history_table: &str) -> Result<Self, StoreError> {
        let job_table = check_identifier(job_table)?.to_string();
        let history_table = check_identifier(history_table)?.to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::InvalidPath(format!("{}: {e}", dir.display()).into()),
            })?;
        }
        let open_error = |source: rusqlite::Error| match StoreError::from(source) {
            StoreError::Sqlite(source) => StoreError::Open {
                path: path.display().to_string(),
                source,
            },
            StoreError::Corrupt(detail) => {
                StoreError::Corrupt(format!("{}: {detail}", path.display()))
            }
            StoreError::DiskFull(detail) => {
                StoreError::DiskFull(format!("{}: {detail}", path.display()))
            }
            StoreError::ReadOnly(detail) => {
                StoreError::ReadOnly(format!("{}: {detail}", path.display()))
            }
            other => other,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        if crate::store::crash::armed() {
            conn.trace_v2(
                rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
                Some(|event| {
                    if let rusqlite::trace::TraceEvent::Stmt(_, sql) = event {
                        crate::store::crash::on_sqlite_statement(sql);
                    }
                }),
            );
        }
        // A new file gets 16 KiB pages (an existing one keeps its own):
        // history rows hold ~600 bytes of JSON, and 100,000 of them plus
        // their status updates were written in 0.66 s instead of 0.87 s.
        conn.pragma_update(None, "page_size", 16_384)
            .map_err(open_error)?;
        // WAL lets notebooks read while the manager writes; the busy timeout
        // rides out a concurrent writer instead of failing at once.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(open_error)?;
        // The staging table of `apply`, in memory, one per connection.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(open_error)?;
        conn.execute_batch(
            "CREATE TEMP TABLE sts_staged_updates (
                prefix TEXT NOT NULL PRIMARY KEY, status TEXT NOT NULL,
                job_name TEXT, last_updated TEXT NOT NULL) WITHOUT ROWID",
        )
        .map_err(open_error)?;
        let checkpointer = spawn_checkpointer(path);
        if checkpointer.is_some() {
            // The writer checkpoints itself only if the WAL reaches 40 MB
            // (10,000 pages): the checkpointer has fallen behind or is gone.
            conn.pragma_update(None, "wal_autocheckpoint", 10_000)
                .map_err(open_error)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            checkpointer,
            job_table,
            history_table,
            statements: AtomicU64::new(0),
            path: path.to_path_buf(),
            identity: file_identity(path),
        })
    }

    /// Asks the checkpoint thread to copy the WAL; never waits.
    fn checkpoint_soon(&self) {
        if let Some(wake) = &self.checkpointer {
            let _ = wake.try_send(());
        }
    }

    /// Job rows selected by `sql` (prefix, status, job_name, last_updated).
    fn select_jobs(&self, conn: &Connection, sql: &str) -> Result<Vec<PrefixJob>, StoreError> {
        self.select_jobs_with(conn, sql, [])
    }

    /// Rows of `sql` (prefix, status, job_name, last_updated) bound to `params`.
    fn select_jobs_with(
        &self,
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<PrefixJob>, StoreError> {
        let mut statement = conn
            .prepare_cached(sql)
            .map_err(|e| self.missing_table(e))?;
        let rows = statement.query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut jobs = Vec::new();
        for row in rows {
            let (prefix, status, job_name, last_updated) = row?;
            jobs.push(PrefixJob {
                prefix,
                status: parse_status(&status)?,
                job_name,
                last_updated: parse_timestamp(&last_updated)?,
            });
        }
        Ok(jobs)
    }

    /// Fails when the state file was deleted or replaced since it was opened.
    fn check_file(&self) -> Result<(), StoreError> {
        if self.identity.is_some() && file_identity(&self.path) != self.identity {
            return Err(StoreError::FileGone(self.path.display().to_string()));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic elsewhere cannot leave SQLite mid-transaction, so the
        // connection stays usable even if the mutex is poisoned.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, statements: u64) {
        self.statements.fetch_add(statements, Ordering::Relaxed);
    }

    /// Runs a query whose columns are the history table's, in its order.
    fn history_rows(
        &self,
        sql: &str,
        param: Option<String>,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql).map_err(|e| self.missing_table(e))?;
        let read = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
            ))
        };
        let rows = match &param {
            Some(p) => statement.query_map(params![p], read)?,
            None => statement.query_map([], read)?,
        };
        let mut history = Vec::new();
        for row in rows {
            let (prefix, status, job_name, operation_results, timestamp) = row?;
            history.push(HistoryRow {
                prefix,
                status: parse_status(&status)?,
                job_name,
                operation_results,
                timestamp: parse_timestamp(&timestamp)?,
            });
        }
        self.count(1);
        Ok(history)
    }

    fn missing_table(&self, error: rusqlite::Error) -> StoreError {
        let text = error.to_string();
        if text.contains("no such table") {
            let table = if text.contains(&self.history_table) {
                &self.history_table
            } else {
                &self.job_table
            };
            StoreError::MissingTable(table.clone())
        } else {
            StoreError::from(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobUpdate;

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("state.db"), "sts_job", "sts_job_history").unwrap()
    }

    #[test]
    fn a_full_disk_and_a_read_only_file_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
        // SQLite's own full condition: no page may be added.
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let full = conn
            .execute("INSERT INTO t VALUES (?1)", params!["x".repeat(100_000)])
            .unwrap_err();
        let full = StoreError::from(full).to_string();
        assert!(full.contains("disk is full"), "{full}");
        drop(conn);
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let refused = reader
            .execute("INSERT INTO t VALUES ('y')", [])
            .unwrap_err();
        let refused = StoreError::from(refused).to_string();
        assert!(refused.contains("read-only"), "{refused}");
    }

    #[tokio::test]
    async fn a_corrupt_file_is_named_and_a_missing_one_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, b"not a database at all, just text".repeat(200)).unwrap();
        let corrupt = match SqliteStore::open(&path, "sts_job", "sts_job_history") {
            Ok(store) => store.read_unfinished().await.map(|_| ()).unwrap_err(),
            Err(e) => e,
        };
        assert!(matches!(corrupt, StoreError::Corrupt(_)), "{corrupt}");
        let missing = dir.path().join("a/b/state.db");
        let refused = SqliteStore::open_existing(&missing, "sts_job", "sts_job_history");
        assert!(matches!(refused, Err(StoreError::Missing(_))));
        assert!(!dir.path().join("a").exists());
    }

    #[tokio::test]
    async fn sqlites_own_timestamp_format_is_read() {
        assert_eq!(
            parse_timestamp("2026-12-04 10:11:12").unwrap(),
            parse_timestamp("2026-12-04T10:11:12Z").unwrap()
        );
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[tokio::test]
    async fn load_is_idempotent_and_rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.prepare().await.unwrap();
        s.prepare().await.unwrap();
        let prefixes: Vec<String> = vec!["a/".into(), "b/".into()];
        assert_eq!(
            s.load_prefixes(&prefixes).await.unwrap(),
            LoadReport {
                inserted: 2,
                already_present: 0
            }
        );
        let more: Vec<String> = vec!["b/".into(), "c/".into()];
        assert_eq!(
            s.load_prefixes(&more).await.unwrap(),
            LoadReport {
                inserted: 1,
                already_present: 1
            }
        );
        let jobs = s.read_jobs().await.unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.prefix.as_str()).collect::<Vec<_>>(),
            ["a/", "b/", "c/"]
        );
        assert!(jobs
            .iter()
            .all(|j| j.status == Status::Waiting && j.job_name.is_none()));
    }

    #[tokio::test]
    async fn manifests_are_written_with_their_requeue_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.prepare().await.unwrap();
        s.load_prefixes(&["a/".into(), "b/".into()]).await.unwrap();
        // No table yet: nothing pending, and clearing is a no-op.
        assert!(s.read_manifests().await.unwrap().is_empty());
        s.clear_manifests(&[("a/".into(), None)]).await.unwrap();
        // Whole microseconds, as the table keeps them.
        let now = chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        let manifest = |prefix: &str, location: &str| PendingManifest {
            prefix: prefix.into(),
            location: location.into(),
            objects: 3,
            queued_at: now,
        };
        let mut changes = ChangeSet::default();
        changes.requeue("a/", now);
        changes.requeue("b/", now);
        s.requeue_with_manifests(
            &changes,
            &[
                manifest("a/", "gs://m/1.csv"),
                manifest("b/", "gs://m/2.csv"),
            ],
        )
        .await
        .unwrap();
        let history = s.read_history().await.unwrap();
        assert_eq!(history.len(), 2);
        // A newer manifest replaces the prefix's; a clear by location
        // leaves a newer one; a clear of any location drops it.
        s.requeue_with_manifests(&ChangeSet::default(), &[manifest("a/", "gs://m/3.csv")])
            .await
            .unwrap();
        s.clear_manifests(&[("a/".into(), Some("gs://m/1.csv".into()))])
            .await
            .unwrap();
        let pending = s.read_manifests().await.unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].location, "gs://m/3.csv");
        assert_eq!(pending[0].queued_at.timestamp(), now.timestamp());
        s.clear_manifests(&[("a/".into(), None)]).await.unwrap();
        let pending = s.read_manifests().await.unwrap();
        assert_eq!(pending, vec![manifest("b/", "gs://m/2.csv")]);
    }

    #[tokio::test]
    async fn unfinished_rows_and_counts_failures_since_queued() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.prepare().await.unwrap();
        let prefixes: Vec<String> = (0..6).map(|i| format!("p{i}/")).collect();
        s.load_prefixes(&prefixes).await.unwrap();
        let at = |secs: i64| chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        let row = |p: &str, status: Status, t: i64| HistoryRow {
            prefix: p.into(),
            status,
            job_name: (status != Status::Waiting).then(|| "transferJobs/j".to_string()),
            operation_results: None,
            timestamp: at(t),
        };
        let update = |p: &str, status: Status| crate::model::JobUpdate {
            prefix: p.into(),
            status,
            job_name: Some("transferOperations/o".into()),
            last_updated: at(9),
        };
        s.apply(&ChangeSet {
            updates: vec![
                update("p0/", Status::Done),
                update("p1/", Status::Done),
                update("p2/", Status::Error),
                update("p3/", Status::Error),
                update("p4/", Status::Running),
            ],
            history: vec![
                row("p2/", Status::Error, 1),
                row("p2/", Status::Error, 2),
                // p3 failed, was requeued (waiting, no job), failed again.
                row("p3/", Status::Error, 1),
                row("p3/", Status::Waiting, 2),
                row("p3/", Status::Error, 3),
                // p4 failed once but is running now: not counted.
                row("p4/", Status::Error, 1),
            ],
        })
        .await
        .unwrap();
        let (rows, total) = s.read_unfinished().await.unwrap();
        assert_eq!(total, 6);
        assert_eq!(
            rows.iter()
                .map(|r| (r.prefix.as_str(), r.status))
                .collect::<Vec<_>>(),
            [
                ("p2/", Status::Error),
                ("p3/", Status::Error),
                ("p4/", Status::Running),
                ("p5/", Status::Waiting)
            ]
        );
        let counts = s.failure_counts().await.unwrap();
        assert_eq!(counts.len(), 2);
        assert_eq!((counts["p2/"], counts["p3/"]), (2, 1));
    }

    #[tokio::test]
    async fn a_deleted_state_file_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.prepare().await.unwrap();
        s.load_prefixes(&["a/".to_string()]).await.unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let err = s.read_unfinished().await.unwrap_err();
        assert!(matches!(err, StoreError::FileGone(_)), "{err}");
        assert!(s.apply(&ChangeSet::default()).await.is_err());
        // Nor does the checkpoint thread make the file again.
        s.checkpoint_soon();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!dir.path().join("state.db").exists());
    }

    #[tokio::test]
    async fn a_prefix_updated_twice_in_one_change_set_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.prepare().await.unwrap();
        s.load_prefixes(&["a/".to_string(), "b/".to_string()])
            .await
            .unwrap();
        let now = Utc::now();
        let update = |status, name: &str| JobUpdate {
            prefix: "a/".into(),
            status,
            job_name: Some(name.into()),
            last_updated: now,
        };
        let changes = ChangeSet {
            updates: vec![
                update(Status::Running, "first"),
                update(Status::Done, "second"),
            ],
            history: vec![],
        };
        s.apply(&changes).await.unwrap();
        s.apply(&changes).await.unwrap();
        let jobs = s.read_jobs().await.unwrap();
        assert_eq!(jobs[0].status, Status::Done);
        assert_eq!(jobs[0].job_name.as_deref(), Some("second"));
        assert_eq!(jobs[1].status, Status::Waiting, "other rows untouched");
    }

    #[tokio::test]
    async fn a_change_set_is_two_statements_whatever_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.prepare().await.unwrap();
        let prefixes: Vec<String> = (0..500).map(|i| format!("p{i:04}/")).collect();
        s.load_prefixes(&prefixes).await.unwrap();
        let now = Utc::now();
        let changes = ChangeSet {
            updates: prefixes
                .iter()
                .map(|p| JobUpdate {
                    prefix: p.clone(),
                    status: Status::Running,
                    job_name: Some(format!("op-{p}")),
                    last_updated: now,
                })
                .collect(),
            history: prefixes
                .iter()
                .map(|p| HistoryRow {
                    prefix: p.clone(),
                    status: Status::Running,
                    job_name: Some(format!("op-{p}")),
                    operation_results: Some("{\"x\":1}".into()),
                    timestamp: now,
                })
                .collect(),
        };
        let before = s.statements_issued();
        s.apply(&changes).await.unwrap();
        // The job rows, the history rows, the folds.
        assert_eq!(s.statements_issued() - before, 3);
        let jobs = s.read_jobs().await.unwrap();
        assert!(jobs.iter().all(|j| j.status == Status::Running
            && j.job_name.as_deref() == Some(&format!("op-{}", j.prefix)[..])));
        let history = s.read_history().await.unwrap();
        assert_eq!(history.len(), 500);
        assert_eq!(history[0].operation_results.as_deref(), Some("{\"x\":1}"));
    }

    #[tokio::test]
    async fn the_lease_has_one_holder_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let long = std::time::Duration::from_secs(60);
        assert_eq!(
            s.acquire_lease("host-a:1:1", long).await.unwrap(),
            Lease::Acquired
        );
        assert_eq!(
            s.acquire_lease("host-a:1:1", long).await.unwrap(),
            Lease::Acquired,
            "renewal"
        );
        assert!(
            matches!(s.acquire_lease("host-b:2:2", long).await.unwrap(), Lease::HeldBy { holder, .. } if holder == "host-a:1:1")
        );
        s.release_lease("host-a:1:1").await.unwrap();
        assert_eq!(
            s.acquire_lease("host-b:2:2", std::time::Duration::ZERO)
                .await
                .unwrap(),
            Lease::Acquired
        );
        // An expired lease is taken over.
        assert_eq!(
            s.acquire_lease("host-c:3:3", long).await.unwrap(),
            Lease::Acquired
        );
    }

    #[tokio::test]
    async fn plan_and_verification_tables_appear_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert!(s.read_plan().await.unwrap().is_empty());
        assert!(s.read_verifications().await.unwrap().is_empty());
        let plan = |prefix: &str, bytes| PlannedPrefix {
            prefix: prefix.into(),
            objects: 2,
            bytes,
        };
        s.save_plan(&[plan("a/", 10), plan("b/", 20)])
            .await
            .unwrap();
        s.save_plan(&[plan("b/", 30)]).await.unwrap();
        assert_eq!(
            s.read_plan().await.unwrap(),
            [plan("a/", 10), plan("b/", 30)]
        );
        let checked_at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut row = Verification {
            prefix: "a/".into(),
            result: VerifyResult::Mismatch,
            objects_compared: 3,
            missing: 1,
            different: 1,
            checked_at,
            offending_objects: vec!["a/x".into(), "a/y".into()],
        };
        s.save_verifications(std::slice::from_ref(&row))
            .await
            .unwrap();
        assert_eq!(s.read_verifications().await.unwrap(), [row.clone()]);
        row.result = VerifyResult::Verified;
        row.offending_objects.clear();
        s.save_verifications(std::slice::from_ref(&row))
            .await
            .unwrap();
        assert_eq!(s.read_verifications().await.unwrap(), [row]);
    }

    #[tokio::test]
    async fn failed_objects_are_kept_once_per_operation_object_and_action() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert!(s.read_failed_objects().await.unwrap().is_empty());
        let ops = vec!["transferOperations/1".to_string()];
        assert!(s.count_failed_objects(&ops).await.unwrap().is_empty());
        assert_eq!(s.count_all_failed_objects().await.unwrap(), 0);
        let time = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let row = |object: &str, operation: &str| FailedObject {
            prefix: "a/".into(),
            object: object.into(),
            action: "COPY".into(),
            error_code: "PERMISSION_DENIED".into(),
            message: "denied".into(),
            operation: operation.into(),
            time,
        };
        let odd = "a/x, \"y\" é 日";
        s.save_failed_objects(&[row(odd, &ops[0]), row("a/z", &ops[0])])
            .await
            .unwrap();
        // Read again (late entries come with the ones already stored).
        s.save_failed_objects(&[row(odd, &ops[0]), row("a/z", "transferOperations/2")])
            .await
            .unwrap();
        assert_eq!(
            s.read_failed_objects().await.unwrap(),
            [
                row(odd, &ops[0]),
                row("a/z", &ops[0]),
                row("a/z", "transferOperations/2")
            ]
        );
        let counts = s.count_failed_objects(&ops).await.unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[&ops[0]], 2);
        assert_eq!(s.count_all_failed_objects().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn missing_tables_and_bad_names_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let err = s.read_jobs().await.unwrap_err();
        assert!(
            err.to_string().contains("sts_job") && err.to_string().contains("sts-prepare-tables"),
            "{err}"
        );
        let bad = SqliteStore::open(&dir.path().join("x.db"), "sts_job; DROP TABLE x", "h");
        assert!(matches!(bad, Err(StoreError::InvalidIdentifier(_))));
    }
}
