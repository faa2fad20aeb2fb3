//! The embedded state store: the two tables of SPEC 2 in one SQLite file.
//! Timestamps are RFC 3339 text in UTC, so they sort and read as in SQL.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

mod queue;

use super::{check_identifier, holder_is_dead_here, Lease, LoadReport, StoreError};
use crate::model::ChangeSet;
use crate::model::{HistoryRow, PrefixJob, Status};
use crate::records::{PlannedPrefix, Verification, VerifyResult};
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

#[async_trait]
impl JobTable for SqliteStore {
    async fn prepare(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {jobs} (
                prefix TEXT NOT NULL PRIMARY KEY,
                status TEXT NOT NULL CHECK (status IN ('waiting','running','paused','done','error')),
                job_name TEXT,
                last_updated TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {history} (
                prefix TEXT NOT NULL,
                status TEXT NOT NULL,
                job_name TEXT,
                operation_results TEXT,
                timestamp TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {history}_prefix ON {history} (prefix, timestamp);
            CREATE INDEX IF NOT EXISTS {jobs}_status_prefix ON {jobs} (status, prefix);",
            jobs = self.job_table,
            history = self.history_table,
        ))?;
        self.count(4);
        Ok(())
    }

    async fn load_prefixes(&self, prefixes: &[String]) -> Result<LoadReport, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO {} (prefix, status, job_name, last_updated)
                     SELECT value, 'waiting', NULL, ?2 FROM json_each(?1) WHERE true
                     ON CONFLICT (prefix) DO NOTHING",
                    self.job_table
                ),
                params![
                    serde_json::to_string(prefixes).unwrap_or_default(),
                    timestamp_text(Utc::now())
                ],
            )
            .map_err(|e| self.missing_table(e))?;
        tx.commit()?;
        self.count(1);
        self.checkpoint_soon();
        Ok(LoadReport {
            inserted,
            already_present: prefixes.len() - inserted,
        })
    }

    async fn read_jobs(&self) -> Result<Vec<PrefixJob>, StoreError> {
        self.check_file()?;
        let conn = self.lock();
        let jobs = self.select_jobs(
            &conn,
            &format!(
                "SELECT prefix, status, job_name, last_updated FROM {} ORDER BY prefix",
                self.job_table
            ),
        )?;
        self.count(1);
        Ok(jobs)
    }

    async fn read_unfinished(&self) -> Result<(Vec<PrefixJob>, usize), StoreError> {
        self.check_file()?;
        let conn = self.lock();
        // The status index (made by prepare, or here for older files) keeps
        // this a lookup of the unfinished rows, not a scan of every row.
        self.ensure_status_index(&conn);
        let total: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {}", self.job_table),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.missing_table(e))?;
        let mut jobs = self.select_jobs(
            &conn,
            &format!(
                "SELECT prefix, status, job_name, last_updated FROM {}
                 WHERE status IN ('waiting', 'running', 'paused', 'error')",
                self.job_table
            ),
        )?;
        if jobs.is_empty() && total > 0 {
            // "Every prefix is finished" is checked before it is believed: a
            // damaged index or page would read as nothing left to do.
            let check: String = conn
                .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
                .map_err(StoreError::from)?;
            if check != "ok" {
                return Err(StoreError::Corrupt(format!(
                    "{}: {check}",
                    self.path.display()
                )));
            }
        }
        jobs.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix));
        self.count(2);
        Ok((jobs, usize::try_from(total).unwrap_or(0)))
    }

    async fn failure_counts(&self) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare(&failure_counts_sql(&self.job_table, &self.history_table))
            .map_err(|e| self.missing_table(e))?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = std::collections::HashMap::new();
        for row in rows {
            let (prefix, n) = row?;
            counts.insert(prefix, u32::try_from(n).unwrap_or(u32::MAX));
        }
        self.count(1);
        Ok(counts)
    }

    async fn count_by_status(&self) -> Result<crate::store::StatusCounts, StoreError> {
        self.check_file()?;
        self.status_counts()
    }

    async fn read_active(&self) -> Result<Vec<PrefixJob>, StoreError> {
        self.check_file()?;
        self.active_rows()
    }

    async fn next_waiting(&self, limit: usize) -> Result<Vec<(PrefixJob, u64)>, StoreError> {
        self.check_file()?;
        self.waiting_in_start_order(limit)
    }

    async fn read_prefixes(&self, prefixes: &[String]) -> Result<Vec<PrefixJob>, StoreError> {
        self.check_file()?;
        self.rows_of(prefixes)
    }

    async fn apply(&self, changes: &ChangeSet) -> Result<(), StoreError> {
        self.check_file()?;
        if changes.is_empty() {
            return Ok(());
        }
        // One transaction; each list through one prepared statement run row
        // by row (measured faster here than one JSON parameter per list:
        // 100,000 history rows in 0.82 s against 1.78 s), so memory stays
        // bounded by the change set itself.
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut statements = 0;
        if !changes.updates.is_empty() {
            // Staged in the connection's temporary table, then one UPDATE:
            // the job table's CHECK on status builds its IN-list once per
            // statement, so row by row it was built 100,000 times (measured
            // 15% slower).
            {
                // A prefix updated twice in one change set keeps the last.
                let mut stage = tx.prepare_cached(
                    "INSERT OR REPLACE INTO temp.sts_staged_updates VALUES (?1, ?2, ?3, ?4)",
                )?;
                for u in &changes.updates {
                    stage.execute(params![
                        u.prefix,
                        u.status.as_str(),
                        u.job_name,
                        timestamp_text(u.last_updated)
                    ])?;
                }
            }
            tx.prepare_cached(&format!(
                "UPDATE {jobs} SET status = u.status, job_name = u.job_name,
                     last_updated = u.last_updated
                 FROM temp.sts_staged_updates AS u WHERE {jobs}.prefix = u.prefix",
                jobs = self.job_table
            ))
            .map_err(|e| self.missing_table(e))?
            .execute([])?;
            tx.execute("DELETE FROM temp.sts_staged_updates", [])?;
            statements += 1;
        }
        if !changes.history.is_empty() {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO {} (prefix, status, job_name, operation_results, timestamp)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    self.history_table
                ))
                .map_err(|e| self.missing_table(e))?;
            for h in &changes.history {
                insert.execute(params![
                    h.prefix,
                    h.status.as_str(),
                    h.job_name,
                    h.operation_results,
                    timestamp_text(h.timestamp)
                ])?;
            }
            statements += 1;
        }
        tx.commit()?;
        self.count(statements);
        self.checkpoint_soon();
        Ok(())
    }

    fn statements_issued(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl HistoryReads for SqliteStore {
    async fn read_history(&self) -> Result<Vec<HistoryRow>, StoreError> {
        // Read in insertion order and sort here: SQLite sorting a million
        // wide rows by timestamp took 7 s, this 0.1 s.
        let mut history = self.history_rows(
            &format!(
                "SELECT prefix, status, job_name, operation_results, timestamp FROM {} ORDER BY rowid",
                self.history_table
            ),
            None,
        )?;
        // Stable: rows with equal timestamps keep their insertion order.
        history.sort_by_key(|row| row.timestamp);
        Ok(history)
    }

    async fn latest_snapshots(&self) -> Result<Vec<HistoryRow>, StoreError> {
        // One index seek per prefix ({history}_prefix on prefix, timestamp),
        // not a scan of the whole history.
        let sql = format!(
            "SELECT h.prefix, h.status, h.job_name, h.operation_results, h.timestamp
             FROM {jobs} AS j JOIN {history} AS h ON h.rowid = (
                 SELECT x.rowid FROM {history} AS x
                 WHERE x.prefix = j.prefix AND x.operation_results IS NOT NULL
                 ORDER BY x.timestamp DESC, x.rowid DESC LIMIT 1)",
            jobs = self.job_table,
            history = self.history_table,
        );
        self.history_rows(&sql, None)
    }

    async fn scan_history(
        &self,
        visit: &mut (dyn FnMut(HistoryRow) + Send),
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare(&format!(
                "SELECT prefix, status, job_name, operation_results, timestamp FROM {}",
                self.history_table
            ))
            .map_err(|e| self.missing_table(e))?;
        let mut rows = statement.query([])?;
        while let Some(r) = rows.next()? {
            visit(HistoryRow {
                prefix: r.get(0)?,
                status: parse_status(&r.get::<_, String>(1)?)?,
                job_name: r.get(2)?,
                operation_results: r.get(3)?,
                timestamp: parse_timestamp(&r.get::<_, String>(4)?)?,
            });
        }
        self.count(1);
        Ok(())
    }

    async fn failure_snapshots(&self) -> Result<Vec<HistoryRow>, StoreError> {
        // The latest row of each operation, among operations whose results
        // list failures (a text match first, so most rows are never grouped).
        let sql = format!(
            "SELECT h.prefix, h.status, h.job_name, h.operation_results, h.timestamp
             FROM {history} AS h JOIN (
                 SELECT MAX(rowid) AS last FROM {history}
                 WHERE operation_results IS NOT NULL
                   AND COALESCE(job_name, prefix) IN (
                       SELECT COALESCE(job_name, prefix) FROM {history}
                       WHERE instr(operation_results, '\"errorBreakdowns\"') > 0)
                 GROUP BY COALESCE(job_name, prefix)) AS m ON h.rowid = m.last
             WHERE instr(h.operation_results, '\"errorBreakdowns\"') > 0",
            history = self.history_table,
        );
        self.history_rows(&sql, None)
    }

    async fn snapshots_before(
        &self,
        requests: &[(String, DateTime<Utc>)],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = serde_json::to_string(
            &requests
                .iter()
                .map(|(prefix, before)| (prefix, timestamp_text(*before)))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let sql = format!(
            "SELECT h.prefix, h.status, h.job_name, h.operation_results, h.timestamp
             FROM json_each(?1) AS r JOIN {history} AS h ON h.rowid = (
                 SELECT x.rowid FROM {history} AS x
                 WHERE x.prefix = r.value ->> 0 AND x.timestamp < r.value ->> 1
                   AND x.operation_results IS NOT NULL
                 ORDER BY x.timestamp DESC, x.rowid DESC LIMIT 1)",
            history = self.history_table,
        );
        self.history_rows(&sql, Some(wanted))
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError> {
        self.check_file()?;
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut conn = self.lock();
        // IMMEDIATE: two managers starting together serialise here.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {}_lease (
                    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, until TEXT NOT NULL)",
                self.job_table
            ),
            [],
        )?;
        let current: Option<(String, String)> = tx
            .query_row(
                &format!(
                    "SELECT holder, until FROM {}_lease WHERE id = 1",
                    self.job_table
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((other, other_until)) = current {
            let other_until = parse_timestamp(&other_until)?;
            if other != holder && other_until > now && !holder_is_dead_here(&other) {
                return Ok(Lease::HeldBy {
                    holder: other,
                    until: other_until,
                });
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO {}_lease (id, holder, until) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, until = excluded.until",
                self.job_table
            ),
            params![holder, timestamp_text(until)],
        )?;
        tx.commit()?;
        Ok(Lease::Acquired)
    }

    async fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        let released = conn.execute(
            &format!(
                "DELETE FROM {}_lease WHERE id = 1 AND holder = ?1",
                self.job_table
            ),
            params![holder],
        );
        match released {
            Ok(_) => Ok(()),
            // Never leased: nothing to give up.
            Err(e) if e.to_string().contains("no such table") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl SideTables for SqliteStore {
    async fn save_plan(&self, planned: &[PlannedPrefix]) -> Result<(), StoreError> {
        let rows = serde_json::to_string(
            &planned
                .iter()
                .map(|p| (&p.prefix, p.objects, p.bytes))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch(&self.plan_schema())?;
        tx.execute(
            &format!(
                "INSERT INTO {}_plan (prefix, objects, bytes, planned_at)
                 SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true
                 ON CONFLICT (prefix) DO UPDATE SET objects = excluded.objects,
                    bytes = excluded.bytes, planned_at = excluded.planned_at",
                self.job_table
            ),
            params![rows, timestamp_text(Utc::now())],
        )?;
        tx.commit()?;
        self.count(2);
        Ok(())
    }

    async fn read_plan(&self) -> Result<Vec<PlannedPrefix>, StoreError> {
        let conn = self.lock();
        let statement = conn.prepare(&format!(
            "SELECT prefix, objects, bytes FROM {}_plan ORDER BY prefix",
            self.job_table
        ));
        let mut statement = match statement {
            Err(e) if e.to_string().contains("no such table") => return Ok(Vec::new()),
            other => other?,
        };
        let rows = statement.query_map([], |r| {
            Ok(PlannedPrefix {
                prefix: r.get(0)?,
                objects: r.get::<_, i64>(1)?.max(0) as u64,
                bytes: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })?;
        self.count(1);
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn save_verifications(&self, rows: &[Verification]) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(rows.len());
        for v in rows {
            encoded.push((
                &v.prefix,
                v.result.as_str(),
                v.objects_compared,
                v.missing,
                v.different,
                timestamp_text(v.checked_at),
                serde_json::to_string(&v.offending_objects)
                    .map_err(|e| StoreError::CorruptRow(e.to_string()))?,
            ));
        }
        let encoded =
            serde_json::to_string(&encoded).map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch(&self.verification_schema())?;
        tx.execute(
            &format!(
                "INSERT INTO {}_verification (prefix, result, objects_compared, missing,
                    different, checked_at, offending_objects)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                    value ->> 5, value ->> 6 FROM json_each(?1) WHERE true
                 ON CONFLICT (prefix) DO UPDATE SET result = excluded.result,
                    objects_compared = excluded.objects_compared, missing = excluded.missing,
                    different = excluded.different, checked_at = excluded.checked_at,
                    offending_objects = excluded.offending_objects",
                self.job_table
            ),
            params![encoded],
        )?;
        tx.commit()?;
        self.count(2);
        Ok(())
    }

    async fn read_verifications(&self) -> Result<Vec<Verification>, StoreError> {
        let conn = self.lock();
        let statement = conn.prepare(&format!(
            "SELECT prefix, result, objects_compared, missing, different, checked_at,
                offending_objects FROM {}_verification ORDER BY prefix",
            self.job_table
        ));
        let mut statement = match statement {
            Err(e) if e.to_string().contains("no such table") => return Ok(Vec::new()),
            other => other?,
        };
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (prefix, result, compared, missing, different, at, offending) = row?;
            out.push(Verification {
                prefix,
                result: VerifyResult::parse(&result)
                    .ok_or_else(|| StoreError::CorruptRow(format!("result '{result}'")))?,
                objects_compared: compared.max(0) as u64,
                missing: missing.max(0) as u64,
                different: different.max(0) as u64,
                checked_at: parse_timestamp(&at)?,
                offending_objects: serde_json::from_str(&offending).map_err(|e| {
                    StoreError::CorruptRow(format!("offending_objects '{offending}': {e}"))
                })?,
            });
        }
        self.count(1);
        Ok(out)
    }
}

impl SqliteStore {
    /// The plan table (README "State"): created on first use.
    fn plan_schema(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {0}_plan (
                prefix TEXT NOT NULL PRIMARY KEY,
                objects INTEGER NOT NULL,
                bytes INTEGER NOT NULL,
                planned_at TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {0}_plan_bytes ON {0}_plan (bytes DESC, prefix)",
            self.job_table
        )
    }

    /// The verification table (README "State"): created on first use.
    fn verification_schema(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}_verification (
                prefix TEXT NOT NULL PRIMARY KEY,
                result TEXT NOT NULL CHECK (result IN ('verified','mismatch')),
                objects_compared INTEGER NOT NULL,
                missing INTEGER NOT NULL,
                different INTEGER NOT NULL,
                checked_at TEXT NOT NULL,
                offending_objects TEXT NOT NULL)",
            self.job_table
        )
    }

    /// Whether the job table exists (the tools give a clear message if not).
    pub fn has_tables(&self) -> Result<bool, StoreError> {
        let conn = self.lock();
        let found: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                params![self.job_table],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
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
        assert_eq!(s.statements_issued() - before, 2);
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
