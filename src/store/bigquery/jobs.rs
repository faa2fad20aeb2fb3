//! The job table on BigQuery: loads, reads, and the constant number of
//! statements each step's writes cost.

use super::*;

#[async_trait]
impl JobTable for BigQueryStore {
    async fn prepare(&self) -> Result<(), StoreError> {
        if self
            .api
            .ensure_dataset(&self.dataset, &self.location)
            .await?
        {
            tracing::info!(
                "created dataset {}.{} in {}",
                self.jobs.project,
                self.dataset,
                self.location
            );
        }
        for (table, schema) in [
            (&self.jobs, job_table_schema()),
            (&self.history, history_table_schema()),
        ] {
            let body = Table::new(&table.project, &table.dataset, &table.table, schema);
            if self.api.ensure_table(body).await? {
                tracing::info!("created table {}", table.sql());
            }
        }
        self.statements.fetch_add(3, Ordering::Relaxed);
        Ok(())
    }

    async fn load_prefixes(&self, prefixes: &[String]) -> Result<LoadReport, StoreError> {
        let batches = sql::load_batches(prefixes);
        let inserted = match batches.as_slice() {
            [] => 0,
            [only] => {
                let output = self
                    .run(
                        &sql::insert_prefixes(&self.jobs),
                        vec![
                            sql::string_array_param("prefixes", only),
                            sql::timestamp_param("now", Utc::now()),
                        ],
                    )
                    .await?;
                self.affected(output).await?
            }
            many => {
                let staging = self.staging_table()?;
                let loaded = self.load_through_staging(many, &staging).await;
                // Best effort: a leftover staging table holds only prefixes.
                if let Err(e) = self.api.delete_table(&staging).await {
                    tracing::warn!("could not delete staging table {}: {e}", staging.sql());
                }
                loaded?
            }
        };
        Ok(LoadReport {
            inserted,
            already_present: prefixes.len().saturating_sub(inserted),
        })
    }

    async fn read_jobs(&self) -> Result<Vec<PrefixJob>, StoreError> {
        let output = self.run(&sql::select_jobs(&self.jobs), vec![]).await?;
        output
            .rows
            .iter()
            .map(|row| {
                let [prefix, status_cell, job_name, last_updated] = columns::<4>(row)?;
                Ok(PrefixJob {
                    prefix: text(prefix, "prefix")?,
                    status: status(status_cell)?,
                    job_name: optional_text(job_name, "job_name")?,
                    last_updated: timestamp(last_updated)?,
                })
            })
            .collect()
    }

    async fn read_unfinished(&self) -> Result<(Vec<PrefixJob>, usize), StoreError> {
        let output = self
            .run(&sql::select_unfinished(&self.jobs), vec![])
            .await?;
        let count = |cell: &serde_json::Value| -> Result<usize, StoreError> {
            let text = text(cell, "total")?;
            text.parse()
                .map_err(|_| StoreError::CorruptRow(format!("row count '{text}'")))
        };
        let mut total = None;
        let rows = output
            .rows
            .iter()
            .map(|row| {
                let [prefix, status_cell, job_name, last_updated, all] = columns::<5>(row)?;
                total = Some(count(all)?);
                Ok(PrefixJob {
                    prefix: text(prefix, "prefix")?,
                    status: status(status_cell)?,
                    job_name: optional_text(job_name, "job_name")?,
                    last_updated: timestamp(last_updated)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let total = match total {
            Some(total) => total,
            None => {
                let output = self.run(&sql::count_rows(&self.jobs), vec![]).await?;
                match output.rows.first() {
                    Some(row) => {
                        let [all] = columns::<1>(row)?;
                        count(all)?
                    }
                    None => 0,
                }
            }
        };
        Ok((rows, total))
    }

    async fn count_by_status(&self) -> Result<crate::store::StatusCounts, StoreError> {
        self.select_status_counts().await
    }

    async fn read_active(&self) -> Result<Vec<PrefixJob>, StoreError> {
        self.select_active().await
    }

    async fn next_waiting(&self, limit: usize) -> Result<Vec<(PrefixJob, u64)>, StoreError> {
        self.select_next_waiting(limit).await
    }

    async fn read_prefixes(&self, prefixes: &[String]) -> Result<Vec<PrefixJob>, StoreError> {
        self.select_prefixes(prefixes).await
    }

    async fn failure_counts(&self) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        let sql = crate::store::sqlite::failure_counts_sql(&self.jobs.sql(), &self.history.sql());
        let output = self.run(&sql, vec![]).await?;
        output
            .rows
            .iter()
            .map(|row| {
                let [prefix, count] = columns::<2>(row)?;
                let count = text(count, "count")?;
                let count = count
                    .parse::<u32>()
                    .map_err(|_| StoreError::CorruptRow(format!("failure count '{count}'")))?;
                Ok((text(prefix, "prefix")?, count))
            })
            .collect()
    }

    async fn apply(&self, changes: &ChangeSet) -> Result<(), StoreError> {
        // History first: see the module comment for why this order.
        for batch in sql::history_batches(&changes.history) {
            self.run(
                &sql::insert_history(&self.history),
                vec![sql::history_param(batch)],
            )
            .await?;
        }
        for batch in sql::update_batches(&changes.updates) {
            self.run(
                &sql::update_jobs(&self.jobs),
                vec![sql::updates_param(batch)],
            )
            .await?;
        }
        Ok(())
    }

    fn statements_issued(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}
