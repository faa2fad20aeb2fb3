//! `sts-status`: a migration's state in one report, computed from the job
//! table and a few operation snapshots per prefix (the latest, one per
//! earlier attempt, and at most two more), never the whole history, so it
//! stays cheap at a million prefixes. Its figures are `figures`' (README,
//! "The figures"), as in every other view.
//!
//! The ETA is honest: bytes nobody has listed yet are never counted as zero,
//! and prefixes out of retries are left out (they need action, not time).
//! While prefixes are unlisted there is either no ETA or one marked as an
//! estimate, with the assumption it rests on spelled out.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::figures::{
    self, by_prefix, figures_with, prefix_figures_with, Figures, QuietTotals, Snapshot, Snapshots,
    Sums,
};
use crate::format::{bytes as bytes_text, duration as duration_text};
use crate::model::{Counters, HistoryRow, PrefixJob, Status};

pub use super::figures::{Amounts, STALL_AFTER};

mod read;
mod text;

pub use read::{read_inputs, read_status, read_status_inputs};
pub use text::rate_and_eta;

/// The window "throughput over the last hour" looks at.
pub const THROUGHPUT_WINDOW: Duration = Duration::hours(1);

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
    /// A snapshot with the current counters: none moved since at least then.
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
    /// Failing now (the latest attempt's failures).
    pub objects_failed: i64,
    /// Failures summed over every attempt.
    pub failed_attempts: i64,
    pub errors: Vec<ErrorCount>,
}

/// What `sts-verify` proved, as of now: a verdict counts only while it still
/// speaks for its prefix (`verification::is_stale`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerificationSummary {
    /// Done prefixes whose latest check matched and still speaks for them.
    pub verified: usize,
    /// Prefixes whose latest check found a difference, and still speaks.
    pub mismatched: usize,
    /// Checks that no longer speak for their prefix: it was requeued or
    /// copied again since (or is gone). Check them again (`sts-verify`).
    pub stale: usize,
    /// Done prefixes with no check that speaks for them (never checked, or
    /// stale): what `sts-verify` would check next.
    pub unverified_done: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub at: DateTime<Utc>,
    /// Prefixes per status, every status present, plus `total`.
    pub prefixes: BTreeMap<&'static str, usize>,
    pub objects: Amounts,
    pub bytes: Amounts,
    /// Prefixes still to copy whose size nobody has listed (no snapshot of
    /// any of their operations yet).
    pub unlisted_prefixes: usize,
    pub throughput: Throughput,
    pub eta: Eta,
    /// Stalled prefixes, at most `limit` of them; `stalled_total` counts all
    /// (`--limit` limits lists, never counts).
    pub stalled: Vec<Stalled>,
    pub stalled_total: usize,
    /// Prefixes in `error` out of retries: no manager starts them again, the
    /// ETA leaves them out; they need a fix and `sts-requeue`. At most `limit`.
    pub needs_action: Vec<String>,
    pub needs_action_total: usize,
    /// Prefixes in `error`, or whose latest attempt reports failed objects;
    /// the most failed first, at most `limit` of them.
    pub failing: Vec<Failing>,
    pub failing_total: usize,
    /// Objects failing now per error code (every prefix's latest attempt).
    pub error_codes: BTreeMap<String, i64>,
    /// History rows whose operation JSON could not be read (left out).
    pub unreadable_snapshots: usize,
    pub verification: VerificationSummary,
    /// The current pass (`sts-cutover`; none before its first run).
    pub pass: Option<u32>,
    /// Every pass with its figures: recorded at its end, or over the
    /// latest operations of its prefixes while it runs.
    pub passes: Vec<crate::records::Pass>,
}

/// The passes with their figures: an ended pass's as recorded, the open
/// pass's over the latest snapshots of the prefixes in it.
pub fn pass_figures(inputs: &Inputs) -> Vec<crate::records::Pass> {
    let mut passes = inputs.passes.clone();
    for pass in passes.iter_mut().filter(|p| p.ended_at.is_none()) {
        let mut total = crate::model::Counters::default();
        for (prefix, _) in inputs.pass_of.iter().filter(|(_, n)| **n == pass.pass) {
            if let Some(snap) = inputs.latest.get(prefix) {
                // Only operations of this pass: begun once it was queued
                // (a prefix not started yet still shows the last pass's).
                let of_pass = pass.pass == 1
                    || pass
                        .queued_at
                        .zip(snap.op.start_time)
                        .is_some_and(|(queued, start)| start >= queued);
                if of_pass {
                    total += &snap.op.counters;
                }
            }
        }
        pass.objects_found = total.objects_found_from_source;
        pass.bytes_found = total.bytes_found_from_source;
        pass.objects_copied = total.objects_copied_to_sink;
        pass.bytes_copied = total.bytes_copied_to_sink;
        pass.objects_deleted = total.objects_deleted_from_sink;
    }
    passes
}

/// How a report is taken: the manager's retry options and the stall rule's
/// threshold (`figures::stalled`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatusParams {
    pub retry_errors: bool,
    pub max_retries: u32,
    pub limit: usize,
    pub stall_after: Duration,
}

impl StatusParams {
    /// `stall_after` is `STALL_AFTER`.
    pub fn new(retry_errors: bool, max_retries: u32, limit: usize) -> Self {
        StatusParams {
            retry_errors,
            max_retries,
            limit,
            stall_after: STALL_AFTER,
        }
    }
}

/// Everything a report (and `progress()`) is computed from, read once.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub jobs: Vec<PrefixJob>,
    /// Each prefix's latest snapshot (its latest attempt).
    pub latest: Snapshots,
    /// Each prefix's earlier attempts (their latest snapshots), oldest first.
    pub earlier: HashMap<String, Vec<Snapshot>>,
    /// Or, read from a store that folds its history, their sums (a prefix
    /// has one or the other).
    pub earlier_sums: HashMap<String, Sums>,
    /// Finished prefixes the store summed (`HistoryReads::status_view`):
    /// `jobs` holds every other prefix.
    pub quiet: QuietTotals,
    /// The job rows of quiet prefixes that have a verdict (for the
    /// verification summary only: their figures are in `quiet`).
    pub quiet_verified: Vec<PrefixJob>,
    /// For prefixes active in the throughput window: the snapshot at its start.
    pub baseline: Snapshots,
    /// For running prefixes: the latest snapshot at or before `now - stall_after`.
    pub stall_base: Snapshots,
    /// Planned bytes of prefixes (`sts-plan --load`).
    pub planned: HashMap<String, i64>,
    /// Prefixes in `error` out of retries under the params' options.
    pub final_errors: HashSet<String>,
    /// The verification table (sts-verify's verdicts).
    pub verifications: Vec<crate::records::Verification>,
    pub unreadable: usize,
    /// The pass table (`sts-cutover`), and for an open pass its prefixes.
    pub passes: Vec<crate::records::Pass>,
    pub pass_of: HashMap<String, u32>,
}

impl Inputs {
    /// `verification_summary` over every prefix, quiet ones included.
    pub fn verification_summary(&self) -> VerificationSummary {
        if self.quiet_verified.is_empty() {
            let other_done = self.quiet.prefixes;
            return verification_summary(&self.jobs, &self.verifications, other_done);
        }
        let mut jobs = self.jobs.clone();
        jobs.extend(self.quiet_verified.iter().cloned());
        let other_done = self
            .quiet
            .prefixes
            .saturating_sub(self.quiet_verified.len());
        verification_summary(&jobs, &self.verifications, other_done)
    }

    /// A prefix's figures over all its attempts.
    pub fn figures_of(&self, prefix: &str) -> Figures {
        if let (Some(sums), Some(latest)) = (self.earlier_sums.get(prefix), self.latest.get(prefix))
        {
            let mut sums = *sums;
            sums.add(&latest.op.counters, latest.op.manifest_run());
            return figures_with(&latest.op.counters, &sums);
        }
        let earlier = self.earlier.get(prefix).into_iter().flatten();
        let latest = self.latest.get(prefix);
        prefix_figures_with(
            earlier
                .chain(latest)
                .map(|s| (&s.op.counters, s.op.manifest_run())),
        )
    }
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

/// Whether the prefix's latest snapshot is of the operation now under way
/// (not a finished attempt that another will follow).
fn under_way(job: &PrefixJob, snap: &Snapshot) -> bool {
    matches!(job.status, Status::Running | Status::Paused)
        && job.job_name.as_deref().is_none_or(|n| n == snap.op.name)
}

/// Bytes still to handle in a prefix with work left: what its latest
/// attempt has not handled, plus what it failed when another attempt will
/// run (a retry handles the failures again).
pub fn bytes_left(job: &PrefixJob, snap: &Snapshot, f: &Figures) -> i64 {
    if under_way(job, snap) {
        f.bytes.left
    } else {
        f.bytes.left.saturating_add(f.bytes.failed)
    }
}

/// The ETA rule shared by `sts-status` and `State.progress()`.
///
/// `listed_left`: bytes left in prefixes whose size is known; `unlisted`:
/// prefixes with work left whose size nobody has listed; `finished`: how
/// many prefixes finished and their bytes found, to estimate unlisted ones
/// from; `rate`: bytes per second.
pub fn eta(listed_left: i64, unlisted: usize, finished: (usize, i64), rate: Option<f64>) -> Eta {
    let (finished_prefixes, finished_bytes) = finished;
    if listed_left == 0 && unlisted == 0 {
        return Eta {
            seconds: Some(0.0),
            estimate: false,
            basis: "nothing left to copy".into(),
        };
    }
    if unlisted > 0 && finished_prefixes == 0 {
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
    let average = finished_bytes as f64 / finished_prefixes as f64;
    let guessed = average * unlisted as f64;
    Eta {
        seconds: Some((listed_left as f64 + guessed) / rate),
        estimate: true,
        basis: format!(
            "estimate: {unlisted} prefixes not listed yet, each assumed the average size of \
             {} finished prefixes ({:.0} bytes)",
            finished_prefixes, average
        ),
    }
}

/// A report from rows already read (tests, and views holding rows):
/// `latest`: each prefix's latest snapshot; `at_window_start`: for prefixes
/// active in the window, their latest snapshot before it; `stall_base`: for
/// running prefixes, their latest snapshot at or before `now - stall_after`.
#[allow(clippy::too_many_arguments)]
pub fn status_report(
    jobs: &[PrefixJob],
    latest: &[HistoryRow],
    at_window_start: &[HistoryRow],
    stall_base: &[HistoryRow],
    now: DateTime<Utc>,
    retry_errors: bool,
    limit: usize,
    planned: &HashMap<String, i64>,
) -> StatusReport {
    let mut unreadable = 0;
    let inputs = Inputs {
        jobs: jobs.to_vec(),
        latest: by_prefix(latest.to_vec(), &mut unreadable),
        baseline: by_prefix(at_window_start.to_vec(), &mut unreadable),
        stall_base: by_prefix(stall_base.to_vec(), &mut unreadable),
        planned: planned.clone(),
        unreadable,
        ..Inputs::default()
    };
    report(
        &inputs,
        now,
        &StatusParams::new(retry_errors, u32::MAX, limit),
    )
}

/// The report from its inputs (pure).
pub fn report(inputs: &Inputs, now: DateTime<Utc>, params: &StatusParams) -> StatusReport {
    let window_start = now - THROUGHPUT_WINDOW;

    let mut prefixes: BTreeMap<&'static str, usize> =
        Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    // Quiet prefixes come summed: done, ended before the window.
    let quiet = &inputs.quiet;
    *prefixes.entry(Status::Done.as_str()).or_default() += quiet.prefixes;
    let mut totals = quiet.figures;
    let mut unlisted = 0;
    let mut listed_left = 0i64;
    let mut finished = (quiet.prefixes, quiet.figures.bytes.found);
    let mut first_start: Option<DateTime<Utc>> = quiet.first_start;
    let (mut window_bytes, mut window_objects) = (0i64, 0i64);
    let mut stalled = Vec::new();
    let mut needs_action = Vec::new();
    let mut failing = Vec::new();
    let mut error_codes: BTreeMap<String, i64> = BTreeMap::new();

    for job in &inputs.jobs {
        *prefixes.entry(job.status.as_str()).or_default() += 1;
        let out_of_retries = inputs.final_errors.contains(&job.prefix);
        if out_of_retries {
            needs_action.push(job.prefix.clone());
        }
        let work_left = has_work_left(job.status, params.retry_errors) && !out_of_retries;
        let Some(snap) = inputs.latest.get(&job.prefix) else {
            // Never listed: its planned size (sts-plan --load) is what is
            // left; without a plan nobody knows its size.
            match inputs.planned.get(&job.prefix) {
                Some(bytes) if work_left => listed_left = listed_left.saturating_add(*bytes),
                None if work_left => unlisted += 1,
                _ => {}
            }
            continue;
        };
        let f = inputs.figures_of(&job.prefix);
        totals += &f;
        let c = &snap.op.counters;
        if let Some(start) = snap.op.start_time {
            first_start = Some(first_start.map_or(start, |f| f.min(start)));
        }
        if job.status == Status::Done {
            finished.0 += 1;
            finished.1 = finished.1.saturating_add(f.bytes.found);
        }
        if work_left {
            listed_left = listed_left.saturating_add(bytes_left(job, snap, &f));
        }
        // Copied within the window: against the snapshot at its start when
        // it is of the same operation, else the share of the operation's
        // run that falls inside the window (linear).
        let updated = snap.updated();
        if updated > window_start {
            let (bytes, objects) = match inputs.baseline.get(&job.prefix) {
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
        if job.status == Status::Running && under_way(job, snap) && *c != Counters::default() {
            // The counters were last seen changing no earlier than the base
            // snapshot when it shows the same ones, else after it.
            let last_change_at = match inputs.stall_base.get(&job.prefix) {
                Some(base) if base.op.name == snap.op.name && base.op.counters == *c => base.at,
                _ => snap
                    .at
                    .max(now - params.stall_after + Duration::microseconds(1)),
            };
            if figures::stalled(last_change_at, now, params.stall_after) {
                stalled.push(Stalled {
                    prefix: job.prefix.clone(),
                    job_name: Some(snap.op.name.clone()),
                    since: last_change_at,
                });
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
                objects_failed: f.objects.failed,
                failed_attempts: f.objects.failed_attempts,
                errors,
            });
        }
    }
    prefixes.insert("total", inputs.jobs.len() + quiet.prefixes);

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
    let limit = params.limit;
    let failing_total = failing.len();
    failing.truncate(limit);
    stalled.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let stalled_total = stalled.len();
    stalled.truncate(limit);
    let needs_action_total = needs_action.len();
    needs_action.truncate(limit);
    let mut eta = eta(listed_left, unlisted, finished, rate);
    if needs_action_total > 0 {
        eta.basis.push_str(&format!(
            "; {needs_action_total} prefixes out of retries left out (they need action)"
        ));
    }

    StatusReport {
        at: now,
        prefixes,
        objects: totals.objects,
        bytes: totals.bytes,
        unlisted_prefixes: unlisted,
        throughput,
        eta,
        stalled,
        stalled_total,
        needs_action,
        needs_action_total,
        failing,
        failing_total,
        error_codes,
        unreadable_snapshots: inputs.unreadable + quiet.unreadable,
        verification: inputs.verification_summary(),
        pass: inputs.passes.last().map(|p| p.pass),
        passes: pass_figures(inputs),
    }
}

/// Verdicts that still speak for their prefix, those that no longer do,
/// and the done prefixes no verdict speaks for (`other_done`: done prefixes
/// not in `jobs` and with no verdict). Pure.
pub fn verification_summary(
    jobs: &[PrefixJob],
    verifications: &[crate::records::Verification],
    other_done: usize,
) -> VerificationSummary {
    use crate::records::VerifyResult;
    let by_prefix: HashMap<&str, &PrefixJob> =
        jobs.iter().map(|j| (j.prefix.as_str(), j)).collect();
    let mut summary = VerificationSummary::default();
    let mut spoken_for: HashSet<&str> = HashSet::new();
    for v in verifications {
        let job = by_prefix.get(v.prefix.as_str()).copied();
        if super::verification::is_stale(v, job) {
            summary.stale += 1;
            continue;
        }
        spoken_for.insert(v.prefix.as_str());
        match v.result {
            VerifyResult::Verified => summary.verified += 1,
            VerifyResult::Mismatch => summary.mismatched += 1,
        }
    }
    summary.unverified_done = jobs
        .iter()
        .filter(|j| j.status == Status::Done && !spoken_for.contains(j.prefix.as_str()))
        .count()
        + other_done;
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_counts_only_while_it_speaks_for_its_prefix() {
        use crate::records::{Verification, VerifyResult};
        let t = |minute: u32| {
            chrono::Utc
                .with_ymd_and_hms(2026, 1, 1, 0, minute, 0)
                .unwrap()
        };
        let job = |prefix: &str, status: Status, updated: u32| PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: None,
            last_updated: t(updated),
        };
        let check = |prefix: &str, result: VerifyResult, at: u32| Verification {
            prefix: prefix.into(),
            result,
            objects_compared: 1,
            missing: 0,
            different: 0,
            checked_at: t(at),
            offending_objects: vec![],
        };
        let jobs = [
            job("ok/", Status::Done, 1),
            job("bad/", Status::Done, 1),
            job("requeued/", Status::Waiting, 9),
            job("recopied/", Status::Done, 9),
            job("never/", Status::Done, 1),
            job("running/", Status::Running, 1),
        ];
        let checks = [
            check("ok/", VerifyResult::Verified, 5),
            check("bad/", VerifyResult::Mismatch, 5),
            check("requeued/", VerifyResult::Verified, 5),
            check("recopied/", VerifyResult::Verified, 5),
            check("gone/", VerifyResult::Verified, 5),
        ];
        assert_eq!(
            verification_summary(&jobs, &checks, 0),
            VerificationSummary {
                verified: 1,
                mismatched: 1,
                stale: 3,
                // recopied/ (its check is stale) and never/.
                unverified_done: 2,
            }
        );
    }
    use chrono::TimeZone;

    #[test]
    fn an_open_pass_counts_only_operations_begun_once_it_was_queued() {
        use crate::analysis::figures::{Digest, Snapshot};
        use crate::records::Pass;
        let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let snapshot = |start: i64, copied: i64| Snapshot {
            op: Digest {
                start_time: Some(t(start)),
                counters: crate::model::Counters {
                    objects_copied_to_sink: copied,
                    ..Default::default()
                },
                ..Digest::default()
            },
            at: t(start + 1),
        };
        let ended = Pass {
            pass: 1,
            kind: "migration".into(),
            ended_at: Some(t(50)),
            objects_copied: 9,
            ..Pass::default()
        };
        let open = Pass {
            pass: 2,
            kind: "delta".into(),
            queued_at: Some(t(100)),
            ..Pass::default()
        };
        let inputs = Inputs {
            latest: HashMap::from([
                ("a/".to_string(), snapshot(120, 2)),
                ("b/".to_string(), snapshot(10, 5)),
            ]),
            passes: vec![ended.clone(), open],
            pass_of: HashMap::from([("a/".to_string(), 2), ("b/".to_string(), 2)]),
            ..Inputs::default()
        };
        let figures = pass_figures(&inputs);
        assert_eq!(
            figures[0], ended,
            "an ended pass keeps its recorded figures"
        );
        assert_eq!(
            figures[1].objects_copied, 2,
            "b/ has not started in pass 2 yet: its pass-1 operation is not counted"
        );
    }

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
    fn counters_unchanged_for_stall_after_are_a_stall() {
        let jobs = [
            job("a/", Status::Running, Some("op-a")),
            job("b/", Status::Running, Some("op-b")),
            job("c/", Status::Running, Some("op-c")),
        ];
        let latest = [
            snap("a/", "op-a", 30, 0, 10, 5),
            snap("b/", "op-b", 30, 0, 10, 6),
            snap("c/", "op-c", 30, 0, 10, 5),
        ];
        // The latest snapshots at or before 10:20 (now - 600 s): a/ had the
        // same counters (stalled), b/ moved since; c/ is the same at 10:25
        // only, too recent to tell (two equal syncs are no stall).
        let base = [
            snap("a/", "op-a", 15, 0, 10, 5),
            snap("b/", "op-b", 15, 0, 10, 5),
        ];
        let report = status_report(
            &jobs,
            &latest,
            &[],
            &base,
            at(30),
            true,
            10,
            &HashMap::new(),
        );
        assert_eq!(report.stalled_total, 1);
        assert_eq!(report.stalled[0].prefix, "a/");
        assert_eq!(report.stalled[0].since, at(15));
        // --limit limits the list, never the count.
        let limited = status_report(&jobs, &latest, &[], &base, at(30), true, 0, &HashMap::new());
        assert!(limited.stalled.is_empty());
        assert_eq!(limited.stalled_total, 1);
        assert!(limited.to_text().contains("Stalled:  1"));
    }

    #[test]
    fn prefixes_out_of_retries_need_action_and_stay_out_of_the_eta() {
        let jobs = [
            job("a/", Status::Running, Some("op-a")),
            job("e/", Status::Error, Some("op-e")),
        ];
        let latest = [
            snap("a/", "op-a", 30, 0, 1000, 400),
            snap("e/", "op-e", 30, 0, 5000, 0),
        ];
        let mut unreadable = 0;
        let mut inputs = Inputs {
            jobs: jobs.to_vec(),
            latest: by_prefix(latest.to_vec(), &mut unreadable),
            ..Inputs::default()
        };
        let params = StatusParams::new(true, 3, 10);
        let rate = 400.0 / 1800.0;
        // Retries left: e/'s 5,000 bytes are still to copy.
        let before = report(&inputs, at(30), &params);
        assert_eq!(before.eta.seconds, Some((600.0 + 5000.0) / rate));
        inputs.final_errors.insert("e/".into());
        let after = report(&inputs, at(30), &params);
        assert_eq!(after.eta.seconds, Some(600.0 / rate));
        assert_eq!(after.needs_action, ["e/"]);
        assert!(after.eta.basis.contains("1 prefixes out of retries"));
        assert!(after
            .to_text()
            .contains("Needs action: 1 prefixes out of retries"));
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
