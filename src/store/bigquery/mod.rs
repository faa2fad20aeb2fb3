//! The BigQuery state store: the two tables of SPEC 2 in `PROJECT.DATASET`,
//! written with DML only (never streaming inserts, whose buffer blocks
//! UPDATE for up to 90 minutes), every value a query parameter.
//!
//! A cycle is at most two statements (one INSERT into the history table, one
//! UPDATE of the job table) unless its parameters exceed
//! [`sql::APPLY_BATCH_BYTES`]. bqemulator does not bind parameters inside
//! multi-statement transactions, so the two tables are written by separate
//! statements, history first: if the UPDATE then fails, the next sync sees
//! the same differences and writes them again (a history row may repeat;
//! none is lost, and each table is always in a state some statement left).

pub mod client;
mod queue;
pub mod records;
pub mod sql;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;

use self::client::{Api, BIGQUERY_URL};
use self::sql::TableName;
use super::{check_identifier, holder_is_dead_here, Lease, LoadReport, StoreError};
use crate::auth::GoogleAuth;
use crate::model::ChangeSet;
use crate::model::{HistoryRow, PrefixJob, Status};
use crate::store::HistoryReads;
use crate::store::JobTable;
use crate::store::LeaseStore;
use crate::store::SideTables;

/// Ten years: longer leases are cut to this.
const MAX_LEASE_MS: i64 = 10 * 366 * 24 * 3600 * 1000;

fn is_not_found(e: &StoreError) -> bool {
    match e {
        StoreError::Api { code, .. } => *code == 404,
        StoreError::Statement { reason, .. } => reason == "notFound",
        _ => false,
    }
}

fn names_dataset(e: &StoreError) -> bool {
    matches!(e, StoreError::Api { message, .. } | StoreError::Statement { message, .. }
        if message.contains("Not found: Dataset"))
}

/// `host:port` of a BigQuery emulator: plain HTTP, no credentials.
pub const EMULATOR_ENV: &str = "BIGQUERY_EMULATOR_HOST";

/// Where the tables are and how to reach BigQuery.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Option<String>,
    pub dataset: String,
    pub location: String,
    pub job_table: String,
    pub history_table: String,
    /// `host:port` (or a URL) of an emulator.
    pub emulator_host: Option<String>,
}

pub struct BigQueryStore {
    api: Api,
    dataset: String,
    location: String,
    jobs: TableName,
    history: TableName,
    lease: TableName,
    statements: AtomicU64,
}

fn field(name: &str, kind: FieldType, mode: &str) -> TableFieldSchema {
    let mut field = TableFieldSchema::new(name, kind);
    field.mode = Some(mode.to_string());
    field
}

/// SPEC 2, the public contract: names, types and modes.
pub fn job_table_schema() -> TableSchema {
    TableSchema::new(vec![
        field("prefix", FieldType::String, "REQUIRED"),
        field("status", FieldType::String, "REQUIRED"),
        field("job_name", FieldType::String, "NULLABLE"),
        field("last_updated", FieldType::Timestamp, "REQUIRED"),
    ])
}

/// The lease table (ours, not part of SPEC 2): who runs the job table.
pub fn lease_table_schema() -> TableSchema {
    TableSchema::new(vec![
        field("holder", FieldType::String, "REQUIRED"),
        field("until", FieldType::Timestamp, "REQUIRED"),
    ])
}

/// SPEC 2, the public contract: names, types and modes.
pub fn history_table_schema() -> TableSchema {
    TableSchema::new(vec![
        field("prefix", FieldType::String, "REQUIRED"),
        field("status", FieldType::String, "REQUIRED"),
        field("job_name", FieldType::String, "NULLABLE"),
        field("operation_results", FieldType::String, "NULLABLE"),
        field("timestamp", FieldType::Timestamp, "REQUIRED"),
    ])
}

pub(crate) fn text(cell: &serde_json::Value, what: &str) -> Result<String, StoreError> {
    cell.as_str()
        .map(str::to_owned)
        .ok_or_else(|| StoreError::CorruptRow(format!("{what}: expected a string, got {cell}")))
}

fn optional_text(cell: &serde_json::Value, what: &str) -> Result<Option<String>, StoreError> {
    if cell.is_null() {
        Ok(None)
    } else {
        text(cell, what).map(Some)
    }
}

/// Timestamps are selected as `UNIX_MICROS(...)`: INT64 cells, sent as strings.
fn timestamp(cell: &serde_json::Value) -> Result<DateTime<Utc>, StoreError> {
    let raw = text(cell, "timestamp")?;
    raw.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| StoreError::CorruptRow(format!("timestamp '{raw}'")))
}

fn status(cell: &serde_json::Value) -> Result<Status, StoreError> {
    let raw = text(cell, "status")?;
    Status::parse(&raw).ok_or_else(|| StoreError::CorruptRow(format!("status '{raw}'")))
}

/// Prefixes per snapshot query: keeps each request well under BigQuery's
/// size limits.
const SNAPSHOT_BATCH: usize = 10_000;

/// Rows whose columns are the history table's, in its order.
fn history_rows(output: &client::QueryOutput) -> Result<Vec<HistoryRow>, StoreError> {
    output.rows.iter().map(|row| history_row(row)).collect()
}

fn history_row(row: &[serde_json::Value]) -> Result<HistoryRow, StoreError> {
    let [prefix, status_cell, job_name, results, at] = columns::<5>(row)?;
    Ok(HistoryRow {
        prefix: text(prefix, "prefix")?,
        status: status(status_cell)?,
        job_name: optional_text(job_name, "job_name")?,
        operation_results: optional_text(results, "operation_results")?,
        timestamp: timestamp(at)?,
    })
}

pub(crate) fn columns<const N: usize>(
    row: &[serde_json::Value],
) -> Result<&[serde_json::Value; N], StoreError> {
    row.try_into()
        .map_err(|_| StoreError::CorruptRow(format!("expected {N} columns, got {}", row.len())))
}

impl BigQueryStore {
    /// Checks every name first, so a bad one is refused before any request
    /// (or credential lookup) happens. Nothing is sent until the first call.
    pub fn open(settings: &Settings) -> Result<Self, StoreError> {
        check_identifier(&settings.dataset)?;
        check_identifier(&settings.job_table)?;
        check_identifier(&settings.history_table)?;
        let project = settings.project.clone().ok_or(StoreError::NoProject)?;
        let jobs = TableName::new(&project, &settings.dataset, &settings.job_table)?;
        let history = TableName::new(&project, &settings.dataset, &settings.history_table)?;
        let lease = sql::lease_table(&jobs)?;
        let (base_url, auth) = match &settings.emulator_host {
            Some(host) => {
                let host = host.trim_end_matches('/');
                let url = if host.starts_with("http://") || host.starts_with("https://") {
                    format!("{host}/bigquery/v2")
                } else {
                    format!("http://{host}/bigquery/v2")
                };
                (
                    url,
                    GoogleAuth::resolve(true).map_err(|e| StoreError::Auth(e.to_string()))?,
                )
            }
            None => (
                BIGQUERY_URL.to_string(),
                GoogleAuth::resolve(false).map_err(|e| StoreError::Auth(e.to_string()))?,
            ),
        };
        Ok(BigQueryStore {
            api: Api::new(base_url, auth, project),
            dataset: settings.dataset.clone(),
            location: settings.location.clone(),
            jobs,
            history,
            lease,
            statements: AtomicU64::new(0),
        })
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn job_table(&self) -> &TableName {
        &self.jobs
    }

    pub fn history_table(&self) -> &TableName {
        &self.history
    }

    async fn run(
        &self,
        sql: &str,
        parameters: Vec<gcp_bigquery_client::model::query_parameter::QueryParameter>,
    ) -> Result<client::QueryOutput, StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.api
            .query(sql, parameters)
            .await
            .map_err(|e| self.missing_table(e))
    }

    /// "Not found" names the table to create (with the tool that creates it).
    fn missing_table(&self, error: StoreError) -> StoreError {
        let message = match &error {
            StoreError::Api { message, .. } | StoreError::Statement { message, .. }
                if is_not_found(&error) =>
            {
                message
            }
            _ => return error,
        };
        let qualified = |t: &TableName| format!("{}.{}.{}", t.project, t.dataset, t.table);
        if message.contains(&self.history.table) {
            StoreError::MissingTable(qualified(&self.history))
        } else {
            StoreError::MissingTable(qualified(&self.jobs))
        }
    }

    /// A private table for a load too big for one statement, so the job
    /// table still gains every new prefix in one statement (all or none).
    fn staging_table(&self) -> Result<TableName, StoreError> {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        TableName::new(
            &self.jobs.project,
            &self.jobs.dataset,
            &format!("{}_load_{}_{nanos:x}", self.jobs.table, std::process::id()),
        )
    }

    async fn load_through_staging(
        &self,
        batches: &[&[String]],
        staging: &TableName,
    ) -> Result<usize, StoreError> {
        let schema = TableSchema::new(vec![field("prefix", FieldType::String, "REQUIRED")]);
        self.api
            .ensure_table(Table::new(
                &staging.project,
                &staging.dataset,
                &staging.table,
                schema,
            ))
            .await
            .map_err(|e| self.missing_table(e))?;
        let fill = format!(
            "INSERT INTO {} (prefix) SELECT p FROM UNNEST(@prefixes) AS p",
            staging.sql()
        );
        for batch in batches {
            self.run(&fill, vec![sql::string_array_param("prefixes", batch)])
                .await?;
        }
        let output = self
            .run(
                &sql::insert_from_staging(&self.jobs, staging),
                vec![sql::timestamp_param("now", Utc::now())],
            )
            .await?;
        self.affected(output).await
    }

    /// A lease statement; its table is created (with its one free row) the
    /// first time it is missing, so existing datasets need no migration.
    async fn lease_statement(
        &self,
        sql: &str,
        parameters: Vec<gcp_bigquery_client::model::query_parameter::QueryParameter>,
    ) -> Result<client::QueryOutput, StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        match self.api.query(sql, parameters.clone()).await {
            // No dataset: nothing to lease yet (the job table is missing too).
            Err(e) if is_not_found(&e) && names_dataset(&e) => Err(self.missing_table(e)),
            Err(e) if is_not_found(&e) => {
                self.create_lease_table().await?;
                self.statements.fetch_add(1, Ordering::Relaxed);
                self.api.query(sql, parameters).await
            }
            answered => answered,
        }
    }

    async fn create_lease_table(&self) -> Result<(), StoreError> {
        let lease = &self.lease;
        let body = Table::new(
            &lease.project,
            &lease.dataset,
            &lease.table,
            lease_table_schema(),
        );
        // A missing dataset is reported as the missing job table.
        if self
            .api
            .ensure_table(body)
            .await
            .map_err(|e| self.missing_table(e))?
        {
            tracing::info!("created lease table {}", lease.sql());
        }
        self.seed_lease().await
    }

    async fn seed_lease(&self) -> Result<(), StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.api
            .query(&sql::seed_lease(&self.lease), vec![])
            .await?;
        Ok(())
    }

    /// Compare-and-swap: true when `holder` now has the lease.
    async fn take_lease(
        &self,
        holder: &str,
        replaced: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // Capped so TIMESTAMP_ADD cannot overflow (a lease of years is
        // as good as forever).
        let ttl_ms = i64::try_from(ttl.as_millis()).map_or(MAX_LEASE_MS, |ms| ms.min(MAX_LEASE_MS));
        let output = self
            .lease_statement(
                &sql::take_lease(&self.lease),
                vec![
                    sql::string_param("holder", holder),
                    sql::string_param("replaced", replaced),
                    sql::int64_param("ttl_ms", ttl_ms),
                ],
            )
            .await?;
        Ok(self.affected(output).await? > 0)
    }

    /// The live holder and its expiry, or None when the table has no row.
    async fn current_lease(&self) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let output = self
            .lease_statement(&sql::read_lease(&self.lease), vec![])
            .await?;
        match output.rows.first() {
            None => Ok(None),
            Some(row) => {
                let [holder, until] = columns::<2>(row)?;
                Ok(Some((text(holder, "holder")?, timestamp(until)?)))
            }
        }
    }

    async fn affected(&self, output: client::QueryOutput) -> Result<usize, StoreError> {
        output
            .affected_rows
            .map(|n| n as usize)
            .ok_or_else(|| StoreError::Statement {
                reason: "invalidResponse".into(),
                message: "BigQuery did not report how many rows the INSERT added".into(),
            })
    }
}

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

#[async_trait]
impl HistoryReads for BigQueryStore {
    async fn read_history(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let output = self
            .run(&sql::select_history(&self.history), vec![])
            .await?;
        history_rows(&output)
    }

    async fn scan_history(
        &self,
        visit: &mut (dyn FnMut(HistoryRow) + Send),
    ) -> Result<(), StoreError> {
        // Page by page: the history of a long migration never held at once.
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.api
            .query_pages(&sql::select_history(&self.history), vec![], &mut |page| {
                for row in &page {
                    visit(history_row(row)?);
                }
                Ok(())
            })
            .await
            .map_err(|e| self.missing_table(e))?;
        Ok(())
    }

    async fn latest_snapshots(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let output = self
            .run(
                &sql::select_latest_snapshots(&self.history, &self.jobs),
                vec![],
            )
            .await?;
        history_rows(&output)
    }

    async fn snapshots_before(
        &self,
        requests: &[(String, DateTime<Utc>)],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let mut rows = Vec::new();
        let one_time = requests.first().map(|(_, t)| *t);
        for batch in requests.chunks(SNAPSHOT_BATCH) {
            let output = match one_time {
                Some(t) if requests.iter().all(|(_, b)| *b == t) => {
                    let prefixes: Vec<String> = batch.iter().map(|(p, _)| p.clone()).collect();
                    self.run(
                        &sql::select_snapshots_before_one_time(&self.history),
                        vec![
                            sql::string_array_param("prefixes", &prefixes),
                            sql::timestamp_param("before", t),
                        ],
                    )
                    .await?
                }
                _ => {
                    self.run(
                        &sql::select_snapshots_before_each(&self.history),
                        vec![sql::wanted_param(batch)],
                    )
                    .await?
                }
            };
            rows.extend(history_rows(&output)?);
        }
        Ok(rows)
    }
}

#[async_trait]
impl LeaseStore for BigQueryStore {
    /// One UPDATE per renewal; a read only when it is refused. A few rounds,
    /// because the lease can change hands between the two (freed, expired,
    /// or its holder found dead).
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError> {
        let mut replaced = holder.to_string();
        let mut refused = None;
        for _ in 0..3 {
            if self.take_lease(holder, &replaced, ttl).await? {
                return Ok(Lease::Acquired);
            }
            match self.current_lease().await? {
                None => self.seed_lease().await?,
                Some((other, _)) if other != replaced && holder_is_dead_here(&other) => {
                    tracing::info!("lease holder {other} is no longer running; taking over");
                    replaced = other;
                }
                Some((other, until)) => {
                    if !other.is_empty() && until > Utc::now() {
                        return Ok(Lease::HeldBy {
                            holder: other,
                            until,
                        });
                    }
                    refused = Some((other, until));
                }
            }
        }
        let (holder, until) = refused.unwrap_or_default();
        Ok(Lease::HeldBy { holder, until })
    }

    async fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        match self
            .api
            .query(
                &sql::release_lease(&self.lease),
                vec![sql::string_param("holder", holder)],
            )
            .await
        {
            // Never leased: nothing to give up.
            Err(e) if is_not_found(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[async_trait]
impl SideTables for BigQueryStore {
    async fn save_plan(&self, planned: &[crate::records::PlannedPrefix]) -> Result<(), StoreError> {
        self.merge_plan(planned).await
    }

    async fn read_plan(&self) -> Result<Vec<crate::records::PlannedPrefix>, StoreError> {
        self.select_plan().await
    }

    async fn save_verifications(
        &self,
        rows: &[crate::records::Verification],
    ) -> Result<(), StoreError> {
        self.merge_verifications(rows).await
    }

    async fn read_verifications(&self) -> Result<Vec<crate::records::Verification>, StoreError> {
        self.select_verifications().await
    }
}
