//! A migration over time, in a bounded number of time buckets: prefixes per
//! status, objects and bytes copied, throughput and failed objects per error
//! code. The history is read once, row by row, and each row is reduced to a
//! small event at once, so a million history rows cost a few tens of
//! megabytes, and the notebooks draw at most a few hundred points.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde::Deserialize;

use super::columns::{Frame, PrimitiveBuilder, StrBuilder};
use crate::model::{Counters, HistoryRow, PrefixJob, Status};

/// Error codes drawn one by one; the rest are summed as `OTHER`.
pub const MAX_ERROR_CODES: usize = 8;

/// Bucket widths to choose from, in seconds: round numbers a reader expects.
const WIDTHS: [i64; 16] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 10_800, 21_600, 86_400,
];

/// Just what a timeline needs of an operation snapshot (serde skips the
/// rest of the JSON without building it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Digest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    counters: Counters,
    #[serde(default)]
    error_breakdowns: Vec<CodeCount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeCount {
    #[serde(default)]
    error_code: String,
    #[serde(default, with = "crate::model::int64_string")]
    error_count: i64,
}

/// One history row, reduced.
struct Event {
    at: i64,
    prefix: u32,
    status: Status,
    snapshot: Option<Snap>,
}

/// An operation snapshot, reduced.
struct Snap {
    /// A hash of the operation's name (no string kept per row).
    op: u64,
    objects: i64,
    bytes: i64,
    /// Failed objects per error code id.
    errors: Vec<(u16, i64)>,
}

/// Collects events from history rows as the store hands them over.
pub struct TimelineBuilder {
    prefixes: Vec<String>,
    events: Vec<Event>,
    codes: Vec<String>,
    code_ids: HashMap<String, u16>,
    /// Rows of prefixes no longer in the job table, or unreadable JSON.
    pub skipped: usize,
}

impl TimelineBuilder {
    /// `jobs` as `read_jobs` returns them (sorted by prefix).
    pub fn new(jobs: &[PrefixJob]) -> Self {
        let mut prefixes: Vec<String> = jobs.iter().map(|j| j.prefix.clone()).collect();
        prefixes.sort_unstable();
        TimelineBuilder {
            prefixes,
            events: Vec::new(),
            codes: Vec::new(),
            code_ids: HashMap::new(),
            skipped: 0,
        }
    }

    pub fn add(&mut self, row: HistoryRow) {
        let Ok(prefix) = self.prefixes.binary_search(&row.prefix) else {
            self.skipped += 1;
            return;
        };
        let snapshot = match row.operation_results.as_deref() {
            None => None,
            Some(json) => match serde_json::from_str::<Digest>(json) {
                Ok(d) => {
                    let mut hasher = DefaultHasher::new();
                    d.name.hash(&mut hasher);
                    let errors = d
                        .error_breakdowns
                        .into_iter()
                        .map(|e| (self.code_id(e.error_code), e.error_count))
                        .collect();
                    Some(Snap {
                        op: hasher.finish(),
                        objects: d.counters.objects_copied_to_sink,
                        bytes: d.counters.bytes_copied_to_sink,
                        errors,
                    })
                }
                Err(_) => {
                    self.skipped += 1;
                    None
                }
            },
        };
        self.events.push(Event {
            at: row.timestamp.timestamp_micros(),
            prefix: prefix as u32,
            status: row.status,
            snapshot,
        });
    }

    fn code_id(&mut self, code: String) -> u16 {
        if let Some(id) = self.code_ids.get(&code) {
            return *id;
        }
        let id = self.codes.len() as u16;
        self.codes.push(code.clone());
        self.code_ids.insert(code, id);
        id
    }

    /// (per bucket: statuses, copied, throughput, failed; per bucket and
    /// error code: failed objects so far). Buckets are as wide as needed to
    /// make at most `max_buckets`, rounded up to a whole width from 1 s to a day.
    pub fn finish(mut self, max_buckets: usize) -> (Frame, Frame) {
        // Stable: rows with equal timestamps keep the store's order.
        self.events.sort_by_key(|e| e.at);
        let (Some(first), Some(last)) = (self.events.first(), self.events.last()) else {
            return (timeline_frame(Vec::new()), failures_frame(Vec::new()));
        };
        let max_buckets = max_buckets.max(1) as i64;
        let span_s = (last.at - first.at) / 1_000_000 + 1;
        let width_s = WIDTHS
            .iter()
            .copied()
            .find(|w| (span_s + w - 1) / w <= max_buckets)
            .unwrap_or_else(|| (span_s + max_buckets - 1) / max_buckets);
        let width = width_s * 1_000_000;
        let start = first.at.div_euclid(width) * width;

        // The codes drawn one by one: the most failed objects first.
        let mut totals = vec![0i64; self.codes.len()];
        let mut per_prefix: Vec<PrefixState> = vec![PrefixState::default(); self.prefixes.len()];
        let mut counts = [0i64; 5];
        counts[status_index(Status::Waiting)] = self.prefixes.len() as i64;
        let (mut objects, mut bytes) = (0i64, 0i64);
        let mut failed = vec![0i64; self.codes.len()];
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut bucket_end = start + width;
        let mut bytes_at_bucket_start = 0;
        for event in &self.events {
            while event.at >= bucket_end {
                buckets.push(Bucket {
                    start: bucket_end - width,
                    counts,
                    objects,
                    bytes,
                    bytes_in_bucket: bytes - bytes_at_bucket_start,
                    failed: failed.clone(),
                });
                bytes_at_bucket_start = bytes;
                bucket_end += width;
            }
            let state = &mut per_prefix[event.prefix as usize];
            counts[status_index(state.status)] -= 1;
            counts[status_index(event.status)] += 1;
            state.status = event.status;
            if let Some(Snap {
                op,
                objects: o,
                bytes: b,
                errors,
            }) = &event.snapshot
            {
                if state.op != Some(*op) {
                    // A new operation: what the previous one did stays counted.
                    state.op = Some(*op);
                    state.objects = 0;
                    state.bytes = 0;
                    state.errors.clear();
                }
                objects += o - state.objects;
                bytes += b - state.bytes;
                state.objects = *o;
                state.bytes = *b;
                for (code, n) in &state.errors {
                    failed[*code as usize] -= n;
                }
                for (code, n) in errors {
                    failed[*code as usize] += n;
                }
                state.errors.clone_from(errors);
            }
        }
        buckets.push(Bucket {
            start: bucket_end - width,
            counts,
            objects,
            bytes,
            bytes_in_bucket: bytes - bytes_at_bucket_start,
            failed: failed.clone(),
        });
        for (i, n) in failed.iter().enumerate() {
            totals[i] = *n;
        }
        let mut order: Vec<usize> = (0..self.codes.len()).collect();
        order.sort_by(|a, b| {
            totals[*b]
                .cmp(&totals[*a])
                .then(self.codes[*a].cmp(&self.codes[*b]))
        });
        let shown: Vec<usize> = order.iter().copied().take(MAX_ERROR_CODES).collect();
        let rest: Vec<usize> = order.iter().copied().skip(MAX_ERROR_CODES).collect();

        let mut failure_rows = Vec::new();
        for bucket in &buckets {
            for code in &shown {
                failure_rows.push((
                    bucket.start,
                    self.codes[*code].clone(),
                    bucket.failed[*code],
                ));
            }
            if !rest.is_empty() {
                let other = rest.iter().map(|c| bucket.failed[*c]).sum();
                failure_rows.push((bucket.start, "OTHER".to_string(), other));
            }
        }
        let rows = buckets
            .into_iter()
            .map(|b| (b, width_s))
            .collect::<Vec<_>>();
        (timeline_frame(rows), failures_frame(failure_rows))
    }
}

#[derive(Clone)]
struct PrefixState {
    status: Status,
    op: Option<u64>,
    objects: i64,
    bytes: i64,
    errors: Vec<(u16, i64)>,
}

impl Default for PrefixState {
    fn default() -> Self {
        PrefixState {
            status: Status::Waiting,
            op: None,
            objects: 0,
            bytes: 0,
            errors: Vec::new(),
        }
    }
}

struct Bucket {
    start: i64,
    counts: [i64; 5],
    objects: i64,
    bytes: i64,
    bytes_in_bucket: i64,
    failed: Vec<i64>,
}

fn status_index(status: Status) -> usize {
    Status::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

fn timeline_frame(buckets: Vec<(Bucket, i64)>) -> Frame {
    let n = buckets.len();
    let mut start = PrimitiveBuilder::with_capacity(n);
    let mut statuses: Vec<PrimitiveBuilder<i64>> =
        (0..5).map(|_| PrimitiveBuilder::with_capacity(n)).collect();
    let mut objects = PrimitiveBuilder::with_capacity(n);
    let mut bytes = PrimitiveBuilder::with_capacity(n);
    let mut rate = PrimitiveBuilder::with_capacity(n);
    let mut failed = PrimitiveBuilder::with_capacity(n);
    let mut width = PrimitiveBuilder::with_capacity(n);
    for (b, w) in &buckets {
        start.push(Some(b.start));
        for (builder, count) in statuses.iter_mut().zip(b.counts) {
            builder.push(Some(count));
        }
        objects.push(Some(b.objects));
        bytes.push(Some(b.bytes));
        rate.push(Some(b.bytes_in_bucket as f64 / *w as f64));
        failed.push(Some(b.failed.iter().sum::<i64>()));
        width.push(Some(*w));
    }
    let mut columns = vec![("time", start.finish_timestamp())];
    for (status, builder) in Status::ALL.iter().zip(statuses) {
        columns.push((status.as_str(), builder.finish_int()));
    }
    columns.extend([
        ("objects_copied", objects.finish_int()),
        ("bytes_copied", bytes.finish_int()),
        ("bytes_per_second", rate.finish_float()),
        ("objects_failed", failed.finish_int()),
        ("bucket_seconds", width.finish_int()),
    ]);
    Frame { rows: n, columns }
}

fn failures_frame(rows: Vec<(i64, String, i64)>) -> Frame {
    let n = rows.len();
    let mut time = PrimitiveBuilder::with_capacity(n);
    let mut code = StrBuilder::with_capacity(n);
    let mut failed = PrimitiveBuilder::with_capacity(n);
    for (t, c, f) in &rows {
        time.push(Some(*t));
        code.push(Some(c));
        failed.push(Some(*f));
    }
    Frame {
        rows: n,
        columns: vec![
            ("time", time.finish_timestamp()),
            ("error_code", code.finish()),
            ("objects_failed", failed.finish_int()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::super::columns::Column;
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
    }

    fn row(prefix: &str, status: Status, second: u32, results: Option<&str>) -> HistoryRow {
        HistoryRow {
            prefix: prefix.into(),
            status,
            job_name: None,
            operation_results: results.map(Into::into),
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
    fn statuses_and_bytes_are_replayed_in_time_order_into_buckets() {
        let jobs: Vec<PrefixJob> = ["a/", "b/"]
            .iter()
            .map(|p| PrefixJob {
                prefix: p.to_string(),
                status: Status::Done,
                job_name: None,
                last_updated: at(0),
            })
            .collect();
        let snap = |op: &str, bytes: i64, errors: &str| {
            format!(
                r#"{{"name":"{op}","counters":{{"bytesCopiedToSink":"{bytes}"}},"errorBreakdowns":[{errors}]}}"#
            )
        };
        let failed = r#"{"errorCode":"NOT_FOUND","errorCount":"2"}"#;
        let mut builder = TimelineBuilder::new(&jobs);
        // Handed over out of order, as a store may.
        for r in [
            row("b/", Status::Error, 25, Some(&snap("op2", 5, failed))),
            row("a/", Status::Running, 0, None),
            row("a/", Status::Running, 5, Some(&snap("op1", 100, ""))),
            row("b/", Status::Running, 12, Some(&snap("op2", 1, ""))),
            row("a/", Status::Done, 15, Some(&snap("op1", 300, ""))),
            row("gone/", Status::Done, 15, None),
        ] {
            builder.add(r);
        }
        assert_eq!(builder.skipped, 1);
        let (timeline, failures) = builder.finish(3);
        // 26 s in at most 3 buckets: 10 s wide, from 00:00:00.
        assert_eq!(ints(&timeline, "bucket_seconds"), [10, 10, 10]);
        assert_eq!(ints(&timeline, "running"), [1, 1, 0]);
        assert_eq!(ints(&timeline, "waiting"), [1, 0, 0]);
        assert_eq!(ints(&timeline, "done"), [0, 1, 1]);
        assert_eq!(ints(&timeline, "error"), [0, 0, 1]);
        assert_eq!(ints(&timeline, "bytes_copied"), [100, 301, 305]);
        assert_eq!(ints(&timeline, "objects_failed"), [0, 0, 2]);
        assert_eq!(failures.rows, 3);
        assert_eq!(ints(&failures, "objects_failed"), [0, 0, 2]);
    }

    #[test]
    fn an_empty_history_gives_empty_frames() {
        let (timeline, failures) = TimelineBuilder::new(&[]).finish(100);
        assert_eq!((timeline.rows, failures.rows), (0, 0));
        assert!(timeline.column("bytes_per_second").is_some());
    }
}
