//! The history table on SQLite as analysis reads it: whole, scanned, or
//! one snapshot per prefix.

use super::*;

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

    async fn status_view(
        &self,
        quiet_before: DateTime<Utc>,
    ) -> Result<Option<crate::figures::StatusView>, StoreError> {
        self.check_file()?;
        self.read_status_view(quiet_before)
    }

    async fn figures_total(&self) -> Result<Option<crate::figures::Figures>, StoreError> {
        self.check_file()?;
        self.read_figures_total()
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
