//! Read-only views of the state tables for notebooks and Airflow: jobs,
//! history, failures and progress as column frames. They read rows the
//! `StateStore` trait returns, so they work for every store.

pub mod columns;
pub mod status;
pub mod timeline;
pub mod verification;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::model::{Counters, HistoryRow, PrefixJob, Status, TransferOperation};
use columns::{Frame, PrimitiveBuilder, StrBuilder};

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The job table as it is.
pub fn jobs_frame(jobs: &[PrefixJob]) -> Frame {
    let mut prefix = StrBuilder::with_capacity(jobs.len());
    let mut status = StrBuilder::with_capacity(jobs.len());
    let mut job_name = StrBuilder::with_capacity(jobs.len());
    let mut last_updated = PrimitiveBuilder::with_capacity(jobs.len());
    for job in jobs {
        prefix.push(Some(&job.prefix));
        status.push(Some(job.status.as_str()));
        job_name.push(job.job_name.as_deref());
        last_updated.push(Some(micros(job.last_updated)));
    }
    Frame {
        rows: jobs.len(),
        columns: vec![
            ("prefix", prefix.finish()),
            ("status", status.finish()),
            ("job_name", job_name.finish()),
            ("last_updated", last_updated.finish_timestamp()),
        ],
    }
}

/// The history table as it is, oldest first.
pub fn history_frame(history: &[HistoryRow]) -> Frame {
    let n = history.len();
    let mut prefix = StrBuilder::with_capacity(n);
    let mut status = StrBuilder::with_capacity(n);
    let mut job_name = StrBuilder::with_capacity(n);
    let mut results = StrBuilder::with_capacity(n);
    let mut timestamp = PrimitiveBuilder::with_capacity(n);
    for row in history {
        prefix.push(Some(&row.prefix));
        status.push(Some(row.status.as_str()));
        job_name.push(row.job_name.as_deref());
        results.push(row.operation_results.as_deref());
        timestamp.push(Some(micros(row.timestamp)));
    }
    Frame {
        rows: n,
        columns: vec![
            ("prefix", prefix.finish()),
            ("status", status.finish()),
            ("job_name", job_name.finish()),
            ("operation_results", results.finish()),
            ("timestamp", timestamp.finish_timestamp()),
        ],
    }
}

/// The latest recorded snapshot of each key's operation. Only those rows'
/// JSON is parsed: history repeats cumulative snapshots, so older ones add
/// nothing. Rows whose JSON does not parse are skipped (they are counted).
fn latest_operations<'a>(
    history: &'a [HistoryRow],
    key: impl Fn(&'a HistoryRow) -> &'a str,
) -> (Vec<(&'a HistoryRow, TransferOperation)>, usize) {
    let mut latest: HashMap<&str, usize> = HashMap::new();
    for (i, row) in history.iter().enumerate() {
        if row.operation_results.is_some() {
            // History is oldest first, so a later row replaces an earlier one.
            latest.insert(key(row), i);
        }
    }
    let mut indexes: Vec<usize> = latest.into_values().collect();
    indexes.sort_unstable();
    let mut unreadable = 0;
    let mut out = Vec::with_capacity(indexes.len());
    for i in indexes {
        let row = &history[i];
        match row
            .operation_results
            .as_deref()
            .map(serde_json::from_str::<TransferOperation>)
        {
            Some(Ok(op)) => out.push((row, op)),
            _ => unreadable += 1,
        }
    }
    (out, unreadable)
}

/// One row per failed object named in the errorBreakdowns of each operation's
/// latest snapshot (STS keeps up to five log entries per error code; a code
/// without entries still gets one row, with a null URL).
pub fn failures_frame(history: &[HistoryRow]) -> Frame {
    let (operations, unreadable) =
        latest_operations(history, |r| r.job_name.as_deref().unwrap_or(&r.prefix));
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            "history rows with unreadable operation_results were skipped"
        );
    }
    let mut prefix = StrBuilder::with_capacity(0);
    let mut job_name = StrBuilder::with_capacity(0);
    let mut error_code = StrBuilder::with_capacity(0);
    let mut error_count = PrimitiveBuilder::with_capacity(0);
    let mut url = StrBuilder::with_capacity(0);
    let mut details = StrBuilder::with_capacity(0);
    let mut time = PrimitiveBuilder::with_capacity(0);
    let mut rows = 0;
    for (row, op) in &operations {
        let when = op.end_time.unwrap_or(row.timestamp);
        for summary in &op.error_breakdowns {
            let entries: Vec<(Option<&str>, Option<String>)> =
                if summary.error_log_entries.is_empty() {
                    vec![(None, None)]
                } else {
                    summary
                        .error_log_entries
                        .iter()
                        .map(|e| (Some(e.url.as_str()), Some(e.error_details.join("\n"))))
                        .collect()
                };
            for (object, detail) in entries {
                prefix.push(Some(&row.prefix));
                job_name.push(Some(op.name.as_str()));
                error_code.push(Some(&summary.error_code));
                error_count.push(Some(summary.error_count));
                url.push(object);
                details.push(detail.as_deref());
                time.push(Some(micros(when)));
                rows += 1;
            }
        }
    }
    Frame {
        rows,
        columns: vec![
            ("prefix", prefix.finish()),
            ("job_name", job_name.finish()),
            ("error_code", error_code.finish()),
            ("error_count", error_count.finish_int()),
            ("object_url", url.finish()),
            ("details", details.finish()),
            ("time", time.finish_timestamp()),
        ],
    }
}

/// Progress of one prefix (or of all of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixProgress {
    pub counters: Counters,
    pub started: Option<DateTime<Utc>>,
    /// The operation's end, else the time of its latest snapshot.
    pub updated: Option<DateTime<Utc>>,
}

impl PrefixProgress {
    fn remaining_bytes(&self) -> i64 {
        let c = &self.counters;
        (c.bytes_found_from_source
            - c.bytes_copied_to_sink
            - c.bytes_from_source_skipped_by_sync
            - c.bytes_from_source_failed)
            .max(0)
    }

    /// Bytes copied per second between the start and the latest snapshot.
    pub fn throughput(&self) -> Option<f64> {
        let seconds = (self.updated? - self.started?).num_microseconds()? as f64 / 1e6;
        (seconds > 0.0).then(|| self.counters.bytes_copied_to_sink as f64 / seconds)
    }

    /// Seconds until the bytes found so far are handled at the throughput
    /// seen so far; 0 when nothing is left, null when it cannot be told.
    pub fn eta_seconds(&self) -> Option<f64> {
        let remaining = self.remaining_bytes();
        if remaining == 0 {
            return self.started.map(|_| 0.0);
        }
        match self.throughput() {
            Some(rate) if rate > 0.0 => Some(remaining as f64 / rate),
            _ => None,
        }
    }
}

/// Per prefix (from its latest operation snapshot) and in total: objects
/// and bytes found, copied, skipped and failed, throughput and ETA. The last
/// row has `scope == "total"` and a null prefix.
pub fn progress_frame(jobs: &[PrefixJob], history: &[HistoryRow]) -> Frame {
    let (operations, _) = latest_operations(history, |r| r.prefix.as_str());
    let by_prefix: BTreeMap<&str, PrefixProgress> = operations
        .iter()
        .map(|(row, op)| {
            (
                row.prefix.as_str(),
                PrefixProgress {
                    counters: op.counters.clone(),
                    started: op.start_time,
                    updated: Some(op.end_time.unwrap_or(row.timestamp)),
                },
            )
        })
        .collect();
    let mut total = PrefixProgress::default();
    let n = jobs.len() + 1;
    let mut scope = StrBuilder::with_capacity(n);
    let mut prefix = StrBuilder::with_capacity(n);
    let mut status = StrBuilder::with_capacity(n);
    let mut job_name = StrBuilder::with_capacity(n);
    let mut ints: Vec<(&'static str, PrimitiveBuilder<i64>)> = [
        "objects_found",
        "objects_copied",
        "objects_skipped",
        "objects_failed",
        "bytes_found",
        "bytes_copied",
        "bytes_skipped",
        "bytes_failed",
    ]
    .into_iter()
    .map(|name| (name, PrimitiveBuilder::with_capacity(n)))
    .collect();
    let mut started = PrimitiveBuilder::with_capacity(n);
    let mut updated = PrimitiveBuilder::with_capacity(n);
    let mut throughput = PrimitiveBuilder::with_capacity(n);
    let mut eta = PrimitiveBuilder::with_capacity(n);
    let mut eta_basis = StrBuilder::with_capacity(n);
    let mut push = |p: &PrefixProgress, total_eta: Option<status::Eta>| {
        let c = &p.counters;
        let values = [
            c.objects_found_from_source,
            c.objects_copied_to_sink,
            c.objects_from_source_skipped_by_sync,
            c.objects_from_source_failed,
            c.bytes_found_from_source,
            c.bytes_copied_to_sink,
            c.bytes_from_source_skipped_by_sync,
            c.bytes_from_source_failed,
        ];
        for ((_, builder), value) in ints.iter_mut().zip(values) {
            builder.push(Some(value));
        }
        started.push(p.started.map(micros));
        updated.push(p.updated.map(micros));
        throughput.push(p.throughput());
        match total_eta {
            Some(e) => {
                eta.push(e.seconds);
                eta_basis.push(Some(&e.basis));
            }
            None => {
                eta.push(p.eta_seconds());
                eta_basis.push(None);
            }
        }
    };
    let mut unlisted = 0;
    let mut listed_left: i64 = 0;
    let mut finished = Vec::new();
    for job in jobs {
        let p = by_prefix
            .get(job.prefix.as_str())
            .cloned()
            .unwrap_or_default();
        total.counters += &p.counters;
        total.started = match (total.started, p.started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        total.updated = total.updated.max(p.updated);
        if job.status == Status::Done {
            finished.push(p.counters.bytes_found_from_source);
        } else if p.started.is_none() {
            // Nobody has listed this prefix: its size is unknown.
            unlisted += 1;
        } else {
            listed_left = listed_left.saturating_add(p.remaining_bytes());
        }
        scope.push(Some("prefix"));
        prefix.push(Some(&job.prefix));
        status.push(Some(job.status.as_str()));
        job_name.push(job.job_name.as_deref());
        push(&p, None);
    }
    scope.push(Some("total"));
    prefix.push(None);
    status.push(None);
    job_name.push(None);
    // The rule sts-status follows: unlisted prefixes are never counted as
    // zero bytes; the ETA is then an estimate (from finished prefixes'
    // sizes) or absent.
    let total_eta = status::eta(listed_left, unlisted, &finished, total.throughput());
    push(&total, Some(total_eta));
    let mut columns = vec![
        ("scope", scope.finish()),
        ("prefix", prefix.finish()),
        ("status", status.finish()),
        ("job_name", job_name.finish()),
    ];
    columns.extend(ints.into_iter().map(|(name, b)| (name, b.finish_int())));
    columns.extend([
        ("started", started.finish_timestamp()),
        ("updated", updated.finish_timestamp()),
        ("throughput_bytes_per_second", throughput.finish_float()),
        ("eta_seconds", eta.finish_float()),
        ("eta_basis", eta_basis.finish()),
    ]);
    Frame { rows: n, columns }
}

#[cfg(test)]
mod tests {
    use super::columns::Column;
    use super::*;
    use chrono::TimeZone;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
    }

    fn snapshot(prefix: &str, op: &str, second: u32, body: &str) -> HistoryRow {
        HistoryRow {
            prefix: prefix.into(),
            status: Status::Running,
            job_name: Some(op.into()),
            operation_results: Some(format!(
                r#"{{"name":"{op}","status":"IN_PROGRESS","startTime":"2026-01-01T00:00:00Z",{body}}}"#
            )),
            timestamp: at(second),
        }
    }

    fn ints(frame: &Frame, name: &str) -> Vec<i64> {
        match frame.column(name) {
            Some(Column::Int64 { values, .. }) => values.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn failures_come_from_the_latest_snapshot_of_each_operation() {
        let failed = |n| {
            format!(
                r#""errorBreakdowns":[{{"errorCode":"NOT_FOUND","errorCount":"{n}",
                "errorLogEntries":[{{"url":"gs://s/a","errorDetails":["gone"]}}]}}]"#
            )
        };
        let history = [
            snapshot("a/", "op1", 1, &failed(1)),
            snapshot("a/", "op1", 2, &failed(2)),
            snapshot("b/", "op2", 2, r#""counters":{}"#),
        ];
        let frame = failures_frame(&history);
        assert_eq!(frame.rows, 1);
        assert_eq!(ints(&frame, "error_count"), [2]);
    }

    #[test]
    fn progress_sums_prefixes_and_estimates_time_left() {
        let jobs: Vec<PrefixJob> = ["a/", "b/"]
            .iter()
            .map(|p| PrefixJob {
                prefix: p.to_string(),
                status: Status::Running,
                job_name: None,
                last_updated: at(0),
            })
            .collect();
        let history = [
            snapshot(
                "a/",
                "op1",
                10,
                r#""counters":{"bytesFoundFromSource":"300","bytesCopiedToSink":"100"}"#,
            ),
            snapshot(
                "b/",
                "op2",
                10,
                r#""counters":{"bytesFoundFromSource":"50","bytesCopiedToSink":"50"}"#,
            ),
        ];
        let frame = progress_frame(&jobs, &history);
        assert_eq!(frame.rows, 3);
        assert_eq!(ints(&frame, "bytes_found"), [300, 50, 350]);
        let Some(Column::Float64 { values, .. }) = frame.column("eta_seconds") else {
            panic!("no eta")
        };
        // a/: 200 bytes left at 10 B/s; total: 200 left at 15 B/s.
        assert_eq!(values[0], 20.0);
        assert_eq!(values[1], 0.0);
        assert!((values[2] - 200.0 / 15.0).abs() < 1e-9);
    }

    #[test]
    fn the_total_eta_never_counts_unlisted_prefixes_as_empty() {
        let jobs: Vec<PrefixJob> = [("a/", Status::Running), ("w/", Status::Waiting)]
            .iter()
            .map(|(p, status)| PrefixJob {
                prefix: p.to_string(),
                status: *status,
                job_name: None,
                last_updated: at(0),
            })
            .collect();
        let history = [snapshot(
            "a/",
            "op1",
            10,
            r#""counters":{"bytesFoundFromSource":"100","bytesCopiedToSink":"50"}"#,
        )];
        let frame = progress_frame(&jobs, &history);
        let Some(Column::Float64 { values, validity }) = frame.column("eta_seconds") else {
            panic!("no eta")
        };
        // a/ alone: 10 s left; the total: unknown (w/ is unlisted, nothing finished).
        assert_eq!(values[0], 10.0);
        let valid = validity.as_ref().expect("a null ETA");
        assert_eq!(
            valid[0] & (1 << 2),
            0,
            "total ETA must be null: {}",
            values[2]
        );
    }
}
