//! One iteration of the manager: the sync step (read the rows, list what
//! can have changed, decide with the pure `sync`, write the changes in
//! chunks) and the order of the steps (sync, start round, heartbeat).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::summary::{heartbeat_points, progress_of};
use super::sync::{self, ChangeSet, JobUpdate};
use super::{
    round, CycleSummary, Manager, ManagerError, BACKGROUND_DROP, HEARTBEAT_EVERY, WRITE_CHUNK,
};
use crate::model::{PrefixJob, Status};
use crate::store::StoreError;

/// The outcome of one chunk's write; a write task that panicked or was
/// cancelled is a store error, not a crash of the manager.
pub(super) async fn finish_write(
    write: tokio::task::JoinHandle<Result<(), StoreError>>,
) -> Result<(), ManagerError> {
    match write.await {
        Ok(result) => Ok(result?),
        Err(e) => Err(StoreError::WriteTask(e.to_string()).into()),
    }
}

impl Manager {
    /// Applies updates to the rows in memory, keeping the counts per status.
    pub(super) fn apply_to_rows(&mut self, updates: &[JobUpdate]) {
        let by_prefix: HashMap<&str, &JobUpdate> =
            updates.iter().map(|u| (u.prefix.as_str(), u)).collect();
        for row in self.rows.iter_mut() {
            if let Some(update) = by_prefix.get(row.prefix.as_str()) {
                self.counts.moved(row.status, update.status);
                row.status = update.status;
                row.job_name = update.job_name.clone();
                row.last_updated = update.last_updated;
            }
        }
    }
}

pub(super) fn apply_updates(rows: &mut [PrefixJob], updates: &[JobUpdate]) {
    let by_prefix: HashMap<&str, &JobUpdate> =
        updates.iter().map(|u| (u.prefix.as_str(), u)).collect();
    for row in rows.iter_mut() {
        if let Some(update) = by_prefix.get(row.prefix.as_str()) {
            row.status = update.status;
            row.job_name = update.job_name.clone();
            row.last_updated = update.last_updated;
        }
    }
}

impl Manager {
    /// One loop iteration (SPEC 4 steps 1-3), honouring the intervals,
    /// without the lease (the callers in `run.rs` hold it).
    pub(super) async fn step(&mut self) -> Result<CycleSummary, ManagerError> {
        let due = |last: Option<Instant>, every: f64| {
            last.is_none_or(|t| t.elapsed().as_secs_f64() >= every)
        };
        let jobs_due = due(self.last_job_round, self.settings.job_interval);
        let sync_due = jobs_due || due(self.last_sync, self.settings.metrics_interval);
        let mut summary = CycleSummary::default();
        if sync_due {
            self.sync_state(&mut summary, true).await?;
        }
        if jobs_due {
            // The ramp grows at job intervals only, and never falls.
            self.last_job_round = Some(Instant::now());
            self.ramp_level =
                round::next_level(self.ramp_level, self.settings.max_concurrent_jobs as usize);
            summary.started_jobs_round = true;
        }
        if sync_due {
            // Slots freed since the last sync are taken at once, up to the level.
            self.start_jobs(&mut summary).await?;
        }
        if jobs_due {
            // Moments after the first sync: too soon to judge stalls again.
            self.sync_state(&mut summary, false).await?;
        }
        self.finish_summary(&mut summary);
        // A store that keeps or aggregates the figures every view reports
        // (README, "The figures"): progress is their sum, not the raw
        // counters added up (which count a re-run's objects twice); read
        // at the store's pace (BigQuery scans its history for them), and
        // when the migration has ended, so the last word is exact.
        if !summary.done {
            self.figures_at_end = false;
        }
        let wanted = figures_wanted(
            self.last_figures.map(|t| t.elapsed()),
            self.store.figures_every(),
            summary.done,
            self.figures_at_end,
        );
        if sync_due && wanted {
            self.last_figures = Some(Instant::now());
            self.figures_at_end = summary.done;
            match self.store.figures_total().await {
                Ok(Some(figures)) => {
                    self.has_figures = true;
                    self.progress = super::Progress::of(&figures);
                    summary.progress = self.progress.clone();
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "reading the migration's figures failed (going on; progress stays as last \
                     read, or the operations' raw counters, and the read is tried again in {} s; \
                     sts-status reads the same figures and says more): {e}",
                    self.store.figures_every().as_secs()
                ),
            }
        }
        // Cloud Monitoring takes one point per time series every 5 s at
        // most: one every 10 s, whatever the intervals.
        let heartbeat_due = self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY);
        if self.settings.publish_heartbeat && heartbeat_due {
            self.last_heartbeat = Some(Instant::now());
            let points = heartbeat_points(&summary.counts, summary.stalled.len());
            match &self.heartbeat {
                Some(sink) => {
                    if let Err(e) = sink.publish(&points).await {
                        tracing::warn!("could not publish the heartbeat (going on): {e}");
                        summary.errors.push(format!("heartbeat: {e}"));
                    }
                }
                None => {
                    for (metric, value) in points {
                        tracing::info!(metric, value, "heartbeat");
                    }
                }
            }
        }
        Ok(summary)
    }

    pub(super) async fn sync_state(
        &mut self,
        summary: &mut CycleSummary,
        judge_stalls: bool,
    ) -> Result<(), ManagerError> {
        let clock = Instant::now();
        let full = self
            .last_reconcile
            .is_none_or(|t| t.elapsed().as_secs_f64() >= self.settings.reconcile_interval);
        // Finished prefixes cost nothing per cycle, and waiting ones nothing
        // in a steady sync: it reads the rows in flight or failed (and the
        // waiting rows its listing names); a full reconcile reads every
        // unfinished row. The counts per status are one aggregate, read at
        // a step's first sync and then kept by every change made.
        let mut rows = if full {
            self.store.read_unfinished().await?.0
        } else {
            self.store.read_active().await?
        };
        if judge_stalls {
            self.counts = self.store.count_by_status().await?;
        }
        let read_s = clock.elapsed().as_secs_f64();
        let (latest, finished_elsewhere) = if full {
            self.list_everything(&rows).await?
        } else {
            (self.list_in_flight(&mut rows).await?, None)
        };
        let list_s = clock.elapsed().as_secs_f64() - read_s;
        let now = Utc::now();
        let mut outcome = sync::sync(&rows, latest);
        for unknown in &outcome.unknown {
            tracing::warn!(
                prefix = %unknown.prefix,
                operation = %unknown.operation,
                "unknown transfer operation status '{}': keeping the prefix's status",
                unknown.status
            );
        }
        let mut adopted = ChangeSet::default();
        if full {
            // Jobs created for a prefix whose operation has not appeared yet
            // (another tool's start, or ours before a crash): follow them
            // instead of starting a second one.
            adopted = self
                .adopt_started_jobs(&rows, &outcome.decisions, now)
                .await?;
        }
        if self.last_reconcile.is_none() {
            // Before this sync's own failures are written and counted.
            self.load_failures(&rows, &outcome.latest).await?;
        }
        let decide_s = clock.elapsed().as_secs_f64() - read_s - list_s;
        self.write_in_chunks(&rows, &outcome, &adopted, now).await?;
        let write_s = clock.elapsed().as_secs_f64() - read_s - list_s - decide_s;
        let updates = outcome.decisions.iter().filter(|d| d.update).count() + adopted.updates.len();
        let recorded =
            outcome.decisions.iter().filter(|d| d.record).count() + adopted.history.len();

        // The rows take their new status; each transition is noted in order.
        let mut became: Vec<(usize, Status, Status)> = Vec::new();
        for decision in outcome.decisions.iter().filter(|d| d.update) {
            let Some(row) = rows.get_mut(decision.row) else {
                continue;
            };
            became.push((decision.row, decision.status, row.status));
            row.status = decision.status;
            row.job_name = outcome.latest.get(&row.prefix).map(|op| op.name.clone());
            row.last_updated = now;
        }
        if !adopted.updates.is_empty() {
            let index: HashMap<&str, usize> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.prefix.as_str(), i))
                .collect();
            for update in &adopted.updates {
                if let Some((&i, row)) = index
                    .get(update.prefix.as_str())
                    .and_then(|i| Some((i, rows.get(*i)?)))
                {
                    became.push((i, update.status, row.status));
                }
            }
        }
        apply_updates(&mut rows, &adopted.updates);
        for (index, status, previous) in became {
            self.counts.moved(previous, status);
            if let Some(prefix) = rows.get(index).map(|r| r.prefix.clone()) {
                self.note_transition(&prefix, status, Some(previous), &outcome.latest, now);
            }
        }
        self.pool_busy = rows
            .iter()
            .filter(|r| matches!(r.status, Status::Running | Status::Paused))
            .filter_map(|r| {
                let job = match outcome.latest.get(&r.prefix) {
                    Some(op) => op.transfer_job_name.clone(),
                    None => r
                        .job_name
                        .clone()
                        .filter(|n| n.starts_with("transferJobs/"))?,
                };
                Some((job, r.prefix.clone()))
            })
            .collect();
        if judge_stalls {
            self.judge_stalls(&rows, &outcome.latest);
        }
        self.collect_failed_objects(&outcome.latest, summary).await;
        // Progress: what finished prefixes copied (counted in full at a
        // reconcile, then as each finishes) plus what is in flight.
        if let Some(elsewhere) = finished_elsewhere {
            // A full reconcile counts the prefixes finished before afresh.
            self.finished = elsewhere;
        }
        let mut manifest_runs_done = Vec::new();
        for row in rows.iter().filter(|r| r.status == Status::Done) {
            if let Some(op) = outcome.latest.get(&row.prefix) {
                self.finished += &op.counters;
                if let Some(location) = op.transfer_spec.manifest() {
                    manifest_runs_done.push((row.prefix.clone(), Some(location.to_string())));
                }
            }
        }
        // A manifest run that succeeded has done its work: its manifest no
        // longer applies to the prefix (a newer one, at another location,
        // stays). Left behind by a failed write, it is harmless: a done
        // prefix starts again only when requeued, which replaces or clears it.
        if let Err(e) = self.store.clear_manifests(&manifest_runs_done).await {
            tracing::warn!("clearing the manifests of finished manifest runs: {e}");
        }
        let mut counters = self.finished.clone();
        for row in rows.iter().filter(|r| r.status != Status::Done) {
            if let Some(op) = outcome.latest.get(&row.prefix) {
                counters += &op.counters;
            }
        }
        if !self.has_figures {
            // Only until the store's figures are read (a store without
            // them: always).
            self.progress = progress_of(std::iter::once(&counters));
        }
        // Prefixes done or waiting leave memory; the counts remember them.
        rows.retain(|r| !matches!(r.status, Status::Done | Status::Waiting));
        // A prefix no longer in flight or failed (done, or requeued: waiting
        // again) starts its retry count afresh.
        let active: HashSet<&str> = rows.iter().map(|r| r.prefix.as_str()).collect();
        self.attempts
            .retain(|prefix, _| active.contains(prefix.as_str()));
        self.failures
            .retain(|prefix, _| active.contains(prefix.as_str()));
        drop(active);
        self.rows = rows;
        self.last_sync = Some(Instant::now());
        if full {
            self.last_reconcile = Some(Instant::now());
            summary.reconciled = true;
        }
        summary.synced = true;
        // Where a slow sync spends its time, for whoever tunes a big run.
        tracing::debug!(
            full,
            unfinished = self.rows.len(),
            updates,
            history = recorded,
            "sync took {:.3} s: read {read_s:.3} s, list {list_s:.3} s, decide {decide_s:.3} s, \
             write {write_s:.3} s, rest {:.3} s",
            clock.elapsed().as_secs_f64(),
            clock.elapsed().as_secs_f64() - read_s - list_s - decide_s - write_s,
        );
        if outcome.latest.len() >= BACKGROUND_DROP {
            // A hundred thousand boxed operations take a tenth of a second
            // to free: done on a thread of their own, off the cycle.
            let latest = std::mem::take(&mut outcome.latest);
            std::thread::spawn(move || drop(latest));
        }
        Ok(())
    }

    /// Writes a sync's changes in chunks of [`WRITE_CHUNK`] decided
    /// prefixes (rows are in prefix order): each chunk's status updates and
    /// history rows, their operations' JSON made just before, in one
    /// transaction. Memory stays bounded by two chunks, and a crash between
    /// chunks loses nothing: the next sync finds the prefixes not yet
    /// written changed still. Adopted jobs go with the last chunk. While
    /// one chunk is written (a task of its own), the next is made: the
    /// JSON of 20,000 operations on one core, the store's work on another.
    pub(super) async fn write_in_chunks(
        &self,
        rows: &[PrefixJob],
        outcome: &sync::SyncOutcome,
        adopted: &ChangeSet,
        now: DateTime<Utc>,
    ) -> Result<(), ManagerError> {
        let buckets = (
            self.settings.source_bucket.as_str(),
            self.settings.destination_bucket.as_str(),
        );
        let mut chunks = outcome.decisions.chunks(WRITE_CHUNK).peekable();
        if chunks.peek().is_none() {
            return Ok(self.store.apply(adopted).await?);
        }
        let mut writing: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
        while let Some(decisions) = chunks.next() {
            let mut chunk = sync::changes_of(rows, &outcome.latest, buckets, decisions, now);
            if chunks.peek().is_none() {
                // One update per prefix (the adoption wins): by a set, as
                // a chunk holds 20,000.
                let adopted_prefixes: HashSet<&str> =
                    adopted.updates.iter().map(|u| u.prefix.as_str()).collect();
                chunk
                    .updates
                    .retain(|u| !adopted_prefixes.contains(u.prefix.as_str()));
                chunk.updates.extend(adopted.updates.iter().cloned());
                chunk.history.extend(adopted.history.iter().cloned());
            }
            if let Some(previous) = writing.take() {
                finish_write(previous).await?;
            }
            let store = self.store.clone();
            writing = Some(tokio::spawn(async move { store.apply(&chunk).await }));
        }
        if let Some(last) = writing {
            finish_write(last).await?;
        }
        Ok(())
    }
}

/// Whether a sync asks the store for the migration's figures: the first
/// time, then once `every` has passed since the last ask (answered or
/// not), and once when the migration has ended (`asked_at_end`: already
/// asked since it last ended).
fn figures_wanted(
    since_last: Option<std::time::Duration>,
    every: std::time::Duration,
    done: bool,
    asked_at_end: bool,
) -> bool {
    since_last.is_none_or(|d| d >= every) || (done && !asked_at_end)
}

#[cfg(test)]
mod figures_pace {
    use super::figures_wanted;
    use std::time::Duration;

    #[test]
    fn figures_are_read_at_the_stores_pace_and_once_at_the_end() {
        let every = Duration::from_secs(900);
        let after = |s: u64| Some(Duration::from_secs(s));
        assert!(figures_wanted(None, every, false, false), "the first sync");
        assert!(!figures_wanted(after(60), every, false, false), "too soon");
        assert!(figures_wanted(after(900), every, false, false), "its turn");
        assert!(figures_wanted(after(60), every, true, false), "the end");
        assert!(!figures_wanted(after(60), every, true, true), "not again");
        // A store that keeps the sum: every sync.
        assert!(figures_wanted(after(0), Duration::ZERO, false, false));
    }
}
