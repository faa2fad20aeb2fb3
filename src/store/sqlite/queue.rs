//! The job table as a queue: counts per status as one aggregate, the rows
//! in flight, and the next waiting rows in start order, each a lookup in
//! the `(status, prefix)` index (and the plan table's `(bytes, prefix)`
//! index), so a cycle at a million waiting prefixes reads what it starts.

use rusqlite::{params, Connection};

use super::{parse_status, SqliteStore};
use crate::model::PrefixJob;
use crate::store::{StatusCounts, StoreError};

impl SqliteStore {
    /// The index the queue reads by (made by `prepare`, or here for files
    /// made before it existed; a read-only file goes without).
    pub(super) fn ensure_status_index(&self, conn: &Connection) {
        let _ = conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {jobs}_status_prefix ON {jobs} (status, prefix)",
            jobs = self.job_table
        ));
    }

    pub(super) fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT status, COUNT(*) FROM {} GROUP BY status",
                self.job_table
            ))
            .map_err(|e| self.missing_table(e))?;
        let mut counts = StatusCounts::default();
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            counts.add(parse_status(&status)?, usize::try_from(n).unwrap_or(0));
        }
        self.count(1);
        Ok(counts)
    }

    pub(super) fn active_rows(&self) -> Result<Vec<PrefixJob>, StoreError> {
        let conn = self.lock();
        self.ensure_status_index(&conn);
        let jobs = self.select_jobs(
            &conn,
            &format!(
                "SELECT prefix, status, job_name, last_updated FROM {}
                 WHERE status IN ('running', 'paused', 'error') ORDER BY prefix",
                self.job_table
            ),
        )?;
        self.count(1);
        Ok(jobs)
    }

    /// Planned rows first, walking the plan by bytes (largest first); then,
    /// when they are fewer than `limit`, the unplanned (or empty) ones in
    /// prefix order.
    pub(super) fn waiting_in_start_order(
        &self,
        limit: usize,
    ) -> Result<Vec<(PrefixJob, u64)>, StoreError> {
        let conn = self.lock();
        self.ensure_status_index(&conn);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let jobs = &self.job_table;
        let has_plan = conn
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1 || '_plan'",
            )?
            .exists(params![jobs])?;
        let mut found: Vec<(PrefixJob, u64)> = Vec::new();
        if has_plan {
            let _ = conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {jobs}_plan_bytes ON {jobs}_plan (bytes DESC, prefix)"
            ));
            // CROSS JOIN keeps the plan as the outer loop: its index gives
            // the order, and each row is one primary-key lookup.
            let mut statement = conn.prepare_cached(&format!(
                "SELECT j.prefix, p.bytes FROM {jobs}_plan p CROSS JOIN {jobs} j
                 WHERE j.prefix = p.prefix AND j.status = 'waiting' AND p.bytes > 0
                 ORDER BY p.bytes DESC, p.prefix LIMIT ?1"
            ))?;
            let planned = statement
                .query_map(params![limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let rows = self.rows_on(
                &conn,
                &planned.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            )?;
            let mut by_prefix: std::collections::HashMap<String, PrefixJob> =
                rows.into_iter().map(|r| (r.prefix.clone(), r)).collect();
            for (prefix, bytes) in planned {
                if let Some(row) = by_prefix.remove(&prefix) {
                    found.push((row, u64::try_from(bytes).unwrap_or(0)));
                }
            }
        }
        let left = limit.saturating_sub(found.len() as i64);
        if left > 0 {
            let unplanned = if has_plan {
                format!(
                    "SELECT prefix, status, job_name, last_updated FROM {jobs} j
                     WHERE status = 'waiting' AND NOT EXISTS (
                        SELECT 1 FROM {jobs}_plan p WHERE p.prefix = j.prefix AND p.bytes > 0)
                     ORDER BY prefix LIMIT ?1"
                )
            } else {
                format!(
                    "SELECT prefix, status, job_name, last_updated FROM {jobs}
                     WHERE status = 'waiting' ORDER BY prefix LIMIT ?1"
                )
            };
            let rows = self.select_jobs_with(&conn, &unplanned, params![left])?;
            found.extend(rows.into_iter().map(|r| (r, 0)));
        }
        self.count(2);
        Ok(found)
    }

    pub(super) fn rows_of(&self, prefixes: &[String]) -> Result<Vec<PrefixJob>, StoreError> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.lock();
        let rows = self.rows_on(&conn, prefixes)?;
        self.count(1);
        Ok(rows)
    }

    fn rows_on(
        &self,
        conn: &Connection,
        prefixes: &[String],
    ) -> Result<Vec<PrefixJob>, StoreError> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let wanted =
            serde_json::to_string(prefixes).map_err(|e| StoreError::CorruptRow(e.to_string()))?;
        self.select_jobs_with(
            conn,
            &format!(
                "SELECT prefix, status, job_name, last_updated FROM {}
                 WHERE prefix IN (SELECT value FROM json_each(?1)) ORDER BY prefix",
                self.job_table
            ),
            params![wanted],
        )
    }
}
