//! The plan, verification and failed-objects tables beside the job table
//! in BigQuery (`{job_table}_plan`, `{job_table}_verification`,
//! `{job_table}_failed_objects`), created on first use like the lease table
//! and written with MERGE (one row per prefix; a prefix planned or checked
//! again gets its new row; one row per operation, object and action, kept
//! when read again).

use std::sync::atomic::Ordering;

use chrono::Utc;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_schema::TableSchema;

use super::sql::{self, TableName};
use super::{columns, field, is_not_found, names_dataset, text, timestamp, BigQueryStore};
use crate::records::{FailedObject, PlannedPrefix, Verification, VerifyResult};
use crate::store::StoreError;

/// Rows per MERGE: keeps each request well under BigQuery's size limits
/// (a verification row carries up to 100 object names).
const PLAN_ROWS_PER_STATEMENT: usize = 5000;
const VERIFICATION_ROWS_PER_STATEMENT: usize = 200;
/// A failed object's row holds an object name (up to 1,024 bytes) and a
/// message.
const FAILED_OBJECT_ROWS_PER_STATEMENT: usize = 1000;

pub fn failed_objects_table_schema() -> TableSchema {
    TableSchema::new(vec![
        field("prefix", FieldType::String, "REQUIRED"),
        field("object", FieldType::String, "REQUIRED"),
        field("action", FieldType::String, "REQUIRED"),
        field("error_code", FieldType::String, "REQUIRED"),
        field("message", FieldType::String, "REQUIRED"),
        field("operation", FieldType::String, "REQUIRED"),
        field("time", FieldType::Timestamp, "REQUIRED"),
    ])
}

const FAILED_OBJECT_FIELDS: &[(&str, &str)] = &[
    ("prefix", "STRING"),
    ("object", "STRING"),
    ("action", "STRING"),
    ("error_code", "STRING"),
    ("message", "STRING"),
    ("operation", "STRING"),
    ("time", "TIMESTAMP"),
];

/// `MERGE` of `@rows` into the failed-objects table: rows not there yet
/// (by operation, object and action) are inserted, others left alone.
fn insert_new_failed_objects(table: &TableName) -> String {
    let names: Vec<&str> = FAILED_OBJECT_FIELDS.iter().map(|(n, _)| *n).collect();
    format!(
        "MERGE {t} AS t USING (SELECT DISTINCT {select} FROM UNNEST(@rows) AS r) AS s \
         ON t.operation = s.operation AND t.object = s.object AND t.action = s.action \
         WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})",
        t = table.sql(),
        select = names
            .iter()
            .map(|n| format!("r.{n} AS {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        columns = names.join(", "),
        values = names
            .iter()
            .map(|n| format!("s.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub fn plan_table_schema() -> TableSchema {
    TableSchema::new(vec![
        field("prefix", FieldType::String, "REQUIRED"),
        field("objects", FieldType::Int64, "REQUIRED"),
        field("bytes", FieldType::Int64, "REQUIRED"),
        field("planned_at", FieldType::Timestamp, "REQUIRED"),
    ])
}

pub fn verification_table_schema() -> TableSchema {
    TableSchema::new(vec![
        field("prefix", FieldType::String, "REQUIRED"),
        field("result", FieldType::String, "REQUIRED"),
        field("objects_compared", FieldType::Int64, "REQUIRED"),
        field("missing", FieldType::Int64, "REQUIRED"),
        field("different", FieldType::Int64, "REQUIRED"),
        field("checked_at", FieldType::Timestamp, "REQUIRED"),
        field("offending_objects", FieldType::String, "REQUIRED"),
    ])
}

const PLAN_FIELDS: &[(&str, &str)] = &[
    ("prefix", "STRING"),
    ("objects", "INT64"),
    ("bytes", "INT64"),
    ("planned_at", "TIMESTAMP"),
];

const VERIFICATION_FIELDS: &[(&str, &str)] = &[
    ("prefix", "STRING"),
    ("result", "STRING"),
    ("objects_compared", "INT64"),
    ("missing", "INT64"),
    ("different", "INT64"),
    ("checked_at", "TIMESTAMP"),
    ("offending_objects", "STRING"),
];

pub(super) fn table_beside(jobs: &TableName, suffix: &str) -> Result<TableName, StoreError> {
    TableName::new(
        &jobs.project,
        &jobs.dataset,
        &format!("{}{suffix}", jobs.table),
    )
}

/// `MERGE` of `@rows` into `table` by prefix.
fn merge(table: &TableName, fields: &[(&str, &str)]) -> String {
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    let set = names[1..]
        .iter()
        .map(|n| format!("{n} = s.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let select = names
        .iter()
        .map(|n| format!("r.{n} AS {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "MERGE {t} AS t USING (SELECT {select} FROM UNNEST(@rows) AS r) AS s \
         ON t.prefix = s.prefix \
         WHEN MATCHED THEN UPDATE SET {set} \
         WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})",
        t = table.sql(),
        columns = names.join(", "),
        values = names
            .iter()
            .map(|n| format!("s.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn number(cell: &serde_json::Value, what: &str) -> Result<u64, StoreError> {
    let raw = text(cell, what)?;
    raw.parse()
        .map_err(|_| StoreError::CorruptRow(format!("{what} '{raw}'")))
}

impl BigQueryStore {
    /// A statement on a table of ours beside the job table; the table is
    /// created the first time it is missing.
    async fn beside_statement(
        &self,
        table: &TableName,
        schema: fn() -> TableSchema,
        sql: &str,
        parameters: Vec<QueryParameter>,
    ) -> Result<super::client::QueryOutput, StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        match self.api.query(sql, parameters.clone()).await {
            Err(e) if is_not_found(&e) && names_dataset(&e) => Err(self.missing_table(e)),
            Err(e) if is_not_found(&e) => {
                let body = Table::new(&table.project, &table.dataset, &table.table, schema());
                if self.api.ensure_table(body).await? {
                    tracing::info!("created table {}", table.sql());
                }
                self.statements.fetch_add(1, Ordering::Relaxed);
                self.api.query(sql, parameters).await
            }
            answered => answered,
        }
    }

    /// A read of a table of ours: a missing table reads as empty.
    async fn read_beside(&self, sql: &str) -> Result<Vec<Vec<serde_json::Value>>, StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        match self.api.query(sql, vec![]).await {
            Ok(output) => Ok(output.rows),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn merge_plan(&self, planned: &[PlannedPrefix]) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_plan")?;
        let now = sql::timestamp_value(Utc::now());
        for batch in planned.chunks(PLAN_ROWS_PER_STATEMENT) {
            let rows = batch
                .iter()
                .map(|p| {
                    vec![
                        ("prefix", Some(p.prefix.clone())),
                        ("objects", Some(p.objects.to_string())),
                        ("bytes", Some(p.bytes.to_string())),
                        ("planned_at", Some(now.clone())),
                    ]
                })
                .collect();
            self.beside_statement(
                &table,
                plan_table_schema,
                &merge(&table, PLAN_FIELDS),
                vec![sql::struct_rows_param("rows", PLAN_FIELDS, rows)],
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn select_plan(&self) -> Result<Vec<PlannedPrefix>, StoreError> {
        let table = table_beside(&self.jobs, "_plan")?;
        let rows = self
            .read_beside(&format!(
                "SELECT prefix, objects, bytes FROM {} ORDER BY prefix",
                table.sql()
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let [prefix, objects, bytes] = columns::<3>(row)?;
                Ok(PlannedPrefix {
                    prefix: text(prefix, "prefix")?,
                    objects: number(objects, "objects")?,
                    bytes: number(bytes, "bytes")?,
                })
            })
            .collect()
    }

    pub(super) async fn merge_verifications(
        &self,
        checked: &[Verification],
    ) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_verification")?;
        for batch in checked.chunks(VERIFICATION_ROWS_PER_STATEMENT) {
            let mut rows = Vec::with_capacity(batch.len());
            for v in batch {
                let offending = serde_json::to_string(&v.offending_objects)
                    .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
                rows.push(vec![
                    ("prefix", Some(v.prefix.clone())),
                    ("result", Some(v.result.as_str().to_string())),
                    ("objects_compared", Some(v.objects_compared.to_string())),
                    ("missing", Some(v.missing.to_string())),
                    ("different", Some(v.different.to_string())),
                    ("checked_at", Some(sql::timestamp_value(v.checked_at))),
                    ("offending_objects", Some(offending)),
                ]);
            }
            self.beside_statement(
                &table,
                verification_table_schema,
                &merge(&table, VERIFICATION_FIELDS),
                vec![sql::struct_rows_param("rows", VERIFICATION_FIELDS, rows)],
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn select_verifications(&self) -> Result<Vec<Verification>, StoreError> {
        let table = table_beside(&self.jobs, "_verification")?;
        let rows = self
            .read_beside(&format!(
                "SELECT prefix, result, objects_compared, missing, different, \
                 UNIX_MICROS(checked_at) AS checked_at, offending_objects FROM {} ORDER BY prefix",
                table.sql()
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let [prefix, result, compared, missing, different, at, offending] =
                    columns::<7>(row)?;
                let result = text(result, "result")?;
                let offending = text(offending, "offending_objects")?;
                Ok(Verification {
                    prefix: text(prefix, "prefix")?,
                    result: VerifyResult::parse(&result)
                        .ok_or_else(|| StoreError::CorruptRow(format!("result '{result}'")))?,
                    objects_compared: number(compared, "objects_compared")?,
                    missing: number(missing, "missing")?,
                    different: number(different, "different")?,
                    checked_at: timestamp(at)?,
                    offending_objects: serde_json::from_str(&offending).map_err(|e| {
                        StoreError::CorruptRow(format!("offending_objects '{offending}': {e}"))
                    })?,
                })
            })
            .collect()
    }
}

impl BigQueryStore {
    pub(super) async fn merge_failed_objects(
        &self,
        failed: &[FailedObject],
    ) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_failed_objects")?;
        for batch in failed.chunks(FAILED_OBJECT_ROWS_PER_STATEMENT) {
            let rows = batch
                .iter()
                .map(|f| {
                    vec![
                        ("prefix", Some(f.prefix.clone())),
                        ("object", Some(f.object.clone())),
                        ("action", Some(f.action.clone())),
                        ("error_code", Some(f.error_code.clone())),
                        ("message", Some(f.message.clone())),
                        ("operation", Some(f.operation.clone())),
                        ("time", Some(sql::timestamp_value(f.time))),
                    ]
                })
                .collect();
            self.beside_statement(
                &table,
                failed_objects_table_schema,
                &insert_new_failed_objects(&table),
                vec![sql::struct_rows_param("rows", FAILED_OBJECT_FIELDS, rows)],
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn select_failed_objects(&self) -> Result<Vec<FailedObject>, StoreError> {
        let table = table_beside(&self.jobs, "_failed_objects")?;
        let rows = self
            .read_beside(&format!(
                "SELECT prefix, object, action, error_code, message, operation, \
                 UNIX_MICROS(time) AS time FROM {} ORDER BY prefix, operation, object, action",
                table.sql()
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let [prefix, object, action, code, message, operation, time] = columns::<7>(row)?;
                Ok(FailedObject {
                    prefix: text(prefix, "prefix")?,
                    object: text(object, "object")?,
                    action: text(action, "action")?,
                    error_code: text(code, "error_code")?,
                    message: text(message, "message")?,
                    operation: text(operation, "operation")?,
                    time: timestamp(time)?,
                })
            })
            .collect()
    }

    pub(super) async fn count_failed_per_operation(
        &self,
        operations: &[String],
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let table = table_beside(&self.jobs, "_failed_objects")?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        let sql = format!(
            "SELECT operation, COUNT(*) AS n FROM {} WHERE operation IN UNNEST(@operations) \
             GROUP BY operation",
            table.sql()
        );
        let rows = match self
            .api
            .query(
                &sql,
                vec![sql::string_array_param("operations", operations)],
            )
            .await
        {
            Ok(output) => output.rows,
            Err(e) if is_not_found(&e) => return Ok(Default::default()),
            Err(e) => return Err(e),
        };
        rows.iter()
            .map(|row| {
                let [operation, n] = columns::<2>(row)?;
                Ok((text(operation, "operation")?, number(n, "count")?))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl crate::store::SideTables for BigQueryStore {
    async fn save_failed_objects(&self, rows: &[FailedObject]) -> Result<(), StoreError> {
        self.merge_failed_objects(rows).await
    }

    async fn read_failed_objects(&self) -> Result<Vec<FailedObject>, StoreError> {
        self.select_failed_objects().await
    }

    async fn count_all_failed_objects(&self) -> Result<u64, StoreError> {
        let table = table_beside(&self.jobs, "_failed_objects")?;
        let rows = self
            .read_beside(&format!("SELECT COUNT(*) AS n FROM {}", table.sql()))
            .await?;
        match rows.first() {
            Some(row) => {
                let [n] = columns::<1>(row)?;
                number(n, "count")
            }
            None => Ok(0),
        }
    }

    async fn count_failed_objects(
        &self,
        operations: &[String],
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        self.count_failed_per_operation(operations).await
    }

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
