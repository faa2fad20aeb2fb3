//! Executing a start round: jobs whose start never showed an operation are
//! run again, the pure round (`round::plan_round`) is computed, and its
//! starts go out together, each recorded with its outcome.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::failures::{Failure, Retry};
use super::refusals::StartError;
use super::round::{self, Planned};
use super::sync::ChangeSet;
use super::{CycleSummary, Manager, ManagerError, START_CONCURRENCY};
use crate::model::{PrefixJob, Status};
use crate::transfer;

impl Manager {
    pub(super) async fn start_jobs(
        &mut self,
        summary: &mut CycleSummary,
    ) -> Result<(), ManagerError> {
        let now = Utc::now();
        let mut changes = ChangeSet::default();
        self.restart_overdue_starts(now, summary, &mut changes)
            .await;
        self.apply_to_rows(&changes.updates);
        if let Some(line) = self.halted.as_ref().filter(|_| summary.started_jobs_round) {
            // Starting more would fail the same way: say it once per round.
            tracing::error!("{line}");
        }
        let retry_due: HashSet<String> = self
            .rows
            .iter()
            .filter(|r| r.status == Status::Error)
            .filter(|r| self.retry_of(&r.prefix, r.last_updated, now) == Retry::Due)
            .map(|r| r.prefix.clone())
            .collect();
        let stalled: HashSet<String> = self.stalled.iter().cloned().collect();
        let no_sizes = HashMap::new();
        let template = round::RoundInput {
            rows: &[],
            stalled: &stalled,
            level: self.ramp_level,
            max: self.settings.max_concurrent_jobs as usize,
            allow_new_jobs_when_stalled: self.settings.allow_new_jobs_when_stalled,
            retry_due: &retry_due,
            sizes: &no_sizes,
            halted: self.halted.is_some(),
        };
        // Only as many waiting rows as there are free slots are read, in
        // start order (the store's): the round never holds the queue.
        let slots = match template.halted {
            true => 0,
            false => round::free_slots(&round::RoundInput {
                rows: &self.rows,
                ..template
            }),
        };
        let waiting = match slots {
            0 => Vec::new(),
            n => self.store.next_waiting(n).await?,
        };
        let sizes: HashMap<String, u64> = waiting
            .iter()
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(row, bytes)| (row.prefix.clone(), *bytes))
            .collect();
        let known: HashSet<String> = self.rows.iter().map(|r| r.prefix.clone()).collect();
        self.rows.extend(
            waiting
                .into_iter()
                .map(|(row, _)| row)
                .filter(|row| !known.contains(&row.prefix)),
        );
        let planned = round::plan_round(&round::RoundInput {
            rows: &self.rows,
            sizes: &sizes,
            ..template
        });
        if !planned.is_empty() && !self.checked_buckets {
            self.check_buckets().await?;
        }
        if !planned.is_empty() {
            // Read now, not cached: `sts-requeue` writes them while the
            // manager runs.
            self.manifests = self
                .store
                .read_manifests()
                .await?
                .into_iter()
                .map(|m| (m.prefix, m.location))
                .collect();
        }
        let by_prefix: HashMap<&str, &PrefixJob> =
            self.rows.iter().map(|r| (r.prefix.as_str(), r)).collect();
        let mut free_pool = self.free_pool_jobs();
        let work: Vec<(usize, Planned, PrefixJob, Option<String>)> = planned
            .into_iter()
            .enumerate()
            .filter_map(|(index, step)| {
                let row = by_prefix.get(step.prefix.as_str()).map(|r| (*r).clone())?;
                // Each start of the round gets its own reusable job.
                let pooled = match step.action {
                    round::Action::Resume(_) => None,
                    _ => free_pool.as_mut().and_then(Iterator::next),
                };
                Some((index, step, row, pooled))
            })
            .collect();
        drop(by_prefix);
        drop(free_pool);
        // The round's starts go out together (bounded; the client paces
        // them under STS's quotas), not one round-trip after another. While
        // starts are being refused, one at a time: a permanent cause stops
        // the round at the refusal that proves it.
        use futures_util::StreamExt;
        let mut work = work.into_iter().peekable();
        while work.peek().is_some() {
            if self.halted.is_some() {
                break;
            }
            let batch = if self.streak.active() {
                1
            } else {
                START_CONCURRENCY
            };
            let chunk: Vec<_> = work.by_ref().take(batch).collect();
            let this = &*self;
            let mut outcomes: Vec<(usize, Planned, bool, Result<String, StartError>)> =
                futures_util::stream::iter(chunk)
                    .map(|(index, step, row, pooled)| async move {
                        let (resumed, outcome) = this.execute(&step, &row, pooled.as_deref()).await;
                        (index, step, resumed, outcome)
                    })
                    .buffer_unordered(batch)
                    .collect()
                    .await;
            outcomes.sort_by_key(|(index, ..)| *index);
            for (_, step, resumed, started) in outcomes {
                self.record_start(step.prefix, resumed, started, now, summary, &mut changes);
            }
        }
        self.store.apply(&changes).await?;
        self.apply_to_rows(&changes.updates);
        // Rows still waiting (not started after all, or queued again) go
        // back to the store's side.
        self.rows.retain(|r| r.status != Status::Waiting);
        self.rows.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        Ok(())
    }

    /// Records one start's outcome in the change set (and the summary).
    pub(super) fn record_start(
        &mut self,
        prefix: String,
        resumed: bool,
        started: Result<String, StartError>,
        now: DateTime<Utc>,
        summary: &mut CycleSummary,
        changes: &mut ChangeSet,
    ) {
        let (status, job_name, results) = match started {
            Ok(job_name) => {
                if resumed {
                    summary.resumed.push(prefix.clone());
                } else {
                    summary.started.push(prefix.clone());
                }
                (Status::Running, Some(job_name), None)
            }
            Err(StartError::Refused { job, error }) => {
                // STS will refuse this again until a person acts: the
                // prefix goes to error with the reason in its history.
                let failure = Failure::of_refusal(&prefix, &job, error.code(), &error.detail());
                let results = failure.refusal_json();
                self.record_failure(failure, now);
                summary.errors.push(format!("{prefix}: {error}"));
                (Status::Error, Some(job), Some(results))
            }
            Err(StartError::Transient(e)) => {
                tracing::error!(prefix = %prefix, code = e.code(), "could not start a transfer job (will try again at the next round): {e}");
                summary.errors.push(format!("{prefix}: {e}"));
                return;
            }
        };
        changes.change(&prefix, status, job_name, results, now, now);
    }

    /// Carries out one planned step; whether it was a resume, and the name
    /// the row then follows.
    pub(super) async fn execute(
        &self,
        step: &Planned,
        row: &PrefixJob,
        pooled: Option<&str>,
    ) -> (bool, Result<String, StartError>) {
        if let round::Action::Resume(operation) = &step.action {
            match self.transfer.resume_operation(operation).await {
                Ok(()) => return (true, Ok(operation.clone())),
                Err(e) => {
                    tracing::warn!(prefix = %row.prefix, "could not resume {operation} ({e}); starting it again");
                }
            }
        }
        let started = match pooled {
            Some(job) => self.start_pooled(row, job).await,
            None => self.start_job(row).await,
        };
        (false, started)
    }

    /// Reusable job names not in use, in order (`None` with job reuse off).
    pub(super) fn free_pool_jobs(&self) -> Option<impl Iterator<Item = String> + '_> {
        if self.settings.no_job_reuse {
            return None;
        }
        let dead = self
            .pool_dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (source, sink) = (
            self.settings.source_bucket.clone(),
            self.settings.destination_bucket.clone(),
        );
        let migration = self.settings.migration.clone();
        Some(
            (0..)
                .map(move |k| transfer::pool_job_name(&source, &sink, &migration, k))
                .filter(move |name| !self.pool_busy.contains_key(name) && !dead.contains(name)),
        )
    }

    /// Before the first start: both buckets exist, where the backend can
    /// tell. A missing one is named, with the option that sets it.
    pub(super) async fn check_buckets(&mut self) -> Result<(), ManagerError> {
        for (option, bucket) in [
            ("--source-bucket", &self.settings.source_bucket),
            ("--destination-bucket", &self.settings.destination_bucket),
        ] {
            match self.transfer.bucket_exists(bucket).await {
                Ok(Some(false)) => {
                    return Err(ManagerError::Preflight(format!(
                        "bucket gs://{bucket} ({option}) does not exist: check its name, or create it; \
                         nothing was started"
                    )))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("could not check whether gs://{bucket} exists: {e}"),
            }
        }
        self.checked_buckets = true;
        Ok(())
    }

    /// Rows started more than `start-timeout` ago whose operation has not
    /// appeared (STS skipped the one-time job's date, say) are run again.
    /// Never doubled: if an operation is under way after all, STS refuses
    /// the run and the row takes that operation's name. A job deleted
    /// meanwhile sends its prefix back to `waiting` for a new job.
    pub(super) async fn restart_overdue_starts(
        &self,
        now: chrono::DateTime<Utc>,
        summary: &mut CycleSummary,
        changes: &mut ChangeSet,
    ) {
        let timeout = chrono::Duration::milliseconds((self.settings.start_timeout * 1000.0) as i64);
        for row in &self.rows {
            let Some(job) = row.job_name.as_deref() else {
                continue;
            };
            if row.status != Status::Running
                || !job.starts_with("transferJobs/")
                || now - row.last_updated < timeout
            {
                continue;
            }
            // A reusable job may carry another prefix by now: never run it
            // again for this one; the prefix is queued for a new start.
            let reusable = transfer::is_pool_job(job);
            if reusable {
                tracing::warn!(prefix = %row.prefix, "{job} has shown no operation for this prefix since {}; queueing it again", row.last_updated);
            } else {
                tracing::warn!(prefix = %row.prefix, "{job} has shown no operation since {}; running it again", row.last_updated);
            }
            let restarted = if reusable {
                Ok(None)
            } else {
                self.run_again(job, &row.prefix).await
            };
            let (status, job_name) = match restarted {
                Ok(Some(name)) => (Status::Running, Some(name)),
                Ok(None) => (Status::Waiting, None),
                Err(e) => {
                    tracing::error!(prefix = %row.prefix, "could not run {job} again: {e}");
                    summary.errors.push(format!("{}: {e}", row.prefix));
                    continue;
                }
            };
            summary.restarted.push(row.prefix.clone());
            changes.change(&row.prefix, status, job_name, None, now, now);
        }
    }
}
