//! `sts-status`: a migration's state in one report, computed from the job
//! table and one or two operation snapshots per prefix (never the whole
//! history), so it stays cheap at a million prefixes.
//!
//! The ETA is honest: bytes nobody has listed yet are never counted as zero.
//! While prefixes are unlisted there is either no ETA or one marked as an
//! estimate, with the assumption it rests on spelled out.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Counters, HistoryRow, PrefixJob, Status};

/// The window "throughput over the last hour" looks at.
pub const THROUGHPUT_WINDOW: Duration = Duration::hours(1);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    pub found: i64,
    pub copied: i64,
    pub skipped: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Seconds the rate is taken over: the last hour, or less when the
    /// migration's first operation started less than an hour ago.
    pub window_seconds: f64,
    pub bytes_copied: i64,
    pub objects_copied: i64,
    pub bytes_per_second: f64,
    pub objects_per_second: f64,
}

/// How long the bytes left take at the last hour's rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Eta {
    /// None when it cannot be told honestly (`basis` says why).
    pub seconds: Option<f64>,
    /// True when part of the work left is a guess (prefixes not listed yet).
    pub estimate: bool,
    pub basis: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stalled {
    pub prefix: String,
    pub job_name: Option<String>,
    /// The snapshot since which no counter moved.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub code: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failing {
    pub prefix: String,
    pub status: &'static str,
    pub job_name: Option<String>,
    pub objects_failed: i64,
    pub errors: Vec<ErrorCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub at: DateTime<Utc>,
    /// Prefixes per status, every status present, plus `total`.
    pub prefixes: BTreeMap<&'static str, usize>,
    pub objects: Amounts,
    pub bytes: Amounts,
    /// Prefixes still to copy whose size nobody has listed (no snapshot of
    /// their current operation yet).
    pub unlisted_prefixes: usize,
    pub throughput: Throughput,
    pub eta: Eta,
    /// Stalled prefixes, at most `limit` of them; `stalled_total` counts all
    /// (`--limit` limits lists, never counts).
    pub stalled: Vec<Stalled>,
    pub stalled_total: usize,
    /// Prefixes in `error`, or whose current operation reports failed
    /// objects; the most failed first, at most `limit` of them.
    pub failing: Vec<Failing>,
    pub failing_total: usize,
    /// Failed objects per error code over every prefix's current operation.
    pub error_codes: BTreeMap<String, i64>,
    /// History rows whose operation JSON could not be read (left out).
    pub unreadable_snapshots: usize,
}

/// Just what the report reads of an operation snapshot: serde skips the
/// rest of the JSON (transfer spec, error log entries) without building it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpDigest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    end_time: Option<DateTime<Utc>>,
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

/// One prefix's operation as a snapshot tells it.
pub struct Snapshot {
    op: OpDigest,
    at: DateTime<Utc>,
}

/// Snapshots by prefix, parsed as soon as they are read.
pub type Snapshots = HashMap<String, Snapshot>;

impl Snapshot {
    fn updated(&self) -> DateTime<Utc> {
        self.op.end_time.unwrap_or(self.at)
    }
}

/// Parses rows into snapshots, consuming them (each JSON text is freed as
/// soon as it is read); unreadable ones are counted.
pub fn parse(rows: Vec<HistoryRow>, unreadable: &mut usize) -> Snapshots {
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let parsed = row
            .operation_results
            .as_deref()
            .map(serde_json::from_str::<OpDigest>);
        match parsed {
            Some(Ok(op)) => {
                out.insert(
                    row.prefix,
                    Snapshot {
                        op,
                        at: row.timestamp,
                    },
                );
            }
            _ => *unreadable += 1,
        }
    }
    out
}

/// Whether a prefix in `status` still has work ahead (an `error` prefix is
/// retried unless retries are off).
pub fn has_work_left(status: Status, retry_errors: bool) -> bool {
    match status {
        Status::Waiting | Status::Running | Status::Paused => true,
        Status::Error => retry_errors,
        Status::Done => false,
    }
}

fn bytes_left(c: &Counters, retried: bool) -> i64 {
    let failed = if retried {
        0
    } else {
        c.bytes_from_source_failed
    };
    (c.bytes_found_from_source
        - c.bytes_copied_to_sink
        - c.bytes_from_source_skipped_by_sync
        - failed)
        .max(0)
}

/// The ETA rule shared by `sts-status` and `State.progress()`.
///
/// `listed_left`: bytes left in prefixes whose size is known; `unlisted`:
/// prefixes with work left whose size nobody has listed; `finished`: sizes
/// (bytes found) of finished prefixes, to estimate unlisted ones from;
/// `rate`: bytes per second.
pub fn eta(listed_left: i64, unlisted: usize, finished: &[i64], rate: Option<f64>) -> Eta {
    if listed_left == 0 && unlisted == 0 {
        return Eta {
            seconds: Some(0.0),
            estimate: false,
            basis: "nothing left to copy".into(),
        };
    }
    if unlisted > 0 && finished.is_empty() {
        return Eta {
            seconds: None,
            estimate: false,
            basis: format!(
                "{unlisted} prefixes not listed yet and none finished: their size is unknown"
            ),
        };
    }
    let Some(rate) = rate.filter(|r| *r > 0.0) else {
        return Eta {
            seconds: None,
            estimate: false,
            basis: "no bytes copied in the last hour: no rate to extrapolate".into(),
        };
    };
    if unlisted == 0 {
        return Eta {
            seconds: Some(listed_left as f64 / rate),
            estimate: false,
            basis: "bytes left in listed prefixes at the last hour's rate".into(),
        };
    }
    let average = finished.iter().map(|b| *b as f64).sum::<f64>() / finished.len() as f64;
    let guessed = average * unlisted as f64;
    Eta {
        seconds: Some((listed_left as f64 + guessed) / rate),
        estimate: true,
        basis: format!(
            "estimate: {unlisted} prefixes not listed yet, each assumed the average size of \
             {} finished prefixes ({:.0} bytes)",
            finished.len(),
            average
        ),
    }
}

/// What `sts-status` reports. `latest`: each prefix's latest snapshot;
/// `at_window_start`: for prefixes active in the window, their latest
/// snapshot before it; `previous`: for running prefixes, the snapshot before
/// their latest one (stall detection, SPEC 7).
#[allow(clippy::too_many_arguments)]
pub fn status_report(
    jobs: &[PrefixJob],
    latest: &[HistoryRow],
    at_window_start: &[HistoryRow],
    previous: &[HistoryRow],
    now: DateTime<Utc>,
    retry_errors: bool,
    limit: usize,
    planned: &HashMap<String, i64>,
) -> StatusReport {
    let mut unreadable = 0;
    let latest = parse(latest.to_vec(), &mut unreadable);
    let baseline = parse(at_window_start.to_vec(), &mut unreadable);
    let previous = parse(previous.to_vec(), &mut unreadable);
    report_from(
        jobs,
        &latest,
        &baseline,
        &previous,
        now,
        retry_errors,
        limit,
        unreadable,
        planned,
    )
}

#[allow(clippy::too_many_arguments)]
fn report_from(
    jobs: &[PrefixJob],
    latest: &Snapshots,
    baseline: &Snapshots,
    previous: &Snapshots,
    now: DateTime<Utc>,
    retry_errors: bool,
    limit: usize,
    unreadable: usize,
    planned: &HashMap<String, i64>,
) -> StatusReport {
    let window_start = now - THROUGHPUT_WINDOW;

    let mut prefixes: BTreeMap<&'static str, usize> =
        Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut totals = Counters::default();
    let mut unlisted = 0;
    let mut listed_left = 0i64;
    let mut finished = Vec::new();
    let mut first_start: Option<DateTime<Utc>> = None;
    let (mut window_bytes, mut window_objects) = (0i64, 0i64);
    let mut stalled = Vec::new();
    let mut failing = Vec::new();
    let mut error_codes: BTreeMap<String, i64> = BTreeMap::new();

    for job in jobs {
        *prefixes.entry(job.status.as_str()).or_default() += 1;
        let work_left = has_work_left(job.status, retry_errors);
        // A snapshot of another operation than the row's (a retry that has
        // not reported yet) says nothing of the work now under way.
        let current = latest.get(&job.prefix).filter(|s| {
            job.job_name.is_none() || job.job_name.as_deref() == Some(s.op.name.as_str())
        });
        let Some(snap) = current else {
            // Not started yet: its planned size (sts-plan --load) is what
            // is left; without a plan nobody has listed it.
            match planned.get(&job.prefix) {
                Some(bytes) if work_left => listed_left = listed_left.saturating_add(*bytes),
                None if work_left => unlisted += 1,
                _ => {}
            }
            continue;
        };
        let c = &snap.op.counters;
        totals += c;
        if let Some(start) = snap.op.start_time {
            first_start = Some(first_start.map_or(start, |f| f.min(start)));
        }
        if job.status == Status::Done {
            finished.push(c.bytes_found_from_source);
        }
        if work_left {
            listed_left = listed_left.saturating_add(bytes_left(c, job.status == Status::Error));
        }
        // Copied within the window: against the snapshot at its start when
        // it is of the same operation, else the share of the operation's
        // run that falls inside the window (linear).
        let updated = snap.updated();
        if updated > window_start {
            let (bytes, objects) = match baseline.get(&job.prefix) {
                Some(base) if base.op.name == snap.op.name => (
                    c.bytes_copied_to_sink - base.op.counters.bytes_copied_to_sink,
                    c.objects_copied_to_sink - base.op.counters.objects_copied_to_sink,
                ),
                _ => {
                    let start = snap.op.start_time.unwrap_or(updated);
                    let share = if start >= window_start || updated <= start {
                        1.0
                    } else {
                        (updated - window_start).num_milliseconds() as f64
                            / (updated - start).num_milliseconds() as f64
                    };
                    (
                        (c.bytes_copied_to_sink as f64 * share) as i64,
                        (c.objects_copied_to_sink as f64 * share) as i64,
                    )
                }
            };
            window_bytes = window_bytes.saturating_add(bytes.max(0));
            window_objects = window_objects.saturating_add(objects.max(0));
        }
        if job.status == Status::Running {
            if let Some(before) = previous.get(&job.prefix) {
                if before.op.name == snap.op.name && before.op.counters == snap.op.counters {
                    stalled.push(Stalled {
                        prefix: job.prefix.clone(),
                        job_name: Some(snap.op.name.clone()),
                        since: before.at,
                    });
                }
            }
        }
        if job.status == Status::Error || !snap.op.error_breakdowns.is_empty() {
            let errors: Vec<ErrorCount> = snap
                .op
                .error_breakdowns
                .iter()
                .map(|e| ErrorCount {
                    code: e.error_code.clone(),
                    count: e.error_count,
                })
                .collect();
            for e in &errors {
                *error_codes.entry(e.code.clone()).or_default() += e.count;
            }
            failing.push(Failing {
                prefix: job.prefix.clone(),
                status: job.status.as_str(),
                job_name: Some(snap.op.name.clone()),
                objects_failed: c.objects_from_source_failed,
                errors,
            });
        }
    }
    prefixes.insert("total", jobs.len());

    let window_seconds = first_start
        .map(|f| (now - f.max(window_start)).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0)
        .max(0.0);
    let per_second = |n: i64| {
        if window_seconds > 0.0 {
            n as f64 / window_seconds
        } else {
            0.0
        }
    };
    let throughput = Throughput {
        window_seconds,
        bytes_copied: window_bytes,
        objects_copied: window_objects,
        bytes_per_second: per_second(window_bytes),
        objects_per_second: per_second(window_objects),
    };
    let rate = (window_seconds > 0.0).then_some(throughput.bytes_per_second);

    failing.sort_by(|a, b| {
        (b.status == "error")
            .cmp(&(a.status == "error"))
            .then(b.objects_failed.cmp(&a.objects_failed))
            .then(a.prefix.cmp(&b.prefix))
    });
    let failing_total = failing.len();
    failing.truncate(limit);
    let stalled_total = stalled.len();
    stalled.truncate(limit);

    StatusReport {
        at: now,
        prefixes,
        objects: Amounts {
            found: totals.objects_found_from_source,
            copied: totals.objects_copied_to_sink,
            skipped: totals.objects_from_source_skipped_by_sync,
            failed: totals.objects_from_source_failed,
        },
        bytes: Amounts {
            found: totals.bytes_found_from_source,
            copied: totals.bytes_copied_to_sink,
            skipped: totals.bytes_from_source_skipped_by_sync,
            failed: totals.bytes_from_source_failed,
        },
        unlisted_prefixes: unlisted,
        throughput,
        eta: eta(listed_left, unlisted, &finished, rate),
        stalled,
        stalled_total,
        failing,
        failing_total,
        error_codes,
        unreadable_snapshots: unreadable,
    }
}

/// Reads what `status_report` needs through the store: the job table, one
/// latest snapshot per prefix, and the snapshots before the window and
/// before the latest one only for the prefixes that need them.
pub async fn read_status(
    store: &dyn crate::store::StateStore,
    now: DateTime<Utc>,
    retry_errors: bool,
    limit: usize,
) -> Result<StatusReport, crate::store::StoreError> {
    let jobs = store.read_jobs().await?;
    let mut unreadable = 0;
    // Each batch of rows is parsed (and its JSON freed) before the next read.
    let latest = parse(store.latest_snapshots().await?, &mut unreadable);
    let window_start = now - THROUGHPUT_WINDOW;
    let running: std::collections::HashSet<&str> = jobs
        .iter()
        .filter(|j| j.status == Status::Running)
        .map(|j| j.prefix.as_str())
        .collect();
    let mut at_window = Vec::new();
    let mut before_latest = Vec::new();
    for (prefix, snap) in &latest {
        // Only operations that ran inside the window and began before it
        // need the snapshot at its start.
        let began_before = snap.op.start_time.is_none_or(|s| s < window_start);
        if snap.updated() > window_start && began_before {
            // "Before the window's start or at it": strictly before 1 µs later.
            at_window.push((prefix.clone(), window_start + Duration::microseconds(1)));
        }
        if running.contains(prefix.as_str()) {
            before_latest.push((prefix.clone(), snap.at));
        }
    }
    let baseline = parse(store.snapshots_before(&at_window).await?, &mut unreadable);
    drop(at_window);
    let previous = parse(
        store.snapshots_before(&before_latest).await?,
        &mut unreadable,
    );
    // Sizes listed by sts-plan --load count for prefixes not started yet.
    let planned: HashMap<String, i64> = store
        .read_plan()
        .await?
        .into_iter()
        .map(|p| (p.prefix, i64::try_from(p.bytes).unwrap_or(i64::MAX)))
        .collect();
    Ok(report_from(
        &jobs,
        &latest,
        &baseline,
        &previous,
        now,
        retry_errors,
        limit,
        unreadable,
        &planned,
    ))
}

fn bytes_text(n: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3725` -> `1h 2m`; `59` -> `59s`.
pub fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The rate and ETA in one short phrase (the quickstart's live line).
pub fn rate_and_eta(rate: f64, eta: &Eta) -> String {
    let when = match eta.seconds {
        None => "ETA unknown".to_string(),
        Some(s) if eta.estimate => format!("ETA ~{} (estimate)", duration_text(s)),
        Some(s) => format!("ETA {}", duration_text(s)),
    };
    format!("{}/s, {when}", bytes_text(rate))
}

impl StatusReport {
    /// The report as text, one fact a line (the `--watch` screen).
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let count = |s: &str| self.prefixes.get(s).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "Prefixes: {} total: {} done, {} running, {} waiting, {} paused, {} error",
            count("total"),
            count("done"),
            count("running"),
            count("waiting"),
            count("paused"),
            count("error"),
        );
        let _ = writeln!(
            out,
            "Objects:  {} found, {} copied, {} skipped, {} failed",
            self.objects.found, self.objects.copied, self.objects.skipped, self.objects.failed
        );
        let b = |n: i64| bytes_text(n as f64);
        let _ = writeln!(
            out,
            "Bytes:    {} found, {} copied, {} skipped, {} failed",
            b(self.bytes.found),
            b(self.bytes.copied),
            b(self.bytes.skipped),
            b(self.bytes.failed)
        );
        if self.unlisted_prefixes > 0 {
            let _ = writeln!(
                out,
                "          (not counted: {} prefixes not listed yet)",
                self.unlisted_prefixes
            );
        }
        let t = &self.throughput;
        let _ = writeln!(
            out,
            "Rate:     {}/s, {:.1} objects/s (over the last {})",
            bytes_text(t.bytes_per_second),
            t.objects_per_second,
            duration_text(t.window_seconds)
        );
        let eta = match self.eta.seconds {
            Some(s) if self.eta.estimate => format!("~{} ({})", duration_text(s), self.eta.basis),
            Some(s) => format!("{} ({})", duration_text(s), self.eta.basis),
            None => format!("unknown ({})", self.eta.basis),
        };
        let _ = writeln!(out, "ETA:      {eta}");
        let _ = writeln!(out, "Stalled:  {}", self.stalled_total);
        for s in &self.stalled {
            let _ = writeln!(
                out,
                "  {} ({}) no progress since {}",
                s.prefix,
                s.job_name.as_deref().unwrap_or("-"),
                s.since.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        let codes: Vec<String> = self
            .error_codes
            .iter()
            .map(|(code, n)| format!("{code} x{n}"))
            .collect();
        let _ = writeln!(
            out,
            "Failing:  {} prefixes{}",
            self.failing_total,
            if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", codes.join(", "))
            }
        );
        for f in &self.failing {
            let errors: Vec<String> = f
                .errors
                .iter()
                .map(|e| format!("{} x{}", e.code, e.count))
                .collect();
            let _ = writeln!(
                out,
                "  {} [{}] {}: {}",
                f.prefix,
                f.status,
                f.job_name.as_deref().unwrap_or("-"),
                if errors.is_empty() {
                    "no error details recorded".to_string()
                } else {
                    errors.join(", ")
                }
            );
        }
        if self.failing_total > self.failing.len() {
            let _ = writeln!(
                out,
                "  ... and {} more (--limit, or --json)",
                self.failing_total - self.failing.len()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 10, minute, 0).unwrap()
    }

    fn job(prefix: &str, status: Status, op: Option<&str>) -> PrefixJob {
        PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: op.map(Into::into),
            last_updated: at(0),
        }
    }

    fn snap(
        prefix: &str,
        op: &str,
        minute: u32,
        start: u32,
        found: i64,
        copied: i64,
    ) -> HistoryRow {
        HistoryRow {
            prefix: prefix.into(),
            status: Status::Running,
            job_name: Some(op.into()),
            operation_results: Some(format!(
                r#"{{"name":"{op}","status":"IN_PROGRESS","startTime":"{}",
                "counters":{{"bytesFoundFromSource":"{found}","bytesCopiedToSink":"{copied}",
                "objectsFoundFromSource":"1","objectsCopiedToSink":"1"}}}}"#,
                at(start).to_rfc3339()
            )),
            timestamp: at(minute),
        }
    }

    #[test]
    fn counts_amounts_and_an_exact_eta_when_every_prefix_is_listed() {
        let jobs = [
            job("a/", Status::Running, Some("op-a")),
            job("b/", Status::Done, Some("op-b")),
        ];
        let latest = [
            snap("a/", "op-a", 30, 0, 1000, 400),
            snap("b/", "op-b", 20, 0, 600, 600),
        ];
        let report = status_report(&jobs, &latest, &[], &[], at(30), true, 10, &HashMap::new());
        assert_eq!(report.prefixes["running"], 1);
        assert_eq!(report.prefixes["done"], 1);
        assert_eq!(report.prefixes["waiting"], 0);
        assert_eq!(report.prefixes["total"], 2);
        assert_eq!(report.bytes.found, 1600);
        assert_eq!(report.bytes.copied, 1000);
        assert_eq!(report.unlisted_prefixes, 0);
        // 1000 bytes over the 30 minutes since the first start.
        assert_eq!(report.throughput.window_seconds, 1800.0);
        assert!(!report.eta.estimate);
        let rate = 1000.0 / 1800.0;
        assert_eq!(report.eta.seconds, Some(600.0 / rate));
    }

    #[test]
    fn unlisted_prefixes_make_the_eta_an_estimate_or_leave_it_out() {
        let latest = [snap("a/", "op-a", 30, 0, 1000, 400)];
        // Nothing finished: the unlisted prefixes' size is unknown, no ETA.
        let jobs = [
            job("a/", Status::Running, Some("op-a")),
            job("w/", Status::Waiting, None),
        ];
        let report = status_report(&jobs, &latest, &[], &[], at(30), true, 10, &HashMap::new());
        assert_eq!(report.unlisted_prefixes, 1);
        assert_eq!(report.eta.seconds, None);
        assert!(
            report.eta.basis.contains("not listed"),
            "{}",
            report.eta.basis
        );
        // With a finished prefix: an estimate, marked as one.
        let jobs = [
            job("a/", Status::Running, Some("op-a")),
            job("b/", Status::Done, Some("op-b")),
            job("w/", Status::Waiting, None),
        ];
        let latest = [latest[0].clone(), snap("b/", "op-b", 20, 0, 600, 600)];
        let report = status_report(&jobs, &latest, &[], &[], at(30), true, 10, &HashMap::new());
        assert!(report.eta.estimate);
        let rate = 1000.0 / 1800.0;
        assert_eq!(report.eta.seconds, Some((600.0 + 600.0) / rate));
        assert!(report.eta.basis.starts_with("estimate"));
    }

    #[test]
    fn planned_sizes_make_the_eta_exact_for_prefixes_not_started() {
        let latest = [snap("a/", "op-a", 30, 0, 1000, 400)];
        let jobs = [
            job("a/", Status::Running, Some("op-a")),
            job("w/", Status::Waiting, None),
            job("x/", Status::Waiting, None),
        ];
        let planned = HashMap::from([("w/".to_string(), 900), ("x/".to_string(), 300)]);
        let report = status_report(&jobs, &latest, &[], &[], at(30), true, 10, &planned);
        assert_eq!(report.unlisted_prefixes, 0);
        assert!(!report.eta.estimate, "{}", report.eta.basis);
        // 400 bytes copied over the 30 minutes since the start.
        let rate = 400.0 / 1800.0;
        assert_eq!(report.eta.seconds, Some((600.0 + 900.0 + 300.0) / rate));
        // One prefix planned, one not: still an (unanswerable) estimate.
        let some = HashMap::from([("w/".to_string(), 900)]);
        let report = status_report(&jobs, &latest, &[], &[], at(30), true, 10, &some);
        assert_eq!(report.unlisted_prefixes, 1);
        assert_eq!(report.eta.seconds, None);
    }

    #[test]
    fn the_rate_counts_only_what_was_copied_within_the_last_hour() {
        let jobs = [job("a/", Status::Running, Some("op-a"))];
        // Started at 10:00; at 11:30 it had copied 9000, at 10:30 (the
        // snapshot before the window) 3000: 6000 bytes in the hour.
        let now = at(30) + Duration::hours(1);
        let mut latest = snap("a/", "op-a", 30, 0, 10_000, 9000);
        latest.timestamp = now;
        let base = snap("a/", "op-a", 30, 0, 10_000, 3000);
        let report = status_report(
            &jobs,
            &[latest],
            &[base],
            &[],
            now,
            true,
            10,
            &HashMap::new(),
        );
        assert_eq!(report.throughput.window_seconds, 3600.0);
        assert_eq!(report.throughput.bytes_copied, 6000);
    }

    #[test]
    fn unchanged_counters_between_two_snapshots_are_a_stall() {
        let jobs = [
            job("a/", Status::Running, Some("op-a")),
            job("b/", Status::Running, Some("op-b")),
        ];
        let latest = [
            snap("a/", "op-a", 30, 0, 10, 5),
            snap("b/", "op-b", 30, 0, 10, 6),
        ];
        let previous = [
            snap("a/", "op-a", 25, 0, 10, 5),
            snap("b/", "op-b", 25, 0, 10, 5),
        ];
        let report = status_report(
            &jobs,
            &latest,
            &[],
            &previous,
            at(30),
            true,
            10,
            &HashMap::new(),
        );
        assert_eq!(report.stalled.len(), 1);
        assert_eq!(report.stalled[0].prefix, "a/");
        assert_eq!(report.stalled[0].since, at(25));
        // --limit limits the list, never the count.
        let limited = status_report(
            &jobs,
            &latest,
            &[],
            &previous,
            at(30),
            true,
            0,
            &HashMap::new(),
        );
        assert!(limited.stalled.is_empty());
        assert_eq!(limited.stalled_total, 1);
        assert!(limited.to_text().contains("Stalled:  1"));
    }

    #[test]
    fn failing_prefixes_list_their_error_codes() {
        let jobs = [
            job("a/", Status::Error, Some("op-a")),
            job("b/", Status::Done, Some("op-b")),
        ];
        let mut failed = snap("a/", "op-a", 30, 0, 10, 5);
        failed.operation_results = Some(
            r#"{"name":"op-a","status":"FAILED","counters":{"objectsFromSourceFailed":"3"},
            "errorBreakdowns":[{"errorCode":"PERMISSION_DENIED","errorCount":"3"}]}"#
                .into(),
        );
        let latest = [failed, snap("b/", "op-b", 30, 0, 10, 10)];
        let report = status_report(&jobs, &latest, &[], &[], at(30), false, 10, &HashMap::new());
        assert_eq!(report.failing_total, 1);
        assert_eq!(report.failing[0].prefix, "a/");
        assert_eq!(
            report.failing[0].errors,
            [ErrorCount {
                code: "PERMISSION_DENIED".into(),
                count: 3
            }]
        );
        assert_eq!(report.error_codes["PERMISSION_DENIED"], 3);
        assert!(report.to_text().contains("PERMISSION_DENIED x3"));
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(duration_text(59.4), "59s");
        assert_eq!(duration_text(3725.0), "1h 2m");
        assert_eq!(duration_text(90_000.0), "1d 1h");
    }
}
