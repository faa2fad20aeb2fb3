//! The tables beside the job table in BigQuery, created on first use like
//! the lease table and written with MERGE: the plan (`{job_table}_plan`) and
//! the verification results (`{job_table}_verification`), one row per prefix
//! (a prefix planned or checked again gets its new row); the failed objects
//! (`{job_table}_failed_objects`), one row per operation, object and action
//! (kept when read again); the passes (`{job_table}_passes`,
//! `{job_table}_pass_prefixes`), one row per pass and per prefix.

use std::sync::atomic::Ordering;

use chrono::Utc;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_schema::TableSchema;

use super::sql::{self, TableName};
use super::{columns, field, is_not_found, names_dataset, text, timestamp, BigQueryStore};
use crate::records::{
    FailedObject, Pass, PassPrefix, PendingManifest, PlannedPrefix, Verification, VerifyResult,
};
use crate::store::StoreError;

/// Rows per MERGE: keeps each request well under BigQuery's size limits
/// (a verification row carries up to 100 object names).
const PLAN_ROWS_PER_STATEMENT: usize = 5000;
const VERIFICATION_ROWS_PER_STATEMENT: usize = 200;
/// A failed object's row holds an object name (up to 1,024 bytes) and a
/// message.
const FAILED_OBJECT_ROWS_PER_STATEMENT: usize = 1000;

/// A side table's schema from its one column list (the same list its
/// MERGE statements and row parameters use): every column REQUIRED but
/// those named `nullable`.
fn schema_of(fields: &[(&str, &str)], nullable: &[&str]) -> TableSchema {
    TableSchema::new(
        fields
            .iter()
            .map(|(name, kind)| {
                let kind = match *kind {
                    "INT64" => FieldType::Int64,
                    "TIMESTAMP" => FieldType::Timestamp,
                    "BOOL" => FieldType::Bool,
                    _ => FieldType::String,
                };
                let mode = if nullable.contains(name) {
                    "NULLABLE"
                } else {
                    "REQUIRED"
                };
                field(name, kind, mode)
            })
            .collect(),
    )
}

pub fn failed_objects_table_schema() -> TableSchema {
    schema_of(FAILED_OBJECT_FIELDS, &[])
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
    schema_of(PLAN_FIELDS, &[])
}

pub fn verification_table_schema() -> TableSchema {
    schema_of(VERIFICATION_FIELDS, &[])
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

pub fn passes_table_schema() -> TableSchema {
    schema_of(PASS_FIELDS, &["queued_at", "ended_at"])
}

pub fn pass_prefixes_table_schema() -> TableSchema {
    schema_of(PASS_PREFIX_FIELDS, &["modified_since"])
}

const PASS_FIELDS: &[(&str, &str)] = &[
    ("pass", "INT64"),
    ("kind", "STRING"),
    ("started_at", "TIMESTAMP"),
    ("queued_at", "TIMESTAMP"),
    ("ended_at", "TIMESTAMP"),
    ("objects_found", "INT64"),
    ("bytes_found", "INT64"),
    ("objects_copied", "INT64"),
    ("bytes_copied", "INT64"),
    ("objects_deleted", "INT64"),
];

const PASS_PREFIX_FIELDS: &[(&str, &str)] = &[
    ("prefix", "STRING"),
    ("pass", "INT64"),
    ("modified_since", "TIMESTAMP"),
    ("mirror", "BOOL"),
];

const PASS_PREFIX_ROWS_PER_STATEMENT: usize = 5000;

pub fn manifests_table_schema() -> TableSchema {
    schema_of(MANIFEST_FIELDS, &[])
}

const MANIFEST_FIELDS: &[(&str, &str)] = &[
    ("prefix", "STRING"),
    ("location", "STRING"),
    ("objects", "INT64"),
    ("queued_at", "TIMESTAMP"),
];

/// Which pending manifests a clear drops: `location` null for any.
const MANIFEST_CLEAR_FIELDS: &[(&str, &str)] = &[("prefix", "STRING"), ("location", "STRING")];

const MANIFEST_ROWS_PER_STATEMENT: usize = 5000;

pub(super) fn table_beside(jobs: &TableName, suffix: &str) -> Result<TableName, StoreError> {
    TableName::new(
        &jobs.project,
        &jobs.dataset,
        &format!("{}{suffix}", jobs.table),
    )
}

/// `MERGE` of `@rows` into `table` by its first field.
fn merge_by(table: &TableName, fields: &[(&str, &str)]) -> String {
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
         ON t.{key} = s.{key} \
         WHEN MATCHED THEN UPDATE SET {set} \
         WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})",
        t = table.sql(),
        key = names[0],
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

    /// Writes `items` into a side table, `per_statement` rows a statement
    /// (`statement` takes them as `@rows`), each row made just before its
    /// batch is sent.
    #[allow(clippy::too_many_arguments)]
    async fn write_beside<T>(
        &self,
        table: &TableName,
        schema: fn() -> TableSchema,
        statement: &str,
        fields: &[(&str, &str)],
        items: &[T],
        per_statement: usize,
        row: impl Fn(&T) -> Result<Vec<(&'static str, Option<String>)>, StoreError>,
    ) -> Result<(), StoreError> {
        for batch in items.chunks(per_statement.max(1)) {
            let rows = batch.iter().map(&row).collect::<Result<Vec<_>, _>>()?;
            self.beside_statement(
                table,
                schema,
                statement,
                vec![sql::struct_rows_param("rows", fields, rows)],
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn merge_plan(&self, planned: &[PlannedPrefix]) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_plan")?;
        let now = sql::timestamp_value(Utc::now());
        self.write_beside(
            &table,
            plan_table_schema,
            &merge_by(&table, PLAN_FIELDS),
            PLAN_FIELDS,
            planned,
            PLAN_ROWS_PER_STATEMENT,
            |p| {
                Ok(vec![
                    ("prefix", Some(p.prefix.clone())),
                    ("objects", Some(p.objects.to_string())),
                    ("bytes", Some(p.bytes.to_string())),
                    ("planned_at", Some(now.clone())),
                ])
            },
        )
        .await
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
        self.write_beside(
            &table,
            verification_table_schema,
            &merge_by(&table, VERIFICATION_FIELDS),
            VERIFICATION_FIELDS,
            checked,
            VERIFICATION_ROWS_PER_STATEMENT,
            |v| {
                let offending = serde_json::to_string(&v.offending_objects)
                    .map_err(|e| StoreError::CorruptRow(e.to_string()))?;
                Ok(vec![
                    ("prefix", Some(v.prefix.clone())),
                    ("result", Some(v.result.as_str().to_string())),
                    ("objects_compared", Some(v.objects_compared.to_string())),
                    ("missing", Some(v.missing.to_string())),
                    ("different", Some(v.different.to_string())),
                    ("checked_at", Some(sql::timestamp_value(v.checked_at))),
                    ("offending_objects", Some(offending)),
                ])
            },
        )
        .await
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
        self.write_beside(
            &table,
            failed_objects_table_schema,
            &insert_new_failed_objects(&table),
            FAILED_OBJECT_FIELDS,
            failed,
            FAILED_OBJECT_ROWS_PER_STATEMENT,
            |f| {
                Ok(vec![
                    ("prefix", Some(f.prefix.clone())),
                    ("object", Some(f.object.clone())),
                    ("action", Some(f.action.clone())),
                    ("error_code", Some(f.error_code.clone())),
                    ("message", Some(f.message.clone())),
                    ("operation", Some(f.operation.clone())),
                    ("time", Some(sql::timestamp_value(f.time))),
                ])
            },
        )
        .await
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

fn optional_timestamp(
    cell: &serde_json::Value,
) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
    if cell.is_null() {
        Ok(None)
    } else {
        timestamp(cell).map(Some)
    }
}

fn signed(cell: &serde_json::Value, what: &str) -> Result<i64, StoreError> {
    let raw = text(cell, what)?;
    raw.parse()
        .map_err(|_| StoreError::CorruptRow(format!("{what} '{raw}'")))
}

impl BigQueryStore {
    pub(super) async fn merge_pass(&self, pass: &Pass) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_passes")?;
        let row = vec![
            ("pass", Some(pass.pass.to_string())),
            ("kind", Some(pass.kind.clone())),
            ("started_at", Some(sql::timestamp_value(pass.started_at))),
            ("queued_at", pass.queued_at.map(sql::timestamp_value)),
            ("ended_at", pass.ended_at.map(sql::timestamp_value)),
            ("objects_found", Some(pass.objects_found.to_string())),
            ("bytes_found", Some(pass.bytes_found.to_string())),
            ("objects_copied", Some(pass.objects_copied.to_string())),
            ("bytes_copied", Some(pass.bytes_copied.to_string())),
            ("objects_deleted", Some(pass.objects_deleted.to_string())),
        ];
        self.beside_statement(
            &table,
            passes_table_schema,
            &merge_by(&table, PASS_FIELDS),
            vec![sql::struct_rows_param("rows", PASS_FIELDS, vec![row])],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn select_passes(&self) -> Result<Vec<Pass>, StoreError> {
        let table = table_beside(&self.jobs, "_passes")?;
        let rows = self
            .read_beside(&format!(
                "SELECT pass, kind, UNIX_MICROS(started_at), UNIX_MICROS(queued_at),                  UNIX_MICROS(ended_at), objects_found, bytes_found, objects_copied,                  bytes_copied, objects_deleted FROM {} ORDER BY pass",
                table.sql()
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let [pass, kind, started, queued, ended, found, bytes_found, copied, bytes_copied, deleted] =
                    columns::<10>(row)?;
                Ok(Pass {
                    pass: u32::try_from(number(pass, "pass")?)
                        .map_err(|_| StoreError::CorruptRow("pass out of range".into()))?,
                    kind: text(kind, "kind")?,
                    started_at: timestamp(started)?,
                    queued_at: optional_timestamp(queued)?,
                    ended_at: optional_timestamp(ended)?,
                    objects_found: signed(found, "objects_found")?,
                    bytes_found: signed(bytes_found, "bytes_found")?,
                    objects_copied: signed(copied, "objects_copied")?,
                    bytes_copied: signed(bytes_copied, "bytes_copied")?,
                    objects_deleted: signed(deleted, "objects_deleted")?,
                })
            })
            .collect()
    }

    pub(super) async fn merge_pass_prefixes(&self, rows: &[PassPrefix]) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_pass_prefixes")?;
        self.write_beside(
            &table,
            pass_prefixes_table_schema,
            &merge_by(&table, PASS_PREFIX_FIELDS),
            PASS_PREFIX_FIELDS,
            rows,
            PASS_PREFIX_ROWS_PER_STATEMENT,
            |r| {
                Ok(vec![
                    ("prefix", Some(r.prefix.clone())),
                    ("pass", Some(r.pass.to_string())),
                    ("modified_since", r.modified_since.map(sql::timestamp_value)),
                    ("mirror", Some(r.mirror.to_string())),
                ])
            },
        )
        .await
    }

    pub(super) async fn select_pass_prefixes(&self) -> Result<Vec<PassPrefix>, StoreError> {
        let table = table_beside(&self.jobs, "_pass_prefixes")?;
        let rows = self
            .read_beside(&format!(
                "SELECT prefix, pass, UNIX_MICROS(modified_since), mirror FROM {} ORDER BY prefix",
                table.sql()
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let [prefix, pass, since, mirror] = columns::<4>(row)?;
                let mirror = text(mirror, "mirror")?;
                Ok(PassPrefix {
                    prefix: text(prefix, "prefix")?,
                    pass: u32::try_from(number(pass, "pass")?)
                        .map_err(|_| StoreError::CorruptRow("pass out of range".into()))?,
                    modified_since: optional_timestamp(since)?,
                    mirror: mirror.eq_ignore_ascii_case("true"),
                })
            })
            .collect()
    }
}

impl BigQueryStore {
    pub(super) async fn merge_manifests(
        &self,
        manifests: &[PendingManifest],
    ) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_manifests")?;
        self.write_beside(
            &table,
            manifests_table_schema,
            &merge_by(&table, MANIFEST_FIELDS),
            MANIFEST_FIELDS,
            manifests,
            MANIFEST_ROWS_PER_STATEMENT,
            |m| {
                Ok(vec![
                    ("prefix", Some(m.prefix.clone())),
                    ("location", Some(m.location.clone())),
                    ("objects", Some(m.objects.to_string())),
                    ("queued_at", Some(sql::timestamp_value(m.queued_at))),
                ])
            },
        )
        .await
    }

    pub(super) async fn delete_manifests(
        &self,
        which: &[(String, Option<String>)],
    ) -> Result<(), StoreError> {
        let table = table_beside(&self.jobs, "_manifests")?;
        let statement = format!(
            "DELETE FROM {} AS t WHERE EXISTS (SELECT 1 FROM UNNEST(@rows) AS r \
             WHERE r.prefix = t.prefix AND (r.location IS NULL OR r.location = t.location))",
            table.sql()
        );
        self.write_beside(
            &table,
            manifests_table_schema,
            &statement,
            MANIFEST_CLEAR_FIELDS,
            which,
            MANIFEST_ROWS_PER_STATEMENT,
            |(prefix, location)| {
                Ok(vec![
                    ("prefix", Some(prefix.clone())),
                    ("location", location.clone()),
                ])
            },
        )
        .await
    }

    pub(super) async fn select_manifests(&self) -> Result<Vec<PendingManifest>, StoreError> {
        let table = table_beside(&self.jobs, "_manifests")?;
        let rows = self
            .read_beside(&format!(
                "SELECT prefix, location, objects, UNIX_MICROS(queued_at) FROM {} ORDER BY prefix",
                table.sql()
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let [prefix, location, objects, at] = columns::<4>(row)?;
                Ok(PendingManifest {
                    prefix: text(prefix, "prefix")?,
                    location: text(location, "location")?,
                    objects: number(objects, "objects")?,
                    queued_at: timestamp(at)?,
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl crate::store::SideTables for BigQueryStore {
    /// BigQuery has no transaction across these statements: the requeue
    /// first, the manifests last (see the trait).
    async fn requeue_with_manifests(
        &self,
        changes: &crate::model::ChangeSet,
        manifests: &[PendingManifest],
    ) -> Result<(), StoreError> {
        crate::store::JobTable::apply(self, changes).await?;
        self.merge_manifests(manifests).await
    }

    async fn clear_manifests(&self, which: &[(String, Option<String>)]) -> Result<(), StoreError> {
        if which.is_empty() {
            return Ok(());
        }
        self.delete_manifests(which).await
    }

    async fn read_manifests(&self) -> Result<Vec<PendingManifest>, StoreError> {
        self.select_manifests().await
    }

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

    async fn save_pass(&self, pass: &Pass) -> Result<(), StoreError> {
        self.merge_pass(pass).await
    }

    async fn read_passes(&self) -> Result<Vec<Pass>, StoreError> {
        self.select_passes().await
    }

    async fn save_pass_prefixes(&self, rows: &[PassPrefix]) -> Result<(), StoreError> {
        self.merge_pass_prefixes(rows).await
    }

    async fn read_pass_prefixes(&self) -> Result<Vec<PassPrefix>, StoreError> {
        self.select_pass_prefixes().await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn columns_of(schema: &TableSchema) -> Vec<(String, String, String)> {
        schema
            .fields()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|f| {
                let kind = serde_json::to_value(&f.r#type).unwrap_or_default();
                (
                    f.name.clone(),
                    kind.as_str().unwrap_or_default().to_string(),
                    f.mode.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn each_side_table_schema_comes_from_its_one_column_list() {
        let passes = columns_of(&passes_table_schema());
        assert_eq!(passes.len(), PASS_FIELDS.len());
        assert_eq!(
            passes[..5],
            [
                ("pass".into(), "INT64".into(), "REQUIRED".into()),
                ("kind".into(), "STRING".into(), "REQUIRED".into()),
                ("started_at".into(), "TIMESTAMP".into(), "REQUIRED".into()),
                ("queued_at".into(), "TIMESTAMP".into(), "NULLABLE".into()),
                ("ended_at".into(), "TIMESTAMP".into(), "NULLABLE".into()),
            ]
        );
        let prefixes = columns_of(&pass_prefixes_table_schema());
        assert_eq!(
            prefixes[3],
            ("mirror".into(), "BOOL".into(), "REQUIRED".into())
        );
        for (schema, fields) in [
            (plan_table_schema(), PLAN_FIELDS),
            (verification_table_schema(), VERIFICATION_FIELDS),
            (failed_objects_table_schema(), FAILED_OBJECT_FIELDS),
            (manifests_table_schema(), MANIFEST_FIELDS),
        ] {
            let names: Vec<String> = columns_of(&schema).into_iter().map(|c| c.0).collect();
            let declared: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, declared);
            assert!(columns_of(&schema).iter().all(|c| c.2 == "REQUIRED"));
        }
    }
}
