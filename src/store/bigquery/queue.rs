//! The job table as a queue on BigQuery: counts per status as one
//! aggregate, the rows in flight, and the next waiting rows in start order
//! (largest planned first), each one statement.

use super::records::table_beside;
use super::sql;
use super::{columns, is_not_found, optional_text, status, text, timestamp, BigQueryStore};
use crate::model::PrefixJob;
use crate::store::{StatusCounts, StoreError};

const ROW: &str = "prefix, status, job_name, UNIX_MICROS(last_updated) AS last_updated";

fn job_of(cells: &[serde_json::Value]) -> Result<PrefixJob, StoreError> {
    let [prefix, status_cell, job_name, last_updated, ..] = cells else {
        return Err(StoreError::CorruptRow(format!("{} columns", cells.len())));
    };
    Ok(PrefixJob {
        prefix: text(prefix, "prefix")?,
        status: status(status_cell)?,
        job_name: optional_text(job_name, "job_name")?,
        last_updated: timestamp(last_updated)?,
    })
}

fn count(cell: &serde_json::Value, what: &str) -> Result<usize, StoreError> {
    let raw = text(cell, what)?;
    raw.parse()
        .map_err(|_| StoreError::CorruptRow(format!("{what} '{raw}'")))
}

impl BigQueryStore {
    pub(super) async fn select_status_counts(&self) -> Result<StatusCounts, StoreError> {
        let output = self
            .run(
                &format!(
                    "SELECT status, COUNT(*) AS n FROM {} GROUP BY status",
                    self.jobs.sql()
                ),
                vec![],
            )
            .await?;
        let mut counts = StatusCounts::default();
        for row in &output.rows {
            let [status_cell, n] = columns::<2>(row)?;
            counts.add(status(status_cell)?, count(n, "count")?);
        }
        Ok(counts)
    }

    pub(super) async fn select_active(&self) -> Result<Vec<PrefixJob>, StoreError> {
        let output = self
            .run(
                &format!(
                    "SELECT {ROW} FROM {} WHERE status IN ('running', 'paused', 'error') \
                     ORDER BY prefix",
                    self.jobs.sql()
                ),
                vec![],
            )
            .await?;
        output
            .rows
            .iter()
            .map(|r| job_of(columns::<4>(r)?))
            .collect()
    }

    pub(super) async fn select_next_waiting(
        &self,
        limit: usize,
    ) -> Result<Vec<(PrefixJob, u64)>, StoreError> {
        let limit = sql::int64_param("limit", i64::try_from(limit).unwrap_or(i64::MAX));
        let plan = table_beside(&self.jobs, "_plan")?;
        let planned = format!(
            "SELECT j.prefix, j.status, j.job_name, UNIX_MICROS(j.last_updated) AS last_updated, \
             IFNULL(p.bytes, 0) AS bytes FROM {jobs} AS j LEFT JOIN {plan} AS p \
             ON p.prefix = j.prefix WHERE j.status = 'waiting' \
             ORDER BY bytes DESC, j.prefix LIMIT @limit",
            jobs = self.jobs.sql(),
            plan = plan.sql(),
        );
        self.statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rows = match self.api.query(&planned, vec![limit.clone()]).await {
            Ok(output) => output.rows,
            // No plan table: nothing was planned, table order.
            Err(e) if is_not_found(&e) && !self.names_job_table(&e) => {
                self.run(&self.unplanned_sql(), vec![limit]).await?.rows
            }
            Err(e) => return Err(self.missing_table(e)),
        };
        rows.iter()
            .map(|row| {
                let cells = columns::<5>(row)?;
                let job = job_of(cells)?;
                Ok((
                    job,
                    count(&cells[4], "bytes").map(|b| b as u64).unwrap_or(0),
                ))
            })
            .collect()
    }

    fn unplanned_sql(&self) -> String {
        format!(
            "SELECT {ROW}, 0 AS bytes FROM {} WHERE status = 'waiting' ORDER BY prefix LIMIT @limit",
            self.jobs.sql()
        )
    }

    /// Whether a "not found" names the job table itself (then it is the
    /// missing-table error, not a missing plan table).
    fn names_job_table(&self, error: &StoreError) -> bool {
        error
            .to_string()
            .contains(&format!("{}.{}", self.jobs.dataset, self.jobs.table))
            && !error
                .to_string()
                .contains(&format!("{}_plan", self.jobs.table))
    }

    pub(super) async fn select_prefixes(
        &self,
        prefixes: &[String],
    ) -> Result<Vec<PrefixJob>, StoreError> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let output = self
            .run(
                &format!(
                    "SELECT {ROW} FROM {} WHERE prefix IN UNNEST(@prefixes) ORDER BY prefix",
                    self.jobs.sql()
                ),
                vec![sql::string_array_param("prefixes", prefixes)],
            )
            .await?;
        output
            .rows
            .iter()
            .map(|r| job_of(columns::<4>(r)?))
            .collect()
    }
}
