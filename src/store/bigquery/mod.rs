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
mod history;
mod jobs;
mod lease;
mod queue;
mod quiet;
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
