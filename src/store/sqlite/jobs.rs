//! The job table on SQLite: loads, reads, the one-transaction writes of
//! each step, and the failure counts.

use super::*;

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
        // History written by another tool is folded now, not at the first
        // write or read; in one transaction (row by row, each insert would
        // be a commit of its own).
        let tx = conn.unchecked_transaction()?;
        self.fold_history(&tx)?;
        tx.commit()?;
        self.count(5);
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
        let statements = self.apply_in(&tx, changes)?;
        tx.commit()?;
        self.count(statements);
        self.checkpoint_soon();
        Ok(())
    }

    fn statements_issued(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

impl SqliteStore {
    /// [`JobTable::apply`]'s writes inside a transaction the caller
    /// commits (a requeue with manifests adds its own): the statements run.
    pub(super) fn apply_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        changes: &ChangeSet,
    ) -> Result<u64, StoreError> {
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
            // The folds follow the rows in the same transaction.
            drop(insert);
            self.fold_history(tx)?;
            statements += 1;
        }
        Ok(statements)
    }
}
