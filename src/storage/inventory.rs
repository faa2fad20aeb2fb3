//! Object inventories held in BigQuery (the columns of Cloud Storage's
//! inventory reports: bucket, name, size, crc32c, md5Hash, updated), for
//! plans and verifications at billions of objects: BigQuery groups and joins,
//! nothing is listed object by object.
//!
//! Prefix matching is an equality join: each name is cut at every parent
//! length of the round (`SUBSTR(name, 1, len)`, lengths in characters) and
//! joined on the prefixes of that length, so BigQuery hashes instead of
//! testing every name against every prefix.

use std::collections::BTreeSet;

use gcp_bigquery_client::model::query_parameter::QueryParameter;

use crate::records::Group;
use crate::store::bigquery::client::Api;
use crate::store::bigquery::sql::{self, TableName};
use crate::store::bigquery::{columns, text};
use crate::store::{check_identifier, StoreError};

/// An inventory table and the bucket whose rows to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub table: TableName,
    pub bucket: String,
}

impl Inventory {
    /// `project.dataset.table` or `dataset.table` (in `default_project`).
    pub fn parse(name: &str, default_project: &str, bucket: &str) -> Result<Self, StoreError> {
        let parts: Vec<&str> = name.trim_matches('`').split('.').collect();
        let table = match parts.as_slice() {
            [dataset, table] => TableName::new(default_project, dataset, table)?,
            [project, dataset, table] => TableName::new(project, dataset, table)?,
            _ => {
                return Err(StoreError::InvalidIdentifier(format!(
                    "{name} (an inventory table is dataset.table or project.dataset.table)"
                )))
            }
        };
        check_identifier(&table.table)?;
        Ok(Inventory {
            table,
            bucket: bucket.to_string(),
        })
    }

    /// The inventory's rows for its bucket, with the columns plan and verify
    /// read (size may be stored as text in a loaded report).
    fn rows_sql(&self, parameter: &str) -> String {
        format!(
            "(SELECT name, CAST(size AS INT64) AS size, CAST(crc32c AS STRING) AS crc32c, \
             CAST(md5Hash AS STRING) AS md5 FROM {} WHERE bucket = @{parameter})",
            self.table.sql()
        )
    }
}

fn int64_array(name: &str, values: &[i64]) -> QueryParameter {
    let texts: Vec<String> = values.iter().map(i64::to_string).collect();
    let mut parameter = sql::string_array_param(name, &texts);
    if let Some(kind) = parameter
        .parameter_type
        .as_mut()
        .and_then(|t| t.array_type.as_mut())
    {
        kind.r#type = "INT64".into();
    }
    parameter
}

fn number(cell: &serde_json::Value, what: &str) -> Result<u64, StoreError> {
    match cell {
        serde_json::Value::Null => Ok(0),
        other => {
            let raw = text(other, what)?;
            raw.parse()
                .map_err(|_| StoreError::CorruptRow(format!("{what} '{raw}'")))
        }
    }
}

/// Character lengths of the prefixes (SUBSTR counts characters).
fn lengths(prefixes: &[String]) -> Vec<i64> {
    let set: BTreeSet<i64> = prefixes.iter().map(|p| p.chars().count() as i64).collect();
    set.into_iter().collect()
}

/// One offending object found by SQL: prefix, name, reason.
pub type OffendingRow = (String, String, String);

/// Per prefix: (objects compared, bytes compared, missing, different).
pub type CountsRow = (String, u64, u64, u64, u64);

/// Reads inventory tables through a BigQuery client (the state store's:
/// inventories are read where the state is kept).
pub struct InventoryReader<'a> {
    api: &'a Api,
}

impl<'a> InventoryReader<'a> {
    pub fn new(api: &'a Api) -> Self {
        InventoryReader { api }
    }

    /// Objects, bytes, first and last name of the inventory's bucket.
    pub async fn root(&self, inventory: &Inventory) -> Result<Option<Group>, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) AS objects, SUM(size) AS bytes, MIN(name) AS first, \
             MAX(name) AS last FROM {}",
            inventory.rows_sql("bucket")
        );
        let output = self
            .api
            .query(&sql, vec![sql::string_param("bucket", &inventory.bucket)])
            .await?;
        let Some(row) = output.rows.first() else {
            return Ok(None);
        };
        let [objects, bytes, first, last] = columns::<4>(row)?;
        let objects = number(objects, "objects")?;
        if objects == 0 {
            return Ok(None);
        }
        Ok(Some(Group {
            lo: String::new(),
            first: text(first, "first")?,
            last: text(last, "last")?,
            objects,
            bytes: number(bytes, "bytes")?,
        }))
    }

    /// For each parent prefix, its names longer than it grouped by the next
    /// character: one query for a whole level of the planner's tree.
    pub async fn children(
        &self,
        inventory: &Inventory,
        parents: &[String],
    ) -> Result<Vec<(String, Group)>, StoreError> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT parent, SUBSTR(i.name, 1, len + 1) AS lo, COUNT(*) AS objects, \
             SUM(i.size) AS bytes, MIN(i.name) AS first, MAX(i.name) AS last \
             FROM {rows} AS i CROSS JOIN UNNEST(@lengths) AS len \
             JOIN UNNEST(@parents) AS parent ON SUBSTR(i.name, 1, len) = parent \
             WHERE CHAR_LENGTH(i.name) > len \
             GROUP BY parent, lo ORDER BY lo",
            rows = inventory.rows_sql("bucket")
        );
        let output = self
            .api
            .query(
                &sql,
                vec![
                    sql::string_param("bucket", &inventory.bucket),
                    int64_array("lengths", &lengths(parents)),
                    sql::string_array_param("parents", parents),
                ],
            )
            .await?;
        output
            .rows
            .iter()
            .map(|row| {
                let [parent, lo, objects, bytes, first, last] = columns::<6>(row)?;
                Ok((
                    text(parent, "parent")?,
                    Group {
                        lo: text(lo, "lo")?,
                        first: text(first, "first")?,
                        last: text(last, "last")?,
                        objects: number(objects, "objects")?,
                        bytes: number(bytes, "bytes")?,
                    },
                ))
            })
            .collect()
    }

    /// Compares the source inventory with the destination's for each
    /// prefix: counts per prefix, and the first 100 offending objects of
    /// each (missing, or size / crc32c / md5 different where both have it).
    pub async fn compare(
        &self,
        source: &Inventory,
        destination: &Inventory,
        prefixes: &[String],
    ) -> Result<(Vec<CountsRow>, Vec<OffendingRow>), StoreError> {
        if prefixes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let joined = format!(
            "SELECT prefix, s.name AS name, s.size AS size, \
             CASE WHEN d.name IS NULL THEN 'missing from the destination' \
                  WHEN s.size != d.size THEN 'size differs' \
                  WHEN s.crc32c IS NOT NULL AND d.crc32c IS NOT NULL AND s.crc32c != d.crc32c \
                       THEN 'crc32c differs' \
                  WHEN s.md5 IS NOT NULL AND d.md5 IS NOT NULL AND s.md5 != d.md5 \
                       THEN 'md5 differs' \
                  ELSE NULL END AS reason \
             FROM {source} AS s CROSS JOIN UNNEST(@lengths) AS len \
             JOIN UNNEST(@prefixes) AS prefix ON SUBSTR(s.name, 1, len) = prefix \
             LEFT JOIN {destination} AS d ON d.name = s.name \
             WHERE CHAR_LENGTH(s.name) >= len",
            source = source.rows_sql("source"),
            destination = destination.rows_sql("destination"),
        );
        let parameters = vec![
            sql::string_param("source", &source.bucket),
            sql::string_param("destination", &destination.bucket),
            int64_array("lengths", &lengths(prefixes)),
            sql::string_array_param("prefixes", prefixes),
        ];
        let counts_sql = format!(
            "SELECT prefix, COUNT(*) AS compared, SUM(size) AS bytes, \
             COUNTIF(reason = 'missing from the destination') AS missing, \
             COUNTIF(reason IS NOT NULL AND reason != 'missing from the destination') AS different \
             FROM ({joined}) GROUP BY prefix ORDER BY prefix"
        );
        let offending_sql = format!(
            "SELECT prefix, name, reason FROM ( \
               SELECT prefix, name, reason, \
                 ROW_NUMBER() OVER (PARTITION BY prefix ORDER BY name) AS n \
               FROM ({joined}) WHERE reason IS NOT NULL) \
             WHERE n <= {limit} ORDER BY prefix, name",
            limit = crate::records::MAX_OFFENDING
        );
        let counts = self.api.query(&counts_sql, parameters.clone()).await?;
        let offending = self.api.query(&offending_sql, parameters).await?;
        let counts = counts
            .rows
            .iter()
            .map(|row| {
                let [prefix, compared, bytes, missing, different] = columns::<5>(row)?;
                Ok((
                    text(prefix, "prefix")?,
                    number(compared, "compared")?,
                    number(bytes, "bytes")?,
                    number(missing, "missing")?,
                    number(different, "different")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let offending = offending
            .rows
            .iter()
            .map(|row| {
                let [prefix, name, reason] = columns::<3>(row)?;
                Ok((
                    text(prefix, "prefix")?,
                    text(name, "name")?,
                    text(reason, "reason")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((counts, offending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_names_are_checked() {
        let i = Inventory::parse("inv.objects", "my-project", "b").unwrap();
        assert_eq!(i.table.sql(), "`my-project.inv.objects`");
        let i = Inventory::parse("other-proj.inv.objects", "my-project", "b").unwrap();
        assert_eq!(i.table.project, "other-proj");
        for bad in ["objects", "a.b.c.d", "inv.obj`ects", "inv.drop table"] {
            assert!(Inventory::parse(bad, "my-project", "b").is_err(), "{bad}");
        }
        assert_eq!(lengths(&["ab".into(), "é/".into(), "cd".into()]), [2]);
    }
}
