//! What the manager remembers of each prefix's outcomes between cycles:
//! failures (logged once, counted per prefix, fed to the halt streak),
//! retries due, and stalled operations.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::failures::{self, permanent_cause, retry_state, Failure, Retry};
use super::stall::{stalled_prefixes, RunningSnapshot};
use super::sync;
use super::{Manager, ManagerError};
use crate::model::{PrefixJob, Status};

impl Manager {
    /// At start-up: the failures of prefixes already in `error`, and how many
    /// times each has failed since it was queued.
    pub(super) async fn load_failures(
        &mut self,
        rows: &[PrefixJob],
        latest: &sync::LatestOps,
    ) -> Result<(), ManagerError> {
        let counts = self.store.failure_counts().await?;
        for row in rows.iter().filter(|r| r.status == Status::Error) {
            let attempts = counts.get(&row.prefix).copied().unwrap_or(0).max(1);
            self.attempts.insert(row.prefix.clone(), attempts);
            if let Some(op) = latest.get(&row.prefix) {
                let mut failure = Failure::of_operation(&row.prefix, op);
                failure.attempts = attempts;
                failure.exhausted =
                    self.retry_of(&row.prefix, row.last_updated, Utc::now()) == Retry::Exhausted;
                self.failures.insert(row.prefix.clone(), failure);
            }
        }
        Ok(())
    }

    /// Reacts to a prefix's new status: a failure is logged once, counted,
    /// and fed to the streak; a success ends the streak.
    pub(super) fn note_transition(
        &mut self,
        prefix: &str,
        status: Status,
        previous: Option<Status>,
        latest: &sync::LatestOps,
        now: DateTime<Utc>,
    ) {
        match status {
            Status::Error => {
                // Only a new failure: a row already in error that takes
                // another name is the same failure seen again.
                let Some(op) = latest
                    .get(prefix)
                    .filter(|_| previous != Some(Status::Error))
                else {
                    return;
                };
                let failure = Failure::of_operation(prefix, op);
                self.record_failure(failure, now);
            }
            Status::Done => {
                self.failures.remove(prefix);
                self.attempts.remove(prefix);
                self.streak.record(prefix, None);
            }
            _ => {}
        }
    }

    /// Counts a failure, logs it once at ERROR, and stops new starts when
    /// the same permanent cause has failed several prefixes in a row.
    pub(super) fn record_failure(&mut self, mut failure: Failure, now: DateTime<Utc>) {
        let attempts = self.attempts.get(&failure.prefix).copied().unwrap_or(0) + 1;
        self.attempts.insert(failure.prefix.clone(), attempts);
        failure.attempts = attempts;
        let retry = self.retry_of(&failure.prefix, now, now);
        failure.exhausted = retry == Retry::Exhausted;
        let next = match retry {
            Retry::Exhausted if self.settings.no_retry_on_job_error => {
                "not retried (--no-retry-on-job-error); requeue it with sts-requeue".to_string()
            }
            Retry::Exhausted => format!(
                "out of retries (--max-retries {}); it stays in error until requeued with sts-requeue",
                self.settings.max_retries
            ),
            Retry::Due => "retried at the next job round".to_string(),
            Retry::Later(at) => format!("retried after {}", at.to_rfc3339()),
        };
        tracing::error!(
            prefix = %failure.prefix,
            operation = failure.operation.as_deref().unwrap_or(""),
            attempt = attempts,
            "transfer of prefix {:?} failed (attempt {attempts}): {}; {next}",
            failure.prefix,
            failure.describe(),
        );
        let cause = permanent_cause(&failure);
        let prefix = failure.prefix.clone();
        self.failures.insert(prefix.clone(), failure);
        if let Some((cause, count)) = self.streak.record(&prefix, cause) {
            if self.halted.is_none() {
                let line = failures::halt_message(
                    &cause,
                    count,
                    self.service_account.as_deref(),
                    &self.settings.source_bucket,
                    &self.settings.destination_bucket,
                );
                tracing::error!("{line}");
                self.halted = Some(line);
            }
        }
    }

    /// Whether the prefix in `error` since `failed_at` is started again.
    pub(super) fn retry_of(
        &self,
        prefix: &str,
        failed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Retry {
        retry_state(
            self.attempts.get(prefix).copied().unwrap_or(1),
            self.settings.max_retries,
            !self.settings.no_retry_on_job_error,
            failed_at,
            now,
            self.settings.job_interval,
        )
    }

    pub(super) fn judge_stalls(&mut self, rows: &[PrefixJob], latest: &sync::LatestOps) {
        let now = Utc::now();
        let mut current: HashMap<String, RunningSnapshot> = rows
            .iter()
            .filter(|r| r.status == Status::Running)
            .filter_map(|r| {
                latest.get(&r.prefix).map(|op| {
                    (
                        r.prefix.clone(),
                        RunningSnapshot {
                            operation: op.name.clone(),
                            counters: op.counters.clone(),
                            changed_at: now,
                        },
                    )
                })
            })
            .collect();
        let stall_after =
            chrono::Duration::milliseconds((self.settings.stall_after * 1000.0) as i64);
        let stalled = stalled_prefixes(&self.previous_running, &mut current, now, stall_after);
        // Said once when a prefix stalls, not at every sync while it stays so.
        for prefix in stalled.iter().filter(|p| !self.stalled.contains(p)) {
            tracing::warn!(
                prefix = %prefix,
                "transfer operation is stalled: no counter moved for {} s (--stall-after)",
                stall_after.num_seconds()
            );
        }
        self.stalled = stalled;
        self.previous_running = current;
    }
}
