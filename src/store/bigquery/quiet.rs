//! `sts-status`'s light read on BigQuery, one query: the quiet prefixes
//! (done, their latest attempt without failures and ended by a moment)
//! summed where the rows are, and every other prefix's job and history
//! rows, folded here (`crate::figures::Fold`).
//!
//! BigQuery has no transaction to keep a fold table in step with the
//! history (SQLite's `_figures`), so the quiet prefixes' figures are
//! computed where the rows are. The SQL holds only what the figures of a
//! *plain* quiet prefix need (`crate::figures::figures_with` over attempts
//! that follow one another); a prefix with anything the SQL would have to
//! guess at (a row that does not parse, a counter that is not a plain
//! non-negative integer under 10^15, a time that is not RFC 3339,
//! overlapping attempts) is not quiet: it is folded in Rust like any other,
//! so the rule stays in one place (`tests/status_view.rs` runs the same
//! state on both stores and compares the reports with the full read's).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::sql::{timestamp_param, TableName};
use super::{columns, history_row, text, timestamp, BigQueryStore};
use crate::figures::{Figures, Fold, QuietTotals, StatusView};
use crate::model::PrefixJob;
use crate::store::StoreError;

/// How often the manager reads the figures here (a query that scans the
/// history table): its progress is at most this old, and exact at the
/// end of the migration.
pub const FIGURES_EVERY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The counters the figures read, in the order the SQL names them `c0`…
const COUNTERS: [&str; 8] = [
    "objectsFoundFromSource",
    "objectsCopiedToSink",
    "objectsFromSourceSkippedBySync",
    "objectsFromSourceFailed",
    "bytesFoundFromSource",
    "bytesCopiedToSink",
    "bytesFromSourceSkippedBySync",
    "bytesFromSourceFailed",
];

/// RFC 3339 as STS writes it (and chrono reads it): anything else makes
/// its prefix not quiet rather than read two ways.
const RFC3339: &str = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$";

/// A time text as a TIMESTAMP: BigQuery keeps microseconds, STS writes
/// nanoseconds, so the digits past the sixth are dropped first.
fn time_of(column: &str) -> String {
    format!(r"SAFE_CAST(REGEXP_REPLACE({column}, r'(\.\d{{6}})\d+', r'\1') AS TIMESTAMP)")
}

/// The `WITH` clause defining `quiet` (prefix, started, and per kind
/// `o_`/`b_`: found, copied, skipped, failed, failed_sum, left), over the
/// done prefixes whose every results row reads plainly, whose attempts do
/// not overlap, and whose latest attempt lists no failures and ended at or
/// before `@before`.
pub fn quiet_cte(history: &TableName, jobs: &TableName) -> String {
    // One SQL term per counter, joined.
    let each = |term: &dyn Fn(usize, &str) -> String, joint: &str| {
        COUNTERS
            .iter()
            .enumerate()
            .map(|(i, name)| term(i, name))
            .collect::<Vec<_>>()
            .join(joint)
    };
    let extracted = each(
        &|i, name| format!("JSON_VALUE(j, '$.counters.{name}') AS c{i}"),
        ", ",
    );
    let typed = each(
        &|i, _| format!("COALESCE(SAFE_CAST(c{i} AS INT64), 0) AS c{i}"),
        ", ",
    );
    let plain = each(
        &|i, _| format!("(c{i} IS NULL OR REGEXP_CONTAINS(c{i}, r'^\\d{{1,15}}$'))"),
        " AND ",
    );
    let fields = each(&|i, _| format!("c{i} AS c{i}"), ", ");
    // One kind (objects: counters 0-3, bytes: 4-7) of `figures_with`.
    let kind = |k: &str, base: usize| {
        let [found, copied, skipped, failed] = [base, base + 1, base + 2, base + 3];
        (
            format!(
                "whole.c{found} AS {k}_found, LEAST(l.c{failed}, whole.c{found}) AS {k}_failed, \
                 copied_{k} AS {k}_copied_sum, failed_{k} AS {k}_failed_sum, \
                 l.c{found} - l.c{copied} - l.c{skipped} - l.c{failed} AS {k}_raw_left"
            ),
            format!("LEAST(GREATEST({k}_copied_sum, 0), {k}_found - {k}_failed) AS {k}_copied"),
            format!(
                "LEAST(GREATEST({k}_raw_left, 0), {k}_found - {k}_failed - {k}_copied) AS {k}_left"
            ),
            format!("SUM(s.c{copied}) AS copied_{k}, SUM(s.c{failed}) AS failed_{k}"),
        )
    };
    let (o, b) = (kind("o", 0), kind("b", 4));
    format!(
        "WITH rows_read AS (
           SELECT h.prefix, h.timestamp AS at, SAFE.PARSE_JSON(h.operation_results) AS j
           FROM {h} AS h JOIN {jt} AS jt ON jt.prefix = h.prefix
           WHERE jt.status = 'done' AND h.operation_results IS NOT NULL),
         texts AS (
           SELECT prefix, at, j IS NOT NULL AS parsed,
             JSON_VALUE(j, '$.name') AS op,
             JSON_VALUE(j, '$.startTime') AS start_text,
             JSON_VALUE(j, '$.endTime') AS end_text,
             COALESCE(JSON_TYPE(JSON_QUERY(j, '$.transferSpec.transferManifest')), 'null')
               != 'null' AS manifest,
             COALESCE(ARRAY_LENGTH(JSON_QUERY_ARRAY(j, '$.errorBreakdowns')), 0) AS breakdowns,
             {extracted}
           FROM rows_read),
         typed AS (
           SELECT prefix, at, op, manifest, breakdowns,
             {started} AS started, {ended} AS ended, {typed},
             parsed AND op IS NOT NULL
               AND (start_text IS NULL OR REGEXP_CONTAINS(start_text, r'{rfc}'))
               AND (end_text IS NULL OR REGEXP_CONTAINS(end_text, r'{rfc}'))
               AND {plain} AS plain
           FROM texts),
         odd AS (SELECT prefix, COUNTIF(NOT plain) AS n FROM typed GROUP BY prefix),
         attempts AS (
           SELECT prefix, op, MIN(at) AS first_at, MAX(at) AS last_at,
             ARRAY_AGG(STRUCT(manifest AS manifest, breakdowns AS breakdowns, started AS started,
               ended AS ended, at AS at, {fields})
               ORDER BY at DESC LIMIT 1)[OFFSET(0)] AS s
           FROM typed WHERE plain GROUP BY prefix, op),
         ordered AS (
           SELECT *, LAG(last_at) OVER (PARTITION BY prefix ORDER BY first_at) AS previous_last
           FROM attempts),
         per_prefix AS (
           SELECT prefix,
             COUNTIF(previous_last >= first_at) AS overlaps,
             ARRAY_AGG(s ORDER BY first_at DESC LIMIT 1)[OFFSET(0)] AS l,
             ARRAY_AGG(s ORDER BY IF(s.manifest, 0, 1) DESC, first_at DESC LIMIT 1)[OFFSET(0)]
               AS whole,
             {o_sums}, {b_sums}
           FROM ordered GROUP BY prefix),
         quiet_base AS (
           SELECT p.prefix, p.l.started AS started, {o_base}, {b_base}
           FROM per_prefix AS p JOIN odd ON odd.prefix = p.prefix
           WHERE odd.n = 0 AND p.overlaps = 0 AND p.l.breakdowns = 0
             AND COALESCE(p.l.ended, p.l.at) <= @before),
         quiet_copied AS (SELECT *, {o_copied}, {b_copied} FROM quiet_base),
         quiet AS (SELECT *, {o_left}, {b_left} FROM quiet_copied)",
        h = history.sql(),
        jt = jobs.sql(),
        started = time_of("start_text"),
        ended = time_of("end_text"),
        rfc = RFC3339,
        o_sums = o.3,
        b_sums = b.3,
        o_base = o.0,
        b_base = b.0,
        o_copied = o.1,
        b_copied = b.1,
        o_left = o.2,
        b_left = b.2,
    )
}

/// The figures of the quiet prefixes summed, in one text: how many, their
/// earliest start (INT64 microseconds, empty: none), then the figures in
/// the order of `Figures::COLUMNS`, comma-separated.
fn quiet_totals_text() -> String {
    let kind = |k: &str| {
        [
            format!("SUM({k}_found)"),
            format!("SUM({k}_copied)"),
            format!("SUM({k}_found - {k}_failed - {k}_copied - {k}_left)"),
            format!("SUM({k}_failed)"),
            format!("SUM(GREATEST({k}_failed_sum, 0))"),
            format!("SUM({k}_left)"),
        ]
        .map(|sum| format!("CAST(COALESCE({sum}, 0) AS STRING)"))
        .join(", ")
    };
    format!(
        "ARRAY_TO_STRING([CAST(COUNT(*) AS STRING), \
         COALESCE(CAST(UNIX_MICROS(MIN(started)) AS STRING), ''), {o}, {b}], ',')",
        o = kind("o"),
        b = kind("b"),
    )
}

/// The status view in one query (the quiet prefixes are found once): first
/// a row (`part` 0) whose `totals` sums the quiet prefixes
/// ([`quiet_totals_text`]), then every other prefix (`part` 1): its job
/// row with each of its history rows in time order (none: one row with the
/// history columns NULL), by prefix, so each is folded as its rows arrive.
pub fn select_status_view(history: &TableName, jobs: &TableName) -> String {
    format!(
        "{cte}
         SELECT 0 AS part, CAST(NULL AS STRING) AS prefix, CAST(NULL AS STRING) AS status,
           CAST(NULL AS STRING) AS job_name, CAST(NULL AS INT64) AS last_updated,
           CAST(NULL AS STRING) AS h_prefix, CAST(NULL AS STRING) AS h_status,
           CAST(NULL AS STRING) AS h_job_name, {totals} AS operation_results,
           CAST(NULL AS INT64) AS h_timestamp
         FROM quiet
         UNION ALL
         SELECT 1 AS part, j.prefix, j.status, j.job_name,
           UNIX_MICROS(j.last_updated) AS last_updated,
           h.prefix AS h_prefix, h.status AS h_status, h.job_name AS h_job_name,
           h.operation_results, UNIX_MICROS(h.timestamp) AS h_timestamp
         FROM {jt} AS j LEFT JOIN {h} AS h ON h.prefix = j.prefix
         WHERE j.prefix NOT IN (SELECT prefix FROM quiet)
         ORDER BY part, prefix, h_timestamp",
        cte = quiet_cte(history, jobs),
        totals = quiet_totals_text(),
        h = history.sql(),
        jt = jobs.sql(),
    )
}

impl BigQueryStore {
    /// `HistoryReads::status_view` on BigQuery: one query whatever the
    /// migration's size.
    pub(super) async fn read_status_view(
        &self,
        quiet_before: DateTime<Utc>,
    ) -> Result<StatusView, StoreError> {
        let mut quiet = None;
        let mut jobs = Vec::new();
        let mut folds: HashMap<String, Fold> = HashMap::new();
        self.statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.api
            .query_pages(
                &select_status_view(&self.history, &self.jobs),
                vec![timestamp_param("before", quiet_before)],
                &mut |page| {
                    for row in &page {
                        let cells = columns::<10>(row)?;
                        if text(&cells[0], "part")? == "0" {
                            quiet = Some(quiet_totals(&cells[8])?);
                            continue;
                        }
                        let (job, history) = job_and_history(&cells[1..])?;
                        if jobs
                            .last()
                            .is_none_or(|j: &PrefixJob| j.prefix != job.prefix)
                        {
                            jobs.push(job);
                        }
                        if let Some(history) = history {
                            folds
                                .entry(history.prefix.clone())
                                .or_default()
                                .add(&history);
                        }
                    }
                    Ok(())
                },
            )
            .await
            .map_err(|e| self.missing_table(e))?;
        let quiet = quiet.ok_or_else(|| {
            StoreError::CorruptRow("the status view's query returned no totals row".into())
        })?;
        Ok(StatusView { quiet, jobs, folds })
    }

    /// `HistoryReads::figures_total` on BigQuery: the quiet sum and the
    /// others' folds, as `sts-status` reads them (one query).
    pub(super) async fn read_figures_total(&self) -> Result<Figures, StoreError> {
        let view = self.read_status_view(Utc::now()).await?;
        let mut total = view.quiet.figures;
        for fold in view.folds.values() {
            total += &fold.figures();
        }
        Ok(total)
    }
}

/// The quiet totals from their text (see [`quiet_totals_text`]).
fn quiet_totals(cell: &serde_json::Value) -> Result<QuietTotals, StoreError> {
    let raw = text(cell, "quiet totals")?;
    let bad = || StoreError::CorruptRow(format!("quiet totals '{raw}'"));
    let parts: Vec<&str> = raw.split(',').collect();
    let [count, first_start, figures @ ..] = parts.as_slice() else {
        return Err(bad());
    };
    let number = |part: &str| part.parse::<i64>().map_err(|_| bad());
    let figures: [i64; 12] = figures
        .iter()
        .map(|part| number(part))
        .collect::<Result<Vec<_>, _>>()?
        .try_into()
        .map_err(|_| bad())?;
    let first_start = match *first_start {
        "" => None,
        micros => Some(DateTime::from_timestamp_micros(number(micros)?).ok_or_else(bad)?),
    };
    Ok(QuietTotals {
        prefixes: usize::try_from(number(count)?).map_err(|_| bad())?,
        figures: Figures::from_values(figures),
        first_start,
        unreadable: 0,
    })
}

/// A job row, and one of its history rows unless it has none.
fn job_and_history(
    row: &[serde_json::Value],
) -> Result<(PrefixJob, Option<crate::model::HistoryRow>), StoreError> {
    let cells = columns::<9>(row)?;
    let [prefix, status, job_name, last_updated] = [&cells[0], &cells[1], &cells[2], &cells[3]];
    let job = PrefixJob {
        prefix: text(prefix, "prefix")?,
        status: super::status(status)?,
        job_name: super::optional_text(job_name, "job_name")?,
        last_updated: timestamp(last_updated)?,
    };
    let history = match &cells[4] {
        serde_json::Value::Null => None,
        _ => Some(history_row(&cells[4..])?),
    };
    Ok((job, history))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> (TableName, TableName) {
        (
            TableName::new("my-project", "d", "sts_job_history").unwrap(),
            TableName::new("my-project", "d", "sts_job").unwrap(),
        )
    }

    #[test]
    fn the_status_view_query_names_its_tables_and_takes_the_moment_as_a_parameter() {
        let (h, j) = tables();
        let sql = select_status_view(&h, &j);
        assert!(sql.contains("`my-project.d.sts_job_history`"), "{sql}");
        assert!(sql.contains("`my-project.d.sts_job`"), "{sql}");
        assert!(sql.contains("<= @before"), "{sql}");
        // Every counter the figures read, and twelve figures summed.
        for name in COUNTERS {
            assert!(sql.contains(&format!("'$.counters.{name}'")), "{name}");
        }
        assert_eq!(sql.matches("CAST(COALESCE(SUM(").count(), 12);
    }

    #[test]
    fn the_totals_text_reads_back_or_is_refused_by_name() {
        let cell = |s: &str| serde_json::Value::String(s.into());
        let totals = quiet_totals(&cell("3,1767225600000000,1,2,3,4,5,6,7,8,9,10,11,12")).unwrap();
        assert_eq!(totals.prefixes, 3);
        assert_eq!(
            totals.figures.values(),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert_eq!(totals.first_start.unwrap().timestamp(), 1_767_225_600);
        let none = quiet_totals(&cell("0,,0,0,0,0,0,0,0,0,0,0,0,0")).unwrap();
        assert_eq!((none.prefixes, none.first_start), (0, None));
        for bad in [
            "",
            "1,2",
            "1,,x,0,0,0,0,0,0,0,0,0,0,0",
            "1,,0,0,0,0,0,0,0,0,0,0,0,0,0",
        ] {
            let err = quiet_totals(&cell(bad)).unwrap_err().to_string();
            assert!(err.contains("quiet totals"), "{err}");
        }
    }
}
