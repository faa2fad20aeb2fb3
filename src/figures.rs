//! One definition of every figure a view reports (README, "The figures"):
//! objects and bytes found, copied, skipped, failing now, failed attempts
//! and left, per prefix from its attempts (one operation each). Pure
//! functions over plain data; every view calls these (through
//! `analysis::figures`), and the stores fold history with them (`fold`).
//!
//! Also the one parser of operation snapshots (`Digest`): status, progress,
//! failures and the timeline all read history rows through it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Counters, ErrorSummary, HistoryRow, PrefixJob, Status};

/// What every view reads of an operation snapshot; serde skips the rest of
/// the JSON (the transfer spec) without building it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub counters: Counters,
    #[serde(default)]
    pub error_breakdowns: Vec<ErrorSummary>,
    /// Only whether the spec had a manifest; the rest of it is skipped.
    #[serde(default, skip_serializing_if = "SpecDigest::is_whole")]
    pub transfer_spec: SpecDigest,
}

/// What views read of an operation's spec: whether it had a manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecDigest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_manifest: Option<serde_json::Value>,
}

impl SpecDigest {
    fn is_whole(&self) -> bool {
        self.transfer_manifest.is_none()
    }
}

impl Digest {
    /// Whether the operation ran with a manifest: it looked at the listed
    /// objects only, not the whole prefix.
    pub fn manifest_run(&self) -> bool {
        self.transfer_spec.transfer_manifest.is_some()
    }
}

/// One operation snapshot and when it was recorded.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub op: Digest,
    pub at: DateTime<Utc>,
}

impl Snapshot {
    /// The operation's end, else the time of this snapshot.
    pub fn updated(&self) -> DateTime<Utc> {
        self.op.end_time.unwrap_or(self.at)
    }

    /// The earliest moment known of its operation (for finding the attempt
    /// before it).
    pub fn began(&self) -> DateTime<Utc> {
        self.op.start_time.map_or(self.at, |s| s.min(self.at))
    }
}

/// The one snapshot parser. None when the JSON does not read.
pub fn parse(json: &str) -> Option<Digest> {
    serde_json::from_str(json).ok()
}

/// A history row's snapshot; None (counted in `unreadable`) when it has no
/// operation results or they do not read.
pub fn snapshot_of(row: &HistoryRow, unreadable: &mut usize) -> Option<Snapshot> {
    match row.operation_results.as_deref().map(parse) {
        Some(Some(op)) => Some(Snapshot {
            op,
            at: row.timestamp,
        }),
        _ => {
            *unreadable += 1;
            None
        }
    }
}

/// Snapshots by prefix, parsed as soon as they are read.
pub type Snapshots = HashMap<String, Snapshot>;

/// Parses rows into snapshots by prefix, consuming them (each JSON text is
/// freed as soon as it is read); unreadable ones are counted.
pub fn by_prefix(rows: Vec<HistoryRow>, unreadable: &mut usize) -> Snapshots {
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        if let Some(s) = snapshot_of(&row, unreadable) {
            out.insert(row.prefix, s);
        }
    }
    out
}

/// One kind of amount (objects or bytes) of a prefix or a total.
/// `found = copied + skipped + failed + left` always holds, each >= 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    /// In the source as the latest attempt listed it (so far, while it runs).
    pub found: i64,
    /// In place because an attempt of this migration copied it: copies
    /// summed over attempts, capped so that no object counts twice.
    pub copied: i64,
    /// Found by the latest attempt and in place without being copied by
    /// any attempt (already at the destination).
    pub skipped: i64,
    /// Failing now: what the latest attempt failed.
    pub failed: i64,
    /// Failed attempts: failures summed over every attempt (an object that
    /// failed in four attempts counts four times).
    pub failed_attempts: i64,
    /// Found by the latest attempt and not handled by it yet.
    pub left: i64,
}

impl std::ops::AddAssign<&Amounts> for Amounts {
    /// Saturating: big prefixes must never add up to a negative total.
    fn add_assign(&mut self, a: &Amounts) {
        self.found = self.found.saturating_add(a.found);
        self.copied = self.copied.saturating_add(a.copied);
        self.skipped = self.skipped.saturating_add(a.skipped);
        self.failed = self.failed.saturating_add(a.failed);
        self.failed_attempts = self.failed_attempts.saturating_add(a.failed_attempts);
        self.left = self.left.saturating_add(a.left);
    }
}

/// Objects and bytes of one prefix (or of several, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub objects: Amounts,
    pub bytes: Amounts,
}

impl Figures {
    /// The figures' names as columns (frames, the SQLite fold), in the
    /// order of [`Figures::values`].
    pub const COLUMNS: [&'static str; 12] = [
        "objects_found",
        "objects_copied",
        "objects_skipped",
        "objects_failed",
        "objects_failed_attempts",
        "objects_left",
        "bytes_found",
        "bytes_copied",
        "bytes_skipped",
        "bytes_failed",
        "bytes_failed_attempts",
        "bytes_left",
    ];

    /// The figures in the order of [`Figures::COLUMNS`].
    pub fn values(&self) -> [i64; 12] {
        let (o, b) = (&self.objects, &self.bytes);
        [
            o.found,
            o.copied,
            o.skipped,
            o.failed,
            o.failed_attempts,
            o.left,
            b.found,
            b.copied,
            b.skipped,
            b.failed,
            b.failed_attempts,
            b.left,
        ]
    }

    /// The figures from values in the order of [`Figures::COLUMNS`].
    pub fn from_values(v: [i64; 12]) -> Self {
        let amounts = |a: &[i64]| Amounts {
            found: a[0],
            copied: a[1],
            skipped: a[2],
            failed: a[3],
            failed_attempts: a[4],
            left: a[5],
        };
        Figures {
            objects: amounts(&v[..6]),
            bytes: amounts(&v[6..]),
        }
    }
}

impl std::ops::AddAssign<&Figures> for Figures {
    fn add_assign(&mut self, f: &Figures) {
        self.objects += &f.objects;
        self.bytes += &f.bytes;
    }
}

/// One kind of amount from the latest attempt's counters and the sums over
/// every attempt. Failing now comes first (it is the latest attempt's own
/// word), then copied (earlier attempts' copies count: a re-run skips what
/// they copied), then what the latest attempt has not handled yet; skipped
/// is the rest, so nothing is counted twice and nothing exceeds `found`.
fn amounts(found: i64, failed: i64, left: i64, copied_sum: i64, failed_sum: i64) -> Amounts {
    let found = found.max(0);
    let failed = failed.clamp(0, found);
    let copied = copied_sum.clamp(0, found - failed);
    let left = left.clamp(0, found - failed - copied);
    Amounts {
        found,
        copied,
        skipped: found - failed - copied - left,
        failed,
        failed_attempts: failed_sum.max(0),
        left,
    }
}

/// What a prefix's figures sum over its attempts (`prefix_figures`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    pub objects_copied: i64,
    pub bytes_copied: i64,
    pub objects_failed: i64,
    pub bytes_failed: i64,
    /// Attempts summed.
    pub attempts: u32,
    /// Objects and bytes found by the latest whole-prefix attempt summed
    /// (not a manifest run): what the prefix holds.
    #[serde(default)]
    pub whole_found: Option<(i64, i64)>,
}

impl Sums {
    /// Adds one attempt (its latest snapshot's counters, and whether it
    /// ran with a manifest).
    pub fn add(&mut self, c: &Counters, manifest_run: bool) {
        if !manifest_run {
            self.whole_found = Some((c.objects_found_from_source, c.bytes_found_from_source));
        }
        self.objects_copied = self
            .objects_copied
            .saturating_add(c.objects_copied_to_sink.max(0));
        self.bytes_copied = self
            .bytes_copied
            .saturating_add(c.bytes_copied_to_sink.max(0));
        self.objects_failed = self
            .objects_failed
            .saturating_add(c.objects_from_source_failed.max(0));
        self.bytes_failed = self
            .bytes_failed
            .saturating_add(c.bytes_from_source_failed.max(0));
        self.attempts = self.attempts.saturating_add(1);
    }
}

/// A prefix's figures from its attempts' counters (each attempt's latest
/// snapshot), oldest first; the last one is the latest attempt. For one
/// attempt they are its counters as STS reported them.
pub fn prefix_figures<'a>(attempts: impl IntoIterator<Item = &'a Counters>) -> Figures {
    prefix_figures_with(attempts.into_iter().map(|c| (c, false)))
}

/// [`prefix_figures`] of attempts each marked whether it was a manifest
/// run: such a run finds only the objects listed, so what the prefix holds
/// (found) stays what its latest whole run found, while failing now and
/// left are the latest attempt's, and its copies count with the others.
pub fn prefix_figures_with<'a>(
    attempts: impl IntoIterator<Item = (&'a Counters, bool)>,
) -> Figures {
    let mut latest: Option<&Counters> = None;
    let mut sums = Sums::default();
    for (c, manifest_run) in attempts {
        sums.add(c, manifest_run);
        latest = Some(c);
    }
    latest.map_or_else(Figures::default, |l| figures_with(l, &sums))
}

/// A prefix's figures from its latest attempt's counters and the sums over
/// every attempt, the latest included.
pub fn figures_with(l: &Counters, sums: &Sums) -> Figures {
    let (objects_found, bytes_found) = sums
        .whole_found
        .unwrap_or((l.objects_found_from_source, l.bytes_found_from_source));
    let left = |found: i64, copied: i64, skipped: i64, failed: i64| {
        found
            .saturating_sub(copied)
            .saturating_sub(skipped)
            .saturating_sub(failed)
    };
    Figures {
        objects: amounts(
            objects_found,
            l.objects_from_source_failed,
            left(
                l.objects_found_from_source,
                l.objects_copied_to_sink,
                l.objects_from_source_skipped_by_sync,
                l.objects_from_source_failed,
            ),
            sums.objects_copied,
            sums.objects_failed,
        ),
        bytes: amounts(
            bytes_found,
            l.bytes_from_source_failed,
            left(
                l.bytes_found_from_source,
                l.bytes_copied_to_sink,
                l.bytes_from_source_skipped_by_sync,
                l.bytes_from_source_failed,
            ),
            sums.bytes_copied,
            sums.bytes_failed,
        ),
    }
}

/// One prefix's history folded row by row in the order it was written:
/// what the views need of it (its latest snapshot, the sums over earlier
/// attempts, its failures since it was last queued) without reading the
/// history again. The SQLite store keeps one per prefix, folded in the
/// transaction that writes the rows, so `sts-status` reads finished
/// prefixes as one aggregate instead of their snapshots.
#[derive(Debug, Clone, Default)]
pub struct Fold {
    /// The latest attempt's latest snapshot.
    pub latest: Option<Snapshot>,
    /// Sums over the attempts before the latest.
    pub earlier: Sums,
    /// `error` rows since the prefix was last queued (as
    /// `StateStore::failure_counts` counts them).
    pub failures: u32,
    /// Rows whose operation results did not read (left out).
    pub unreadable: u32,
}

impl Fold {
    /// Folds in the prefix's next history row.
    pub fn add(&mut self, row: &HistoryRow) {
        match row.status {
            // A queueing row (load or requeue): retries count from here.
            Status::Waiting if row.job_name.is_none() => self.failures = 0,
            Status::Error => self.failures = self.failures.saturating_add(1),
            _ => {}
        }
        let Some(json) = row.operation_results.as_deref() else {
            return;
        };
        let Some(op) = parse(json) else {
            self.unreadable = self.unreadable.saturating_add(1);
            return;
        };
        let snap = Snapshot {
            op,
            at: row.timestamp,
        };
        match &self.latest {
            Some(l) if l.op.name == snap.op.name => {
                if snap.at >= l.at {
                    self.latest = Some(snap);
                }
            }
            Some(l) if snap.at >= l.at => {
                // The next attempt: the one before becomes an earlier one.
                self.earlier.add(&l.op.counters, l.op.manifest_run());
                self.latest = Some(snap);
            }
            // A late row of an earlier attempt: that attempt stays as its
            // last row before the next one began.
            Some(_) => {}
            None => self.latest = Some(snap),
        }
    }

    /// The prefix's figures over all its attempts.
    pub fn figures(&self) -> Figures {
        match &self.latest {
            None => Figures::default(),
            Some(l) => {
                let mut sums = self.earlier;
                sums.add(&l.op.counters, l.op.manifest_run());
                figures_with(&l.op.counters, &sums)
            }
        }
    }

    /// Whether the prefix's latest attempt reports failed objects.
    pub fn has_errors(&self) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|l| !l.op.error_breakdowns.is_empty())
    }
}

/// Finished prefixes summed by the store (`HistoryReads::status_view`):
/// `done`, their latest attempt without failures, ended before the moment
/// asked for, so nothing but their totals is needed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuietTotals {
    pub prefixes: usize,
    pub figures: Figures,
    pub first_start: Option<DateTime<Utc>>,
    pub unreadable: usize,
}

/// What `sts-status` reads from a store that folds its history: quiet
/// prefixes as totals, every other prefix with its fold.
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    pub quiet: QuietTotals,
    pub jobs: Vec<PrefixJob>,
    pub folds: HashMap<String, Fold>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(status: Status, op: Option<(&str, i64, i64)>, minute: u32) -> HistoryRow {
        HistoryRow {
            prefix: "p/".into(),
            status,
            job_name: op.map(|_| "transferJobs/j".to_string()),
            operation_results: op.map(|(name, copied, failed)| {
                format!(
                    r#"{{"name":"{name}","counters":{{"objectsFoundFromSource":"10",
                    "objectsCopiedToSink":"{copied}","objectsFromSourceFailed":"{failed}"}}}}"#
                )
            }),
            timestamp: Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap(),
        }
    }

    #[test]
    fn a_fold_equals_the_figures_of_the_attempts_it_saw() {
        let mut fold = Fold::default();
        fold.add(&row(Status::Waiting, None, 0));
        fold.add(&row(Status::Running, Some(("a", 2, 0)), 1));
        fold.add(&row(Status::Error, Some(("a", 6, 4)), 2));
        fold.add(&row(Status::Running, Some(("b", 1, 0)), 3));
        fold.add(&row(Status::Error, Some(("b", 1, 3)), 4));
        // A late row of the first attempt changes nothing.
        fold.add(&row(Status::Running, Some(("a", 9, 0)), 2));
        assert_eq!(fold.failures, 2);
        assert_eq!(fold.earlier.attempts, 1);
        let counters = |copied: i64, failed: i64| Counters {
            objects_found_from_source: 10,
            objects_copied_to_sink: copied,
            objects_from_source_failed: failed,
            ..Counters::default()
        };
        let expected = prefix_figures([&counters(6, 4), &counters(1, 3)]);
        assert_eq!(fold.figures(), expected);
        assert_eq!(fold.figures().objects.failed_attempts, 7);
        // Queued again: retries count from here; figures stay.
        fold.add(&row(Status::Waiting, None, 5));
        assert_eq!(fold.failures, 0);
        assert_eq!(fold.figures(), expected);
        fold.add(&HistoryRow {
            operation_results: Some("{not json".into()),
            ..row(Status::Running, None, 6)
        });
        assert_eq!(fold.unreadable, 1);
        assert_eq!(fold.figures(), expected);
    }

    #[test]
    fn a_fold_keeps_what_a_prefix_holds_across_a_manifest_run() {
        let mut fold = Fold::default();
        fold.add(&row(Status::Error, Some(("a", 6, 4)), 1));
        let mut rerun = row(Status::Done, None, 2);
        rerun.operation_results = Some(
            r#"{"name":"m","transferSpec":{"transferManifest":{"location":"gs://b/m.csv"}},
            "counters":{"objectsFoundFromSource":"4","objectsCopiedToSink":"4"}}"#
                .into(),
        );
        fold.add(&rerun);
        let whole = Counters {
            objects_found_from_source: 10,
            objects_copied_to_sink: 6,
            objects_from_source_failed: 4,
            ..Counters::default()
        };
        let manifest = Counters {
            objects_found_from_source: 4,
            objects_copied_to_sink: 4,
            ..Counters::default()
        };
        let expected = prefix_figures_with([(&whole, false), (&manifest, true)]);
        assert_eq!(fold.figures(), expected);
        assert_eq!((expected.objects.found, expected.objects.copied), (10, 10));
        // Stored and read back, the fold says the same.
        let stored: Sums =
            serde_json::from_str(&serde_json::to_string(&fold.earlier).unwrap()).unwrap();
        assert_eq!(stored, fold.earlier);
        let latest = fold.latest.as_ref().unwrap();
        let op = parse(&serde_json::to_string(&latest.op).unwrap()).unwrap();
        assert!(op.manifest_run());
    }
}
