//! Read-only views of the state tables for notebooks and Airflow: jobs,
//! history, failures and progress as column frames. They read rows the
//! `StateStore` trait returns, so they work for every store.

pub mod columns;
pub mod figures;
pub mod status;
pub mod timeline;
pub mod verification;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::model::{HistoryRow, PrefixJob};
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

/// One row per failing object of each prefix's latest attempt (failing
/// now), from the errorBreakdowns of its latest snapshot (STS keeps up to
/// five log entries per error code; a code without entries still gets one
/// row, with a null URL). `error_count`: objects failing now with that code;
/// `failed_attempts`: failures with that code summed over every attempt.
///
/// `failed_ops`: the latest snapshot of every operation listing failures;
/// `latest`: the latest snapshot of those operations' prefixes.
pub fn failures_frame(failed_ops: &[HistoryRow], latest: &[HistoryRow]) -> Frame {
    let mut unreadable = 0;
    let mut attempts: HashMap<(&str, &str), i64> = HashMap::new();
    let parsed: Vec<(&HistoryRow, figures::Digest)> = failed_ops
        .iter()
        .filter_map(|r| figures::snapshot_of(r, &mut unreadable).map(|s| (r, s.op)))
        .collect();
    for (row, op) in &parsed {
        for e in &op.error_breakdowns {
            let n = attempts
                .entry((row.prefix.as_str(), e.error_code.as_str()))
                .or_default();
            *n = n.saturating_add(e.error_count);
        }
    }
    let mut now: Vec<(&HistoryRow, figures::Digest)> = latest
        .iter()
        .filter_map(|r| figures::snapshot_of(r, &mut unreadable).map(|s| (r, s.op)))
        .collect();
    now.sort_by(|a, b| a.0.prefix.cmp(&b.0.prefix));
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
    let mut failed_attempts = PrimitiveBuilder::with_capacity(0);
    let mut url = StrBuilder::with_capacity(0);
    let mut details = StrBuilder::with_capacity(0);
    let mut time = PrimitiveBuilder::with_capacity(0);
    let mut rows = 0;
    for (row, op) in &now {
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
            let all = attempts
                .get(&(row.prefix.as_str(), summary.error_code.as_str()))
                .copied()
                .unwrap_or(0)
                .max(summary.error_count);
            for (object, detail) in entries {
                prefix.push(Some(&row.prefix));
                job_name.push(Some(op.name.as_str()));
                error_code.push(Some(&summary.error_code));
                error_count.push(Some(summary.error_count));
                failed_attempts.push(Some(all));
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
            ("failed_attempts", failed_attempts.finish_int()),
            ("object_url", url.finish()),
            ("details", details.finish()),
            ("time", time.finish_timestamp()),
        ],
    }
}

/// Reads what `failures_frame` needs: the latest snapshot of every
/// operation listing failures, then the latest snapshot of their prefixes
/// only (index seeks), never every prefix's.
pub async fn read_failures(
    store: &dyn crate::store::StateStore,
) -> Result<Frame, crate::store::StoreError> {
    let failed_ops = store.failure_snapshots().await?;
    let prefixes: std::collections::BTreeSet<&str> =
        failed_ops.iter().map(|r| r.prefix.as_str()).collect();
    // The last moment every store stores and compares as text alike
    // (BigQuery's TIMESTAMP ends with year 9999; chrono's MAX_UTC prints a
    // sign that sorts before every year in text).
    let end_of_time = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or_default();
    let asks: Vec<(String, DateTime<Utc>)> = prefixes
        .into_iter()
        .map(|p| (p.to_string(), end_of_time))
        .collect();
    let latest = store.snapshots_before(&asks).await?;
    Ok(failures_frame(&failed_ops, &latest))
}

/// Throughput and ETA of one prefix's latest attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixProgress {
    /// Bytes the latest attempt copied.
    pub copied: i64,
    pub started: Option<DateTime<Utc>>,
    /// The operation's end, else the time of its latest snapshot.
    pub updated: Option<DateTime<Utc>>,
}

impl PrefixProgress {
    /// Bytes copied per second between the start and the latest snapshot.
    pub fn throughput(&self) -> Option<f64> {
        let seconds = (self.updated? - self.started?).num_microseconds()? as f64 / 1e6;
        (seconds > 0.0).then(|| self.copied as f64 / seconds)
    }

    /// Seconds until `left` bytes are handled at the throughput seen so
    /// far; 0 when nothing is left, null when it cannot be told.
    pub fn eta_seconds(&self, left: i64) -> Option<f64> {
        if left <= 0 {
            return self.started.map(|_| 0.0);
        }
        match self.throughput() {
            Some(rate) if rate > 0.0 => Some(left as f64 / rate),
            _ => None,
        }
    }
}

/// Per prefix and in total: the figures (README, "The figures"), and per
/// prefix the latest attempt's throughput and ETA. The last row has `scope
/// == "total"` and a null prefix; its throughput and ETA are `report`'s
/// (`sts-status`'s: the last hour's rate), so the two never disagree.
pub fn progress_frame(inputs: &status::Inputs, report: &status::StatusReport) -> Frame {
    let jobs = &inputs.jobs;
    let mut total = figures::Figures::default();
    let (mut first, mut last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    let n = jobs.len() + 1;
    let mut scope = StrBuilder::with_capacity(n);
    let mut prefix = StrBuilder::with_capacity(n);
    let mut status = StrBuilder::with_capacity(n);
    let mut job_name = StrBuilder::with_capacity(n);
    let mut ints: Vec<(&'static str, PrimitiveBuilder<i64>)> = figures::Figures::COLUMNS
        .into_iter()
        .map(|name| (name, PrimitiveBuilder::with_capacity(n)))
        .collect();
    let mut started = PrimitiveBuilder::with_capacity(n);
    let mut updated = PrimitiveBuilder::with_capacity(n);
    let mut throughput = PrimitiveBuilder::with_capacity(n);
    let mut eta = PrimitiveBuilder::with_capacity(n);
    let mut eta_basis = StrBuilder::with_capacity(n);
    let mut push_figures = |f: &figures::Figures| {
        let values = f.values();
        for ((_, builder), value) in ints.iter_mut().zip(values) {
            builder.push(Some(value));
        }
    };
    for job in jobs {
        let f = inputs.figures_of(&job.prefix);
        total += &f;
        let snap = inputs.latest.get(&job.prefix);
        let p = snap
            .map(|s| PrefixProgress {
                copied: s.op.counters.bytes_copied_to_sink,
                started: s.op.start_time,
                updated: Some(s.updated()),
            })
            .unwrap_or_default();
        first = match (first, p.started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(p.updated);
        scope.push(Some("prefix"));
        prefix.push(Some(&job.prefix));
        status.push(Some(job.status.as_str()));
        job_name.push(job.job_name.as_deref());
        push_figures(&f);
        started.push(p.started.map(micros));
        updated.push(p.updated.map(micros));
        throughput.push(p.throughput());
        // Out of retries: no ETA, it needs action; finished: nothing left.
        let prefix_eta = if inputs.final_errors.contains(&job.prefix) {
            None
        } else if !status::has_work_left(job.status, true) {
            p.eta_seconds(0)
        } else {
            snap.and_then(|s| p.eta_seconds(status::bytes_left(job, s, &f)))
        };
        eta.push(prefix_eta);
        eta_basis.push(None);
    }
    scope.push(Some("total"));
    prefix.push(None);
    status.push(None);
    job_name.push(None);
    push_figures(&total);
    started.push(first.map(micros));
    updated.push(last.map(micros));
    throughput.push(Some(report.throughput.bytes_per_second));
    eta.push(report.eta.seconds);
    eta_basis.push(Some(&report.eta.basis));
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
    use crate::model::Status;
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
    fn failures_list_the_latest_attempt_and_sum_every_attempt() {
        let failed = |n| {
            format!(
                r#""errorBreakdowns":[{{"errorCode":"NOT_FOUND","errorCount":"{n}",
                "errorLogEntries":[{{"url":"gs://s/a","errorDetails":["gone"]}}]}}]"#
            )
        };
        let history = [
            snapshot("a/", "op1", 1, &failed(1)),
            snapshot("a/", "op1", 2, &failed(2)),
            snapshot("a/", "op3", 5, &failed(2)),
            snapshot("b/", "op2", 2, &failed(4)),
            // b/'s retry copied everything: nothing fails now.
            snapshot("b/", "op4", 6, r#""counters":{}"#),
        ];
        let failed_ops = crate::store::failure_snapshots_in(&history);
        let asks: Vec<(String, DateTime<Utc>)> = ["a/", "b/"]
            .iter()
            .map(|p| (p.to_string(), DateTime::<Utc>::MAX_UTC))
            .collect();
        let latest = crate::store::snapshots_before_in(&history, &asks);
        let frame = failures_frame(&failed_ops, &latest);
        assert_eq!(frame.rows, 1);
        assert_eq!(ints(&frame, "error_count"), [2]);
        // op1's last word (2) and op3's (2); op1's earlier snapshot not again.
        assert_eq!(ints(&frame, "failed_attempts"), [4]);
    }

    fn inputs(jobs: &[(&str, Status)], history: &[HistoryRow]) -> status::Inputs {
        let jobs: Vec<PrefixJob> = jobs
            .iter()
            .map(|(p, s)| PrefixJob {
                prefix: p.to_string(),
                status: *s,
                job_name: None,
                last_updated: at(0),
            })
            .collect();
        let mut unreadable = 0;
        let latest = figures::by_prefix(
            crate::store::latest_snapshots_in(&jobs, history),
            &mut unreadable,
        );
        let mut earlier = figures::attempts_in(history, &mut unreadable);
        for (prefix, attempts) in earlier.iter_mut() {
            if let Some(l) = latest.get(prefix) {
                attempts.retain(|a| a.op.name != l.op.name);
            }
        }
        status::Inputs {
            jobs,
            latest,
            earlier,
            ..Default::default()
        }
    }

    #[test]
    fn progress_rows_carry_the_figures_and_the_total_the_reports_eta() {
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
                5,
                r#""counters":{"bytesFoundFromSource":"50","bytesCopiedToSink":"50"}"#,
            ),
            // b/ re-run: skips what op2 copied.
            snapshot(
                "b/",
                "op3",
                10,
                r#""counters":{"bytesFoundFromSource":"50","bytesFromSourceSkippedBySync":"50"}"#,
            ),
        ];
        let inputs = inputs(&[("a/", Status::Running), ("b/", Status::Done)], &history);
        let params = status::StatusParams::new(true, 3, 10);
        let report = status::report(&inputs, at(10), &params);
        let frame = progress_frame(&inputs, &report);
        assert_eq!(frame.rows, 3);
        assert_eq!(ints(&frame, "bytes_found"), [300, 50, 350]);
        assert_eq!(ints(&frame, "bytes_copied"), [100, 50, 150]);
        assert_eq!(ints(&frame, "bytes_skipped"), [0, 0, 0]);
        assert_eq!(ints(&frame, "bytes_left"), [200, 0, 200]);
        assert_eq!(report.bytes.copied, 150);
        let Some(Column::Float64 { values, .. }) = frame.column("eta_seconds") else {
            panic!("no eta")
        };
        // a/: 200 bytes left at 10 B/s; the total: the report's.
        assert_eq!(values[0], 20.0);
        assert_eq!(values[1], 0.0);
        assert_eq!(Some(values[2]), report.eta.seconds);
    }

    #[test]
    fn the_total_eta_never_counts_unlisted_prefixes_as_empty() {
        let history = [snapshot(
            "a/",
            "op1",
            10,
            r#""counters":{"bytesFoundFromSource":"100","bytesCopiedToSink":"50"}"#,
        )];
        let inputs = inputs(
            &[("a/", Status::Running), ("w/", Status::Waiting)],
            &history,
        );
        let report = status::report(&inputs, at(10), &status::StatusParams::new(true, 3, 10));
        let frame = progress_frame(&inputs, &report);
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
