//! SQL text and query parameters for the BigQuery store. No I/O here, so the
//! properties that matter (names checked before they reach SQL, every value a
//! parameter, batches within BigQuery's request limits) are unit-tested.

use chrono::{DateTime, SecondsFormat, Utc};
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_type_struct_types::QueryParameterTypeStructTypes;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;

use super::super::{check_identifier, StoreError};
use crate::model::HistoryRow;
use crate::model::JobUpdate;

/// Prefixes per load statement. BigQuery caps a request at 10 MB; 10,000
/// prefixes of at most [`LOAD_BATCH_BYTES`] in total stay far below it even
/// with JSON escaping, and a million prefixes still take only 100 requests.
pub const LOAD_BATCH_PREFIXES: usize = 10_000;
/// Raw prefix bytes per load statement (see [`LOAD_BATCH_PREFIXES`]).
pub const LOAD_BATCH_BYTES: usize = 1 << 20;
/// Parameter bytes per apply statement: a cycle's updates (or history rows)
/// go in one statement unless they exceed this, which keeps each request
/// under BigQuery's 10 MB limit with room for JSON escaping.
pub const APPLY_BATCH_BYTES: usize = 4 << 20;
/// JSON framing of one struct parameter value (field names, braces, quotes).
const STRUCT_OVERHEAD: usize = 160;

/// `project.dataset.table`, each part checked, ready to be put in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub project: String,
    pub dataset: String,
    pub table: String,
}

impl TableName {
    pub fn new(project: &str, dataset: &str, table: &str) -> Result<Self, StoreError> {
        Ok(TableName {
            project: check_project_id(project)?.to_string(),
            dataset: check_identifier(dataset)?.to_string(),
            table: check_identifier(table)?.to_string(),
        })
    }

    /// The fully qualified, backquoted name (bqemulator ignores
    /// `defaultDataset`, so names are always qualified). Safe because no
    /// checked part can hold a backquote.
    pub fn sql(&self) -> String {
        format!("`{}.{}.{}`", self.project, self.dataset, self.table)
    }
}

/// Project ids: 6 to 30 lowercase letters, digits and hyphens, starting with
/// a letter and not ending with a hyphen; legacy domain-scoped ids
/// (`example.com:my-project`) are accepted too.
pub fn check_project_id(project: &str) -> Result<&str, StoreError> {
    let (domain, id) = match project.split_once(':') {
        Some((domain, id)) => (Some(domain), id),
        None => (None, project),
    };
    let domain_ok = domain.is_none_or(|d| {
        !d.is_empty()
            && d.len() <= 253
            && d.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    });
    let id_ok = (6..=30).contains(&id.len())
        && id.as_bytes()[0].is_ascii_lowercase()
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if domain_ok && id_ok {
        Ok(project)
    } else {
        Err(StoreError::InvalidProject(project.to_string()))
    }
}

/// The TIMESTAMP parameter format both BigQuery and bqemulator accept.
pub fn timestamp_value(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn scalar_type(name: &str) -> QueryParameterType {
    QueryParameterType {
        array_type: None,
        struct_types: None,
        r#type: name.to_string(),
    }
}

fn value(text: Option<String>) -> QueryParameterValue {
    QueryParameterValue {
        array_values: None,
        struct_values: None,
        value: text,
    }
}

fn struct_type(fields: &[(&str, &str)]) -> QueryParameterType {
    QueryParameterType {
        array_type: None,
        struct_types: Some(
            fields
                .iter()
                .map(|(name, kind)| QueryParameterTypeStructTypes {
                    description: None,
                    name: Some((*name).to_string()),
                    r#type: Some(scalar_type(kind)),
                })
                .collect(),
        ),
        r#type: "STRUCT".into(),
    }
}

fn array_param(
    name: &str,
    element: QueryParameterType,
    values: Vec<QueryParameterValue>,
) -> QueryParameter {
    QueryParameter {
        name: Some(name.to_string()),
        parameter_type: Some(QueryParameterType {
            array_type: Some(Box::new(element)),
            struct_types: None,
            r#type: "ARRAY".into(),
        }),
        parameter_value: Some(QueryParameterValue {
            array_values: Some(values),
            struct_values: None,
            value: None,
        }),
    }
}

fn struct_value(fields: Vec<(&str, Option<String>)>) -> QueryParameterValue {
    QueryParameterValue {
        array_values: None,
        struct_values: Some(
            fields
                .into_iter()
                .map(|(name, text)| (name.to_string(), value(text)))
                .collect(),
        ),
        value: None,
    }
}

pub fn timestamp_param(name: &str, at: DateTime<Utc>) -> QueryParameter {
    QueryParameter {
        name: Some(name.to_string()),
        parameter_type: Some(scalar_type("TIMESTAMP")),
        parameter_value: Some(value(Some(timestamp_value(at)))),
    }
}

pub fn string_array_param(name: &str, values: &[String]) -> QueryParameter {
    array_param(
        name,
        scalar_type("STRING"),
        values.iter().map(|v| value(Some(v.clone()))).collect(),
    )
}

const UPDATE_FIELDS: &[(&str, &str)] = &[
    ("prefix", "STRING"),
    ("status", "STRING"),
    ("job_name", "STRING"),
    ("last_updated", "TIMESTAMP"),
];

const HISTORY_FIELDS: &[(&str, &str)] = &[
    ("prefix", "STRING"),
    ("status", "STRING"),
    ("job_name", "STRING"),
    ("operation_results", "STRING"),
    ("timestamp", "TIMESTAMP"),
];

/// `@updates`: ARRAY<STRUCT<prefix, status, job_name, last_updated>>.
pub fn updates_param(updates: &[JobUpdate]) -> QueryParameter {
    array_param(
        "updates",
        struct_type(UPDATE_FIELDS),
        updates
            .iter()
            .map(|u| {
                struct_value(vec![
                    ("prefix", Some(u.prefix.clone())),
                    ("status", Some(u.status.as_str().to_string())),
                    ("job_name", u.job_name.clone()),
                    ("last_updated", Some(timestamp_value(u.last_updated))),
                ])
            })
            .collect(),
    )
}

/// `@history`: ARRAY<STRUCT<prefix, status, job_name, operation_results, timestamp>>.
pub fn history_param(rows: &[HistoryRow]) -> QueryParameter {
    array_param(
        "history",
        struct_type(HISTORY_FIELDS),
        rows.iter()
            .map(|h| {
                struct_value(vec![
                    ("prefix", Some(h.prefix.clone())),
                    ("status", Some(h.status.as_str().to_string())),
                    ("job_name", h.job_name.clone()),
                    ("operation_results", h.operation_results.clone()),
                    ("timestamp", Some(timestamp_value(h.timestamp))),
                ])
            })
            .collect(),
    )
}

/// `@name`: ARRAY<STRUCT<fields>>, one struct per row (values as text, as
/// BigQuery's parameter format has them).
pub fn struct_rows_param(
    name: &str,
    fields: &[(&str, &str)],
    rows: Vec<Vec<(&str, Option<String>)>>,
) -> QueryParameter {
    array_param(
        name,
        struct_type(fields),
        rows.into_iter().map(struct_value).collect(),
    )
}

/// Adds `waiting` rows for the prefixes of `@prefixes` not yet in the table.
/// DML (not streaming inserts), so the rows can be updated at once.
pub fn insert_prefixes(jobs: &TableName) -> String {
    format!(
        "INSERT INTO {t} (prefix, status, job_name, last_updated) \
         SELECT p, 'waiting', NULL, @now FROM UNNEST(@prefixes) AS p \
         WHERE NOT EXISTS (SELECT 1 FROM {t} AS j WHERE j.prefix = p)",
        t = jobs.sql()
    )
}

/// Moves a staged load into the job table in one statement.
pub fn insert_from_staging(jobs: &TableName, staging: &TableName) -> String {
    format!(
        "INSERT INTO {t} (prefix, status, job_name, last_updated) \
         SELECT DISTINCT s.prefix, 'waiting', NULL, @now FROM {s} AS s \
         WHERE NOT EXISTS (SELECT 1 FROM {t} AS j WHERE j.prefix = s.prefix)",
        t = jobs.sql(),
        s = staging.sql()
    )
}

/// One UPDATE for a whole cycle's status and job-name changes.
pub fn update_jobs(jobs: &TableName) -> String {
    format!(
        "UPDATE {t} AS j SET status = c.status, job_name = c.job_name, \
         last_updated = c.last_updated FROM UNNEST(@updates) AS c WHERE j.prefix = c.prefix",
        t = jobs.sql()
    )
}

/// One INSERT for a whole cycle's history rows.
pub fn insert_history(history: &TableName) -> String {
    format!(
        "INSERT INTO {t} (prefix, status, job_name, operation_results, timestamp) \
         SELECT h.prefix, h.status, h.job_name, h.operation_results, h.timestamp \
         FROM UNNEST(@history) AS h",
        t = history.sql()
    )
}

/// Timestamps are read as INT64 microseconds: exact, and the same on
/// BigQuery and bqemulator whatever the page's format options.
pub fn select_jobs(jobs: &TableName) -> String {
    format!(
        "SELECT prefix, status, job_name, UNIX_MICROS(last_updated) AS last_updated \
         FROM {} ORDER BY prefix",
        jobs.sql()
    )
}

/// The unfinished rows and, on each, the table's row count.
pub fn select_unfinished(jobs: &TableName) -> String {
    format!(
        "SELECT prefix, status, job_name, UNIX_MICROS(last_updated) AS last_updated, \
         (SELECT COUNT(*) FROM {table}) AS total \
         FROM {table} WHERE status != 'done' ORDER BY prefix",
        table = jobs.sql()
    )
}

/// The table's row count alone (when every row is done).
pub fn count_rows(jobs: &TableName) -> String {
    format!("SELECT COUNT(*) AS total FROM {}", jobs.sql())
}

pub fn select_history(history: &TableName) -> String {
    format!(
        "SELECT prefix, status, job_name, operation_results, \
         UNIX_MICROS(timestamp) AS timestamp FROM {} ORDER BY timestamp, prefix",
        history.sql()
    )
}

/// The latest history row holding results of every prefix of the job table.
pub fn select_latest_snapshots(history: &TableName, jobs: &TableName) -> String {
    format!(
        "SELECT h.prefix, h.status, h.job_name, h.operation_results, \
         UNIX_MICROS(h.timestamp) AS timestamp \
         FROM {h} AS h JOIN {j} AS j ON h.prefix = j.prefix \
         WHERE h.operation_results IS NOT NULL \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY h.prefix ORDER BY h.timestamp DESC) = 1",
        h = history.sql(),
        j = jobs.sql()
    )
}

/// For every prefix of `@prefixes`, its latest row holding results before
/// `@before` (one time for all: the throughput window's start).
pub fn select_snapshots_before_one_time(history: &TableName) -> String {
    format!(
        "SELECT h.prefix, h.status, h.job_name, h.operation_results, \
         UNIX_MICROS(h.timestamp) AS timestamp FROM {h} AS h \
         WHERE h.prefix IN UNNEST(@prefixes) AND h.timestamp < @before \
           AND h.operation_results IS NOT NULL \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY h.prefix ORDER BY h.timestamp DESC) = 1",
        h = history.sql()
    )
}

/// For every `(prefix, before)` of `@wanted`, the prefix's latest row
/// holding results before its own time.
pub fn select_snapshots_before_each(history: &TableName) -> String {
    format!(
        "SELECT h.prefix, h.status, h.job_name, h.operation_results, \
         UNIX_MICROS(h.timestamp) AS timestamp \
         FROM {h} AS h JOIN UNNEST(@wanted) AS w ON h.prefix = w.prefix \
         WHERE h.timestamp < w.before AND h.operation_results IS NOT NULL \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY h.prefix ORDER BY h.timestamp DESC) = 1",
        h = history.sql()
    )
}

const WANTED_FIELDS: &[(&str, &str)] = &[("prefix", "STRING"), ("before", "TIMESTAMP")];

/// `@wanted`: ARRAY<STRUCT<prefix, before>>.
pub fn wanted_param(requests: &[(String, DateTime<Utc>)]) -> QueryParameter {
    array_param(
        "wanted",
        struct_type(WANTED_FIELDS),
        requests
            .iter()
            .map(|(prefix, before)| {
                struct_value(vec![
                    ("prefix", Some(prefix.clone())),
                    ("before", Some(timestamp_value(*before))),
                ])
            })
            .collect(),
    )
}

/// The lease table beside the job table: `{job_table}_lease`, one row
/// (holder, until). BigQuery runs DML on one table one statement at a
/// time, so a conditional UPDATE is a compare-and-swap.
pub fn lease_table(jobs: &TableName) -> Result<TableName, StoreError> {
    TableName::new(
        &jobs.project,
        &jobs.dataset,
        &format!("{}{LEASE_SUFFIX}", jobs.table),
    )
}

pub const LEASE_SUFFIX: &str = "_lease";

/// Gives a new lease table its one free row. `WHERE NOT EXISTS` keeps a
/// second row out in the usual case; were two ever written, every rule
/// below still holds because each UPDATE treats all rows alike.
pub fn seed_lease(lease: &TableName) -> String {
    format!(
        "INSERT INTO {t} (holder, until) SELECT '', TIMESTAMP_MICROS(0) \
         FROM UNNEST([1]) WHERE NOT EXISTS (SELECT 1 FROM {t})",
        t = lease.sql()
    )
}

/// Takes or renews the lease: granted when it is ours, free, expired, or
/// held by `@replaced` (a holder known dead). Times are BigQuery's own
/// clock, so managers on hosts whose clocks differ still agree.
pub fn take_lease(lease: &TableName) -> String {
    format!(
        "UPDATE {} SET holder = @holder, \
         until = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL @ttl_ms MILLISECOND) \
         WHERE holder = @holder OR holder = @replaced OR until <= CURRENT_TIMESTAMP()",
        lease.sql()
    )
}

pub fn read_lease(lease: &TableName) -> String {
    format!(
        "SELECT holder, UNIX_MICROS(until) AS until FROM {} ORDER BY until DESC LIMIT 1",
        lease.sql()
    )
}

/// A clean stop frees the lease at once (if it is still ours).
pub fn release_lease(lease: &TableName) -> String {
    format!(
        "UPDATE {} SET holder = '', until = TIMESTAMP_MICROS(0) WHERE holder = @holder",
        lease.sql()
    )
}

pub fn string_param(name: &str, text: &str) -> QueryParameter {
    QueryParameter {
        name: Some(name.to_string()),
        parameter_type: Some(scalar_type("STRING")),
        parameter_value: Some(value(Some(text.to_string()))),
    }
}

pub fn int64_param(name: &str, number: i64) -> QueryParameter {
    QueryParameter {
        name: Some(name.to_string()),
        parameter_type: Some(scalar_type("INT64")),
        parameter_value: Some(value(Some(number.to_string()))),
    }
}

/// Splits prefixes into load batches (count and byte bounds, see above).
pub fn load_batches(prefixes: &[String]) -> Vec<&[String]> {
    split_by(prefixes, LOAD_BATCH_PREFIXES, LOAD_BATCH_BYTES, String::len)
}

pub fn update_batches(updates: &[JobUpdate]) -> Vec<&[JobUpdate]> {
    split_by(updates, usize::MAX, APPLY_BATCH_BYTES, |u| {
        STRUCT_OVERHEAD + u.prefix.len() + u.job_name.as_ref().map_or(0, String::len)
    })
}

pub fn history_batches(rows: &[HistoryRow]) -> Vec<&[HistoryRow]> {
    split_by(rows, usize::MAX, APPLY_BATCH_BYTES, |h| {
        STRUCT_OVERHEAD
            + h.prefix.len()
            + h.job_name.as_ref().map_or(0, String::len)
            // Operation JSON is full of quotes, each escaped once more.
            + h.operation_results.as_ref().map_or(0, |r| r.len() * 5 / 4)
    })
}

/// Consecutive slices of at most `max_items` items and `max_bytes` bytes
/// (an item larger than `max_bytes` goes alone).
fn split_by<T>(
    items: &[T],
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        if i > start && (i - start >= max_items || bytes + item_bytes > max_bytes) {
            batches.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        batches.push(&items[start..]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    #[test]
    fn names_are_checked_before_they_reach_sql() {
        let t = TableName::new("my-project", "data_migration", "sts_job").unwrap();
        assert_eq!(t.sql(), "`my-project.data_migration.sts_job`");
        assert!(TableName::new("example.com:my-project", "d", "t").is_ok());
        for (project, dataset, table) in [
            ("my-project", "data_migration", "sts_job; DROP TABLE x"),
            ("my-project", "d`x", "t"),
            ("my-project", "d.x", "t"),
            ("My-Project", "d", "t"),
            ("proj", "d", "t"),
            ("my-project-", "d", "t"),
            ("my-project`", "d", "t"),
            ("1project", "d", "t"),
            (":my-project", "d", "t"),
        ] {
            assert!(
                TableName::new(project, dataset, table).is_err(),
                "{project}.{dataset}.{table}"
            );
        }
        assert!(matches!(
            TableName::new("my-project", "d", "t; DROP TABLE x"),
            Err(StoreError::InvalidIdentifier(_))
        ));
        assert!(matches!(
            TableName::new("a b", "d", "t"),
            Err(StoreError::InvalidProject(_))
        ));
    }

    #[test]
    fn values_only_travel_as_parameters() {
        let jobs = TableName::new("my-project", "d", "sts_job").unwrap();
        let history = TableName::new("my-project", "d", "sts_job_history").unwrap();
        let staging = TableName::new("my-project", "d", "sts_job_load_1").unwrap();
        for sql in [
            insert_from_staging(&jobs, &staging),
            insert_prefixes(&jobs),
            update_jobs(&jobs),
            insert_history(&history),
        ] {
            // The only literal is the 'waiting' status of new rows.
            assert_eq!(
                sql.matches('\'').count(),
                sql.matches("'waiting'").count() * 2
            );
            assert!(sql.contains('@'), "{sql}");
        }
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000006Z")
            .unwrap()
            .with_timezone(&Utc);
        let tricky = "it's; DROP TABLE x --".to_string();
        let param = updates_param(&[JobUpdate {
            prefix: tricky.clone(),
            status: Status::Error,
            job_name: None,
            last_updated: now,
        }]);
        let json = serde_json::to_value(&param).unwrap();
        assert_eq!(json["name"], "updates");
        assert_eq!(json["parameterType"]["type"], "ARRAY");
        assert_eq!(json["parameterType"]["arrayType"]["type"], "STRUCT");
        let fields: Vec<_> = json["parameterType"]["arrayType"]["structTypes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap(),
                    f["type"]["type"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(fields, UPDATE_FIELDS);
        let row = &json["parameterValue"]["arrayValues"][0]["structValues"];
        assert_eq!(row["prefix"]["value"], tricky.as_str());
        assert_eq!(row["status"]["value"], "error");
        assert!(row["job_name"].get("value").is_none_or(|v| v.is_null()));
        assert_eq!(row["last_updated"]["value"], "2026-01-02T03:04:05.000006Z");
        let strings = serde_json::to_value(string_array_param("prefixes", &[tricky])).unwrap();
        assert_eq!(strings["parameterType"]["arrayType"]["type"], "STRING");
        assert_eq!(
            strings["parameterValue"]["arrayValues"][0]["value"],
            "it's; DROP TABLE x --"
        );
    }

    #[test]
    fn batches_respect_count_and_byte_bounds() {
        let prefixes: Vec<String> = (0..25_001).map(|i| format!("p{i:06}/")).collect();
        let batches = load_batches(&prefixes);
        assert_eq!(
            batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [10_000, 10_000, 5_001]
        );
        assert_eq!(batches.concat(), prefixes);
        let long: Vec<String> = (0..3_000).map(|i| format!("{i:01024}")).collect();
        let batches = load_batches(&long);
        assert!(batches
            .iter()
            .all(|b| b.iter().map(String::len).sum::<usize>() <= LOAD_BATCH_BYTES));
        assert_eq!(batches.len(), 3);
        assert!(load_batches(&[]).is_empty());
        let big = "x".repeat(APPLY_BATCH_BYTES);
        let rows: Vec<HistoryRow> = (0..3)
            .map(|i| HistoryRow {
                prefix: format!("p{i}/"),
                status: Status::Error,
                job_name: None,
                operation_results: Some(big.clone()),
                timestamp: Utc::now(),
            })
            .collect();
        assert_eq!(history_batches(&rows).len(), 3, "oversized rows go alone");
    }
}
