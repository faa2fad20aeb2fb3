//! What went wrong with a prefix, whether it is worth trying again, and when
//! to stop starting prefixes altogether. Pure: unit-tested here.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::TransferOperation;

/// One error code of a failure: how often, and one object it hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeCount {
    pub code: String,
    pub count: i64,
    /// A sample object (`gs://bucket/name`) and what STS said about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

/// A prefix's latest failure: its operation failed, or STS refused to start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub prefix: String,
    /// The failed operation, or the job STS refused to create or run.
    pub operation: Option<String>,
    pub codes: Vec<CodeCount>,
    /// Failed attempts since the prefix was last (re)queued.
    pub attempts: u32,
    /// Set when the prefix will not be started again automatically.
    pub exhausted: bool,
}

impl Failure {
    /// From a FAILED operation's errorBreakdowns.
    pub fn of_operation(prefix: &str, op: &TransferOperation) -> Failure {
        let mut codes: Vec<CodeCount> = op
            .error_breakdowns
            .iter()
            .map(|e| CodeCount {
                code: e.error_code.clone(),
                count: e.error_count,
                sample: e.error_log_entries.first().map(|entry| {
                    match entry.error_details.first() {
                        Some(detail) => format!("{} ({detail})", entry.url),
                        None => entry.url.clone(),
                    }
                }),
            })
            .collect();
        codes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
        if codes.is_empty() {
            codes.push(CodeCount {
                code: "UNKNOWN".into(),
                count: op.counters.objects_from_source_failed,
                sample: None,
            });
        }
        Failure {
            prefix: prefix.to_string(),
            operation: Some(op.name.clone()),
            codes,
            attempts: 0,
            exhausted: false,
        }
    }

    /// From a start STS refused with `code` and `message`.
    pub fn of_refusal(prefix: &str, job: &str, code: &str, message: &str) -> Failure {
        Failure {
            prefix: prefix.to_string(),
            operation: Some(job.to_string()),
            codes: vec![CodeCount {
                code: code.to_string(),
                count: 1,
                sample: Some(message.to_string()),
            }],
            attempts: 0,
            exhausted: false,
        }
    }

    /// `"prefix" CODE/CODE`: the failure in a few words, for lists.
    pub fn brief(&self) -> String {
        let codes: Vec<&str> = self.codes.iter().map(|c| c.code.as_str()).collect();
        format!("{:?} {}", self.prefix, codes.join("/"))
    }

    /// `CODE xCOUNT (e.g. gs://b/o: detail)` for each code: a log line's tail.
    pub fn describe(&self) -> String {
        self.codes
            .iter()
            .map(|c| match &c.sample {
                Some(sample) => format!("{} x{} (e.g. {sample})", c.code, c.count),
                None => format!("{} x{}", c.code, c.count),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The history row's `operation_results` for a refused start: the
    /// reason as JSON, shaped like an operation's errorBreakdowns.
    pub fn refusal_json(&self) -> String {
        let breakdowns: Vec<serde_json::Value> = self
            .codes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "errorCode": c.code,
                    "errorCount": c.count.to_string(),
                    "errorLogEntries": [{ "url": "", "errorDetails": [c.sample.clone().unwrap_or_default()] }],
                })
            })
            .collect();
        serde_json::json!({
            "name": self.operation,
            "status": "FAILED",
            "startRefused": true,
            "errorBreakdowns": breakdowns,
        })
        .to_string()
    }
}

/// Codes that say the same thing will happen on every try until a person
/// changes something (a grant, a bucket name, the request).
const PERMANENT_CODES: [&str; 4] = [
    "PERMISSION_DENIED",
    "INVALID_ARGUMENT",
    "FAILED_PRECONDITION",
    "NOT_FOUND",
];

/// The permanent cause behind a failure, if it has one: its dominant code
/// and the bucket it names. Object-level NOT_FOUND (an object deleted while
/// copied) is not permanent; a whole bucket NOT_FOUND is.
pub fn permanent_cause(failure: &Failure) -> Option<Cause> {
    let top = failure.codes.first()?;
    if !PERMANENT_CODES.contains(&top.code.as_str()) {
        return None;
    }
    let sample = top.sample.as_deref().unwrap_or_default();
    let bucket = sample
        .strip_prefix("gs://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(bucket, object)| (bucket.to_string(), object.split(' ').next().unwrap_or("")));
    if top.code == "NOT_FOUND" {
        // `gs://bucket/` (no object): the bucket itself is missing.
        if let Some((_, object)) = &bucket {
            if !object.is_empty() {
                return None;
            }
        }
    }
    Some(Cause {
        code: top.code.clone(),
        bucket: bucket.map(|(b, _)| b),
        message: sample.to_string(),
    })
}

/// A permanent cause: the same one several times in a row stops new starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub code: String,
    pub bucket: Option<String>,
    /// What STS said last (for the halt line).
    pub message: String,
}

impl Cause {
    fn same_as(&self, other: &Cause) -> bool {
        self.code == other.code && self.bucket == other.bucket
    }
}

/// Prefixes that failed in a row with the same permanent cause. Prefixes,
/// not attempts: one stubborn prefix retried is one prefix, never "3 in a
/// row".
#[derive(Debug, Clone, Default)]
pub struct Streak {
    cause: Option<Cause>,
    prefixes: Vec<String>,
}

/// After this many prefixes in a row fail for the same permanent cause, the
/// manager starts no more.
pub const HALT_AFTER: u32 = 3;

impl Streak {
    /// Whether the last outcome was a permanent failure.
    pub fn active(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Records one outcome of `prefix` (a permanent cause, or `None` for a
    /// success or a failure worth retrying); returns the cause and the count
    /// of distinct prefixes once the streak reaches [`HALT_AFTER`].
    pub fn record(&mut self, prefix: &str, outcome: Option<Cause>) -> Option<(Cause, u32)> {
        match outcome {
            None => {
                self.cause = None;
                self.prefixes.clear();
            }
            Some(cause) => {
                if !self.cause.as_ref().is_some_and(|c| c.same_as(&cause)) {
                    self.prefixes.clear();
                }
                if !self.prefixes.iter().any(|p| p == prefix) {
                    self.prefixes.push(prefix.to_string());
                }
                self.cause = Some(cause);
            }
        }
        let count = u32::try_from(self.prefixes.len()).unwrap_or(u32::MAX);
        self.cause
            .clone()
            .filter(|_| count >= HALT_AFTER)
            .map(|c| (c, count))
    }
}

/// The one line that says what is wrong and what to do.
pub fn halt_message(
    cause: &Cause,
    count: u32,
    service_account: Option<&str>,
    source_bucket: &str,
    destination_bucket: &str,
) -> String {
    let account = service_account
        .map(|a| format!("the Storage Transfer service account {a}"))
        .unwrap_or_else(|| {
            "the project's Storage Transfer service account (see googleServiceAccounts.get)".into()
        });
    let role_of = |bucket: &str| {
        if bucket == destination_bucket {
            "destination"
        } else {
            "source"
        }
    };
    let fix = match (cause.code.as_str(), cause.bucket.as_deref()) {
        ("PERMISSION_DENIED", Some(bucket)) if bucket == destination_bucket => format!(
            "grant {account} roles/storage.objectAdmin and roles/storage.legacyBucketWriter on gs://{bucket}"
        ),
        ("PERMISSION_DENIED", Some(bucket)) => format!(
            "grant {account} roles/storage.objectViewer and roles/storage.legacyBucketReader on gs://{bucket}"
        ),
        ("PERMISSION_DENIED", None) => format!(
            "grant {account} roles/storage.objectViewer and roles/storage.legacyBucketReader on gs://{source_bucket}, \
             and roles/storage.objectAdmin and roles/storage.legacyBucketWriter on gs://{destination_bucket}; \
             the caller needs roles/storagetransfer.user"
        ),
        ("NOT_FOUND", Some(bucket)) => format!(
            "the {} bucket gs://{bucket} does not exist: check --{}-bucket",
            role_of(bucket),
            role_of(bucket)
        ),
        ("FAILED_PRECONDITION", _) => format!(
            "STS cannot see a bucket: check that gs://{source_bucket} and gs://{destination_bucket} exist and that \
             {account} has storage.buckets.get on both (roles/storage.legacyBucketReader on the source, \
             roles/storage.legacyBucketWriter on the destination)"
        ),
        _ => "correct the request or the options it comes from".to_string(),
    };
    format!(
        "{count} prefixes in a row failed with {}{}: {} -- to fix: {fix}. No new prefix is started; \
         fix it, then start the manager again (sts-requeue puts the failed prefixes back)",
        cause.code,
        cause
            .bucket
            .as_deref()
            .map(|b| format!(" on gs://{b}"))
            .unwrap_or_default(),
        cause.message,
    )
}

/// Whether an `error` prefix is started again now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retry {
    Due,
    /// Not before this time.
    Later(DateTime<Utc>),
    /// Out of retries (or retries are off): stays `error` until requeued.
    Exhausted,
}

/// Attempt `n` (after `n` failures) waits 2^(n-1) job intervals from the
/// failure, so the waits go 1, 2, 4, ... intervals; half an interval of
/// slack lets a round that comes a moment early still take it.
pub fn retry_state(
    failures: u32,
    max_retries: u32,
    retry_enabled: bool,
    failed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    job_interval: f64,
) -> Retry {
    if !retry_enabled || failures > max_retries {
        return Retry::Exhausted;
    }
    let intervals = 2f64.powi(failures.saturating_sub(1).min(30) as i32);
    let wait = ((intervals - 0.5).max(0.0) * job_interval).min(crate::model::MAX_SECONDS);
    let due = failed_at + chrono::Duration::milliseconds((wait * 1000.0) as i64);
    if now >= due {
        Retry::Due
    } else {
        Retry::Later(due)
    }
}

/// The prefixes in `error` that no manager will start again: failed more
/// times since they were queued (`failures`, from the store's
/// `failure_counts`) than `max_retries` allows, or any when retries are
/// off. Such a migration can only move on after `sts-requeue`, so a
/// sensor waiting on it says so instead of waiting forever.
pub fn final_errors(
    rows: &[crate::model::PrefixJob],
    failures: &std::collections::HashMap<String, u32>,
    max_retries: u32,
    retry_enabled: bool,
) -> Vec<String> {
    rows.iter()
        .filter(|r| r.status == crate::model::Status::Error)
        .filter(|r| {
            // As the manager counts: an error row has failed at least once.
            let attempts = failures.get(&r.prefix).copied().unwrap_or(0).max(1);
            !retry_enabled || attempts > max_retries
        })
        .map(|r| r.prefix.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ErrorLogEntry, ErrorSummary, OperationStatus, TransferSpec};
    use chrono::TimeZone;

    fn failed_op(codes: &[(&str, i64, &str)]) -> TransferOperation {
        TransferOperation {
            name: "transferOperations/op-1".into(),
            project_id: "p".into(),
            transfer_spec: TransferSpec::default(),
            start_time: None,
            end_time: None,
            status: OperationStatus::Failed,
            counters: Default::default(),
            error_breakdowns: codes
                .iter()
                .map(|(code, count, url)| ErrorSummary {
                    error_code: code.to_string(),
                    error_count: *count,
                    error_log_entries: vec![ErrorLogEntry {
                        url: url.to_string(),
                        error_details: vec!["denied".into()],
                    }],
                })
                .collect(),
            transfer_job_name: "transferJobs/j".into(),
            logging_config: None,
        }
    }

    #[test]
    fn an_operation_failure_lists_codes_by_count_with_a_sample() {
        let op = failed_op(&[
            ("NOT_FOUND", 1, "gs://src/a/x"),
            ("PERMISSION_DENIED", 7, "gs://src/a/y"),
        ]);
        let f = Failure::of_operation("a/", &op);
        assert_eq!(f.codes[0].code, "PERMISSION_DENIED");
        assert_eq!(f.codes[0].count, 7);
        assert_eq!(
            f.describe(),
            "PERMISSION_DENIED x7 (e.g. gs://src/a/y (denied)); NOT_FOUND x1 (e.g. gs://src/a/x (denied))"
        );
        let cause = permanent_cause(&f).unwrap();
        assert_eq!(
            (cause.code.as_str(), cause.bucket.as_deref()),
            ("PERMISSION_DENIED", Some("src"))
        );
    }

    #[test]
    fn object_not_found_is_not_permanent_but_a_missing_bucket_is() {
        let object =
            Failure::of_operation("a/", &failed_op(&[("NOT_FOUND", 2, "gs://src/a/gone")]));
        assert_eq!(permanent_cause(&object), None);
        let bucket = Failure::of_operation("a/", &failed_op(&[("NOT_FOUND", 1, "gs://typo/")]));
        assert_eq!(
            permanent_cause(&bucket).unwrap().bucket.as_deref(),
            Some("typo")
        );
        let transient =
            Failure::of_operation("a/", &failed_op(&[("UNAVAILABLE", 3, "gs://s/a/b")]));
        assert_eq!(permanent_cause(&transient), None);
        let refused = Failure::of_refusal("a/", "transferJobs/j", "INVALID_ARGUMENT", "bad spec");
        assert_eq!(permanent_cause(&refused).unwrap().code, "INVALID_ARGUMENT");
    }

    #[test]
    fn the_same_cause_three_times_in_a_row_halts() {
        let cause = |code: &str, bucket: &str| Cause {
            code: code.into(),
            bucket: Some(bucket.into()),
            message: "m".into(),
        };
        let mut streak = Streak::default();
        let denied = || Some(cause("PERMISSION_DENIED", "s"));
        assert!(streak.record("a/", denied()).is_none());
        assert!(streak.record("b/", denied()).is_none());
        // A success in between starts the count again.
        assert!(streak.record("c/", None).is_none());
        assert!(streak.record("a/", denied()).is_none());
        // One stubborn prefix retried is one prefix, however often it fails.
        for _ in 0..5 {
            assert!(streak.record("a/", denied()).is_none());
        }
        assert!(streak.record("b/", denied()).is_none());
        // So does another cause.
        assert!(streak.record("a/", Some(cause("NOT_FOUND", "s"))).is_none());
        assert!(streak.record("b/", Some(cause("NOT_FOUND", "s"))).is_none());
        let (c, n) = streak.record("c/", Some(cause("NOT_FOUND", "s"))).unwrap();
        assert_eq!((c.code.as_str(), n), ("NOT_FOUND", 3));
    }

    #[test]
    fn the_halt_line_names_the_bucket_and_the_account() {
        let cause = Cause {
            code: "PERMISSION_DENIED".into(),
            bucket: Some("dst".into()),
            message: "gs://dst/a (denied)".into(),
        };
        let line = halt_message(&cause, 3, Some("sa@x"), "src", "dst");
        assert!(line.contains("gs://dst") && line.contains("sa@x"), "{line}");
        assert!(line.contains("objectAdmin"), "{line}");
        let missing = Cause {
            code: "NOT_FOUND".into(),
            bucket: Some("src".into()),
            message: String::new(),
        };
        assert!(halt_message(&missing, 3, None, "src", "dst").contains("--source-bucket"));
    }

    #[test]
    fn retries_back_off_in_job_intervals_and_run_out() {
        let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        // First failure: the next round (half an interval of slack).
        assert_eq!(
            retry_state(1, 3, true, t0, at(5), 100.0),
            Retry::Later(at(50))
        );
        assert_eq!(retry_state(1, 3, true, t0, at(50), 100.0), Retry::Due);
        // Second: 2 intervals; third: 4.
        assert_eq!(
            retry_state(2, 3, true, t0, at(100), 100.0),
            Retry::Later(at(150))
        );
        assert_eq!(retry_state(3, 3, true, t0, at(350), 100.0), Retry::Due);
        // Past --max-retries, or with retries off, never.
        assert_eq!(
            retry_state(4, 3, true, t0, at(1_000_000), 100.0),
            Retry::Exhausted
        );
        assert_eq!(
            retry_state(1, 3, false, t0, at(1_000_000), 100.0),
            Retry::Exhausted
        );
        assert_eq!(
            retry_state(1, 0, true, t0, at(1_000_000), 100.0),
            Retry::Exhausted
        );
        // Huge counts do not overflow.
        assert!(matches!(
            retry_state(u32::MAX - 1, u32::MAX, true, t0, t0, 1e9),
            Retry::Later(_)
        ));
    }

    #[test]
    fn final_errors_are_those_out_of_retries() {
        use crate::model::{PrefixJob, Status};
        let row = |prefix: &str, status| PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: None,
            last_updated: Utc::now(),
        };
        let rows = [
            row("a/", Status::Error),
            row("b/", Status::Error),
            row("c/", Status::Error),
            row("d/", Status::Waiting),
        ];
        let failures = std::collections::HashMap::from([
            ("a/".to_string(), 4),
            ("b/".to_string(), 3),
            ("d/".to_string(), 9),
        ]);
        assert_eq!(final_errors(&rows, &failures, 3, true), ["a/"]);
        assert_eq!(final_errors(&rows, &failures, 0, true), ["a/", "b/", "c/"]);
        assert_eq!(final_errors(&rows, &failures, 3, false), ["a/", "b/", "c/"]);
    }
}
