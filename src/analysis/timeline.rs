//! A migration over time, in a bounded number of time buckets: prefixes per
//! status, objects and bytes copied, throughput and failed objects per error
//! code. The history is read once, row by row, and each row is reduced to a
//! small event at once, so a million history rows cost a few tens of
//! megabytes, and the notebooks draw at most a few hundred points.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::columns::{Frame, PrimitiveBuilder, StrBuilder};
use super::figures::{self, figures_with, Figures, Sums};
use crate::model::{Counters, HistoryRow, PrefixJob, Status};

/// Error codes drawn one by one; the rest are summed as `OTHER`.
pub const MAX_ERROR_CODES: usize = 8;

/// Bucket widths to choose from, in seconds: round numbers a reader expects.
const WIDTHS: [i64; 16] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 10_800, 21_600, 86_400,
];

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
    counters: FigureCounters,
    /// Whether the operation ran with a manifest (see `prefix_figures_with`).
    manifest_run: bool,
    /// Failed objects per error code id.
    errors: Box<[(u16, i64)]>,
}

/// The eight counters the figures read (`figures_with`, `Sums::add`) of
/// the sixteen `Counters` holds: a history's events at little over half
/// the size (a million prefixes' history is four million events).
#[derive(Debug, Clone, Copy, Default)]
struct FigureCounters {
    objects_found: i64,
    bytes_found: i64,
    objects_copied: i64,
    bytes_copied: i64,
    objects_skipped: i64,
    bytes_skipped: i64,
    objects_failed: i64,
    bytes_failed: i64,
}

impl From<&Counters> for FigureCounters {
    fn from(c: &Counters) -> Self {
        FigureCounters {
            objects_found: c.objects_found_from_source,
            bytes_found: c.bytes_found_from_source,
            objects_copied: c.objects_copied_to_sink,
            bytes_copied: c.bytes_copied_to_sink,
            objects_skipped: c.objects_from_source_skipped_by_sync,
            bytes_skipped: c.bytes_from_source_skipped_by_sync,
            objects_failed: c.objects_from_source_failed,
            bytes_failed: c.bytes_from_source_failed,
        }
    }
}

impl FigureCounters {
    fn counters(self) -> Counters {
        Counters {
            objects_found_from_source: self.objects_found,
            bytes_found_from_source: self.bytes_found,
            objects_copied_to_sink: self.objects_copied,
            bytes_copied_to_sink: self.bytes_copied,
            objects_from_source_skipped_by_sync: self.objects_skipped,
            bytes_from_source_skipped_by_sync: self.bytes_skipped,
            objects_from_source_failed: self.objects_failed,
            bytes_from_source_failed: self.bytes_failed,
            ..Counters::default()
        }
    }
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
            Some(json) => match figures::parse(json) {
                Some(d) => {
                    let mut hasher = DefaultHasher::new();
                    d.name.hash(&mut hasher);
                    let manifest_run = d.manifest_run();
                    let errors = d
                        .error_breakdowns
                        .into_iter()
                        .map(|e| (self.code_id(e.error_code), e.error_count))
                        .collect();
                    Some(Snap {
                        op: hasher.finish(),
                        counters: FigureCounters::from(&d.counters),
                        manifest_run,
                        errors,
                    })
                }
                None => {
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

    /// The typical time between two snapshots of one operation (the median
    /// gap, in seconds): what the history samples counters at. 0 when no
    /// operation has two snapshots.
    fn sampling_seconds(&self) -> i64 {
        let mut last: HashMap<u32, (u64, i64)> = HashMap::new();
        let mut gaps = Vec::new();
        for e in &self.events {
            if let Some(snap) = &e.snapshot {
                if let Some((op, at)) = last.insert(e.prefix, (snap.op, e.at)) {
                    if op == snap.op && e.at > at {
                        gaps.push(e.at - at);
                    }
                }
            }
        }
        if gaps.is_empty() {
            return 0;
        }
        let middle = gaps.len() / 2;
        let (_, median, _) = gaps.select_nth_unstable(middle);
        (*median + 999_999) / 1_000_000
    }

    /// (per bucket: statuses, copied, throughput, failed; per bucket and
    /// error code: objects failing now). Buckets are as wide as needed to
    /// make at most `max_buckets` and never narrower than the history's
    /// sampling interval (narrower ones would alternate between a burst and
    /// nothing), rounded up to a whole width from 1 s to a day.
    pub fn finish(mut self, max_buckets: usize) -> (Frame, Frame) {
        // Stable: rows with equal timestamps keep the store's order.
        self.events.sort_by_key(|e| e.at);
        let (Some(first), Some(last)) = (self.events.first(), self.events.last()) else {
            return (timeline_frame(Vec::new()), failures_frame(Vec::new()));
        };
        let (first_at, last_at) = (first.at, last.at);
        let max_buckets = max_buckets.max(1) as i64;
        let span_s = (last_at - first_at) / 1_000_000 + 1;
        let sampling = self.sampling_seconds();
        let width_s = WIDTHS
            .iter()
            .copied()
            .find(|w| (span_s + w - 1) / w <= max_buckets && *w >= sampling)
            .unwrap_or_else(|| ((span_s + max_buckets - 1) / max_buckets).max(sampling));
        let width = width_s * 1_000_000;
        let start = first_at.div_euclid(width) * width;
        let n_buckets = ((last_at - start) / width + 1) as usize;

        let mut per_prefix: Vec<PrefixState> = Vec::new();
        per_prefix.resize_with(self.prefixes.len(), PrefixState::default);
        let mut counts = [0i64; 5];
        counts[status_index(Status::Waiting)] = self.prefixes.len() as i64;
        let mut totals = Figures::default();
        let mut failed = vec![0i64; self.codes.len()];
        // Bytes copied between two snapshots of a prefix, spread evenly over
        // the time between them (a sampled counter says no more than that).
        let mut spread = vec![0f64; n_buckets];
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut bucket_end = start + width;
        for event in &self.events {
            while event.at >= bucket_end {
                buckets.push(Bucket {
                    start: bucket_end - width,
                    counts,
                    figures: totals,
                    failed: failed.clone(),
                });
                bucket_end += width;
            }
            let state = &mut per_prefix[event.prefix as usize];
            counts[status_index(state.status)] -= 1;
            counts[status_index(event.status)] += 1;
            state.status = event.status;
            let Some(snap) = &event.snapshot else {
                continue;
            };
            match &mut state.latest {
                Some((op, c, _)) if *op == snap.op => *c = snap.counters,
                _ => {
                    // A new attempt: what earlier ones did stays counted
                    // (README, "The figures").
                    if let Some((_, c, manifest_run)) = state.latest.take() {
                        state.earlier.add(&c.counters(), manifest_run);
                    }
                    state.latest = Some((snap.op, snap.counters, snap.manifest_run));
                    for (code, n) in state.errors.iter() {
                        failed[*code as usize] -= n;
                    }
                    state.errors = Box::default();
                }
            }
            // prefix_figures_with over the attempts, the earlier ones summed.
            let now = state
                .latest
                .map_or_else(Figures::default, |(_, c, manifest_run)| {
                    let latest = c.counters();
                    let mut sums = state.earlier;
                    sums.add(&latest, manifest_run);
                    figures_with(&latest, &sums)
                });
            let copied = now.bytes.copied - state.figures.bytes.copied;
            add_spread(
                &mut spread,
                start,
                width,
                state.last_at.unwrap_or(event.at),
                event.at,
                copied as f64,
            );
            state.last_at = Some(event.at);
            subtract(&mut totals, &state.figures);
            totals += &now;
            state.figures = now;
            for (code, n) in state.errors.iter() {
                failed[*code as usize] -= n;
            }
            for (code, n) in snap.errors.iter() {
                failed[*code as usize] += n;
            }
            state.errors.clone_from(&snap.errors);
        }
        buckets.push(Bucket {
            start: bucket_end - width,
            counts,
            figures: totals,
            failed: failed.clone(),
        });
        let mut order: Vec<usize> = (0..self.codes.len()).collect();
        order.sort_by(|a, b| {
            failed[*b]
                .cmp(&failed[*a])
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
            .zip(spread)
            .map(|(b, copied)| (b, copied / width_s as f64, width_s))
            .collect::<Vec<_>>();
        (timeline_frame(rows), failures_frame(failure_rows))
    }
}

/// Adds `amount`, spread evenly over `[from, to)`, to the buckets it covers
/// (all of it into `to`'s bucket when the span is empty).
fn add_spread(spread: &mut [f64], start: i64, width: i64, from: i64, to: i64, amount: f64) {
    if amount == 0.0 || spread.is_empty() {
        return;
    }
    let last = spread.len() - 1;
    let index = |t: i64| (((t - start) / width).max(0) as usize).min(last);
    if to <= from {
        spread[index(to)] += amount;
        return;
    }
    let per_micro = amount / (to - from) as f64;
    let mut t = from;
    while t < to {
        let i = index(t);
        let end = (start + (i as i64 + 1) * width).min(to).max(t + 1);
        spread[i] += per_micro * (end - t) as f64;
        t = end;
    }
}

fn subtract(total: &mut Figures, f: &Figures) {
    let negated = |a: &figures::Amounts| figures::Amounts {
        found: -a.found,
        copied: -a.copied,
        skipped: -a.skipped,
        failed: -a.failed,
        failed_attempts: -a.failed_attempts,
        left: -a.left,
    };
    *total += &Figures {
        objects: negated(&f.objects),
        bytes: negated(&f.bytes),
    };
}

struct PrefixState {
    status: Status,
    /// The attempts before the latest, summed.
    earlier: Sums,
    /// The latest attempt: its operation, latest counters, and whether it
    /// was a manifest run.
    latest: Option<(u64, FigureCounters, bool)>,
    figures: Figures,
    last_at: Option<i64>,
    errors: Box<[(u16, i64)]>,
}

impl Default for PrefixState {
    fn default() -> Self {
        PrefixState {
            status: Status::Waiting,
            earlier: Sums::default(),
            latest: None,
            figures: Figures::default(),
            last_at: None,
            errors: Box::default(),
        }
    }
}

struct Bucket {
    start: i64,
    counts: [i64; 5],
    figures: Figures,
    failed: Vec<i64>,
}

fn status_index(status: Status) -> usize {
    Status::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

fn timeline_frame(buckets: Vec<(Bucket, f64, i64)>) -> Frame {
    let n = buckets.len();
    let mut start = PrimitiveBuilder::with_capacity(n);
    let mut statuses: Vec<PrimitiveBuilder<i64>> =
        (0..5).map(|_| PrimitiveBuilder::with_capacity(n)).collect();
    let mut ints: Vec<(&'static str, PrimitiveBuilder<i64>)> = [
        "objects_found",
        "objects_copied",
        "bytes_found",
        "bytes_copied",
        "objects_failed",
        "objects_failed_attempts",
    ]
    .into_iter()
    .map(|name| (name, PrimitiveBuilder::with_capacity(n)))
    .collect();
    let mut rate = PrimitiveBuilder::with_capacity(n);
    let mut width = PrimitiveBuilder::with_capacity(n);
    for (b, bytes_per_second, w) in &buckets {
        start.push(Some(b.start));
        for (builder, count) in statuses.iter_mut().zip(b.counts) {
            builder.push(Some(count));
        }
        let (o, by) = (&b.figures.objects, &b.figures.bytes);
        let values = [
            o.found,
            o.copied,
            by.found,
            by.copied,
            o.failed,
            o.failed_attempts,
        ];
        for ((_, builder), value) in ints.iter_mut().zip(values) {
            builder.push(Some(value));
        }
        rate.push(Some(*bytes_per_second));
        width.push(Some(*w));
    }
    let mut columns = vec![("time", start.finish_timestamp())];
    for (status, builder) in Status::ALL.iter().zip(statuses) {
        columns.push((status.as_str(), builder.finish_int()));
    }
    columns.extend(ints.into_iter().map(|(name, b)| (name, b.finish_int())));
    columns.extend([
        ("bytes_per_second", rate.finish_float()),
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
                r#"{{"name":"{op}","counters":{{"bytesFoundFromSource":"1000","bytesCopiedToSink":"{bytes}"}},"errorBreakdowns":[{errors}]}}"#
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
        // 26 s in at most 3 buckets would be 10 s wide, but operations were
        // sampled every 10 and 13 s (median 13): 15 s buckets, from 00:00:00.
        assert_eq!(ints(&timeline, "bucket_seconds"), [15, 15]);
        assert_eq!(ints(&timeline, "running"), [2, 0]);
        assert_eq!(ints(&timeline, "waiting"), [0, 0]);
        assert_eq!(ints(&timeline, "done"), [0, 1]);
        assert_eq!(ints(&timeline, "error"), [0, 1]);
        assert_eq!(ints(&timeline, "bytes_copied"), [101, 305]);
        assert_eq!(ints(&timeline, "objects_failed"), [0, 0]);
        assert_eq!(failures.rows, 2);
        assert_eq!(ints(&failures, "objects_failed"), [0, 2]);
    }

    #[test]
    fn retries_and_reruns_never_count_an_object_twice() {
        let jobs = [PrefixJob {
            prefix: "a/".into(),
            status: Status::Done,
            job_name: None,
            last_updated: at(0),
        }];
        let snap = |op: &str, copied: i64, skipped: i64| {
            format!(
                r#"{{"name":"{op}","counters":{{"bytesFoundFromSource":"100","bytesCopiedToSink":"{copied}","bytesFromSourceSkippedBySync":"{skipped}"}}}}"#
            )
        };
        let mut builder = TimelineBuilder::new(&jobs);
        for r in [
            row("a/", Status::Done, 1, Some(&snap("op1", 100, 0))),
            // Re-run with overwrite: copies all 100 again.
            row("a/", Status::Done, 2, Some(&snap("op2", 100, 0))),
            row("a/", Status::Done, 3, Some(&snap("op3", 0, 100))),
        ] {
            builder.add(r);
        }
        let (timeline, _) = builder.finish(100);
        assert_eq!(ints(&timeline, "bytes_copied"), [100, 100, 100]);
    }

    #[test]
    fn buckets_are_never_narrower_than_the_sampling_and_the_rate_has_no_comb() {
        let jobs = [PrefixJob {
            prefix: "a/".into(),
            status: Status::Running,
            job_name: None,
            last_updated: at(0),
        }];
        let mut builder = TimelineBuilder::new(&jobs);
        // Two hours, a snapshot every 300 s, 3,000 bytes each time.
        for i in 0..=24i64 {
            let t = at(0) + chrono::Duration::seconds(300 * i);
            builder.add(HistoryRow {
                prefix: "a/".into(),
                status: Status::Running,
                job_name: None,
                operation_results: Some(format!(
                    r#"{{"name":"op","counters":{{"bytesFoundFromSource":"1000000","bytesCopiedToSink":"{}"}}}}"#,
                    3000 * i
                )),
                timestamp: t,
            });
        }
        let (timeline, _) = builder.finish(200);
        let widths = ints(&timeline, "bucket_seconds");
        assert!(widths.iter().all(|w| *w >= 300), "{widths:?}");
        let Some(Column::Float64 { values, .. }) = timeline.column("bytes_per_second") else {
            panic!("no rate")
        };
        // 10 B/s throughout, except the last bucket (one snapshot, no span).
        for v in &values[..values.len() - 1] {
            assert!((v - 10.0).abs() < 1e-6, "{values:?}");
        }
    }

    #[test]
    fn an_empty_history_gives_empty_frames() {
        let (timeline, failures) = TimelineBuilder::new(&[]).finish(100);
        assert_eq!((timeline.rows, failures.rows), (0, 0));
        assert!(timeline.column("bytes_per_second").is_some());
    }
}
